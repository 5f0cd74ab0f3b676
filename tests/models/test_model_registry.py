"""Model registry: name parsing, torchvision ResNets, custom registration, errors."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from classbalanced.models import (
    MODEL_REGISTRY,
    CifarResNet,
    available_models,
    build_model,
    register_model,
)


@pytest.mark.parametrize(
    ("name", "depth", "version", "n"),
    [
        ("resnet8", 8, "v1", 1),
        ("resnet20", 20, "v1", 3),
        ("resnet32", 32, "v1", 5),
        ("resnet110", 110, "v1", 18),
        ("ResNet32", 32, "v1", 5),
        ("resnet32_v2", 32, "v2", 5),
        ("resnet20_bottleneck", 20, "bottleneck", 2),
        ("resnet101_bottleneck", 101, "bottleneck", 11),
        ("cifar_resnet32", 32, "v1", 5),
        ("cifar_resnet50", 50, "v1", 8),
        ("cifar_resnet152", 152, "v1", 25),
        ("cifar_resnet14_v2", 14, "v2", 2),
        ("cifar_resnet11_bottleneck", 11, "bottleneck", 1),
        ("resnet50_v2", 50, "v2", 8),
    ],
)
def test_cifar_names_resolve(name, depth, version, n):
    model = build_model(name, 10, in_channels=1)
    assert type(model) is CifarResNet
    assert (model.depth, model.version, model.num_blocks) == (depth, version, n)
    assert model.stem[0].in_channels == 1
    assert model.fc.out_features == 10


def test_resnet50_is_torchvision_imagenet_resnet():
    model = build_model("resnet50", 13)
    assert isinstance(model, torchvision.models.ResNet)
    assert isinstance(model.fc, nn.Linear) and model.fc.bias is not None
    assert (model.fc.in_features, model.fc.out_features) == (2048, 13)
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 13)


@pytest.mark.parametrize(
    ("name", "blocks"), [("resnet101", [3, 4, 23, 3]), ("RESNET152", [3, 8, 36, 3])]
)
def test_resnet101_152_are_torchvision(name, blocks):
    with torch.device("meta"):  # structure only: no memory, no initialisation cost
        model = build_model(name, 5)
    assert isinstance(model, torchvision.models.ResNet)
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3, model.layer4)] == blocks
    assert model.fc.out_features == 5


def test_resnext50_is_torchvision_resnext50_32x4d():
    """The decoupling paper's ImageNet-LT network: 32 groups of width 4 in the first stage."""
    with torch.device("meta"):
        model = build_model("ResNeXt50", 7)
    assert isinstance(model, torchvision.models.ResNet)
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3, model.layer4)] == [
        3,
        4,
        6,
        3,
    ]
    conv = model.layer1[0].conv2
    assert (conv.groups, conv.in_channels) == (32, 128)  # 32 x 4d
    assert model.fc.out_features == 7


@pytest.mark.parametrize("name", ["resnet50", "resnet101", "resnet152", "resnext50"])
def test_torchvision_resnets_require_rgb(name):
    with pytest.raises(
        ValueError, match=f"expected in_channels=3 for torchvision's ImageNet {name}, got 1"
    ):
        build_model(name, 10, in_channels=1)


@pytest.mark.parametrize(
    "name", ["vgg16", "resnet", "resnet32_v3", "cifar_resnet", "resnet-32", " resnet32", ""]
)
def test_unknown_names_list_valid_patterns(name):
    with pytest.raises(ValueError) as err:
        build_model(name, 10)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("expected a model name matching")
    for pattern in available_models():
        assert pattern in msg
    assert "resnet{6n+2}" in msg and "resnet{9n+2}_bottleneck" in msg and "resnet50" in msg


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("resnet33", "6n+2 (8, 14, 20, 32, 44, 56, 110, ...), got 33"),
        ("resnet18", "6n+2 (8, 14, 20, 32, 44, 56, 110, ...), got 18"),
        ("cifar_resnet101", "6n+2 (8, 14, 20, 32, 44, 56, 110, ...), got 101"),
        ("resnet33_v2", "6n+2 (8, 14, 20, 32, 44, 56, 110, ...), got 33"),
        ("resnet32_bottleneck", "9n+2 (11, 20, 29, 38, 47, 56, 110, 164, ...), got 32"),
        ("resnet2", "6n+2 (8, 14, 20, 32, 44, 56, 110, ...), got 2"),
        # a depth of 6n+2 / 9n+2 beyond any published one: refused at once (it built for minutes)
        (
            "resnet2006",
            "at most 2000 (the deepest CIFAR ResNets of He et al. have 1202 and 1001 layers), got 2006",
        ),
        (
            "resnet600000002_bottleneck",
            "at most 2000 (the deepest CIFAR ResNets of He et al. have 1202 and 1001 layers), got 600000002",
        ),
    ],
)
def test_bad_depths_list_valid_depths(name, fragment):
    with pytest.raises(ValueError) as err:
        build_model(name, 10)
    assert str(err.value).startswith(f"invalid model name {name!r}: ")
    assert str(err.value).endswith(fragment)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"num_classes": 0}, ValueError),
        ({"num_classes": 2.0}, TypeError),
        ({"num_classes": 10, "in_channels": 0}, ValueError),
        ({"num_classes": 10, "in_channels": True}, TypeError),
    ],
)
def test_bad_sizes(kwargs, error):
    name = list(kwargs)[-1]  # the argument that is wrong
    with pytest.raises(error, match=rf"^{name} must be an integer >= 1, got "):
        build_model("resnet8", **kwargs)


def test_non_string_name():
    with pytest.raises(TypeError, match="expected model name to be a str, got int"):
        build_model(32, 10)


def test_available_models():
    names = available_models()
    assert names[:6] == [
        "resnet{6n+2}",
        "resnet{6n+2}_v2",
        "resnet{9n+2}_bottleneck",
        "cifar_resnet{6n+2}",
        "cifar_resnet{6n+2}_v2",
        "cifar_resnet{9n+2}_bottleneck",
    ]
    assert {"resnet50", "resnet101", "resnet152"} <= set(names)
    assert names is not available_models()  # a fresh list each call


def test_register_model_function_and_decorator():
    calls = []

    def linear(num_classes, *, in_channels=3):
        calls.append((num_classes, in_channels))
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 4, num_classes))

    try:
        assert register_model("Linear_Probe", linear) is linear
        assert "linear_probe" in available_models()

        @register_model("other")
        def other(num_classes, *, in_channels=3):
            return nn.Linear(in_channels, num_classes)

        assert callable(other) and MODEL_REGISTRY["other"] is other
        model = build_model("LINEAR_PROBE", 5, in_channels=1)
        assert calls == [(5, 1)]
        assert model(torch.zeros(2, 1, 2, 2)).shape == (2, 5)
        with pytest.raises(ValueError, match="already registered"):
            register_model("linear_probe", linear)
    finally:
        MODEL_REGISTRY.pop("linear_probe", None)
        MODEL_REGISTRY.pop("other", None)
    assert "linear_probe" not in available_models()


@pytest.mark.parametrize(
    "name", ["resnet32", "cifar_resnet20_v2", "resnet50", "resnet11_bottleneck"]
)
def test_register_refuses_builtin_names(name):
    with pytest.raises(ValueError, match="^expected "):
        register_model(name, lambda num_classes, *, in_channels=3: nn.Identity())


def test_register_validation():
    with pytest.raises(TypeError, match="expected model name to be a str"):
        register_model(3)
    with pytest.raises(ValueError, match="non-empty"):
        register_model("")
    with pytest.raises(TypeError, match="expected a callable"):
        register_model("not_callable", 42)
    assert "not_callable" not in MODEL_REGISTRY


def test_factory_must_return_module():
    try:
        register_model("broken", lambda num_classes, *, in_channels=3: "nope")
        with pytest.raises(
            TypeError, match="expected model factory 'broken' to return an nn.Module, got str"
        ):
            build_model("broken", 3)
    finally:
        MODEL_REGISTRY.pop("broken", None)


def test_resnet10_is_the_release_basic_block_1111_network():
    """The decoupling release's ResNet-10: ImageNet stem, one basic block per stage."""
    model = build_model("ResNet10", 9)
    assert isinstance(model, torchvision.models.ResNet)
    stages = (model.layer1, model.layer2, model.layer3, model.layer4)
    assert [len(s) for s in stages] == [1, 1, 1, 1]
    assert all(isinstance(s[0], torchvision.models.resnet.BasicBlock) for s in stages)
    assert [s[0].conv2.out_channels for s in stages] == [64, 128, 256, 512]
    assert (model.conv1.kernel_size, model.fc.in_features, model.fc.out_features) == (
        (7, 7),
        512,
        9,
    )
    # 10 weighted layers: the stem, 2 convolutions in each of 4 blocks, the classifier
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert len(convs) + 1 == 10
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 9)
    assert "resnet10" in available_models()
    with pytest.raises(ValueError, match="pretrained weights are available for"):
        from classbalanced.models.registry import check_pretrained

        check_pretrained("resnet10")
    with pytest.raises(ValueError, match="in_channels=3"):
        build_model("resnet10", 9, in_channels=1)
