"""CifarResNet: structure, parameter counts, shapes, init, memory format, training signal."""

from __future__ import annotations

import contextlib
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from classbalanced.models import VERSIONS, CifarResNet, blocks_per_stage


@contextlib.contextmanager
def seeded(seed: int):
    """Deterministic module initialisation without leaking global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def count_modules(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- closed-form parameter counts, written from the architecture description ---------------


def conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k  # no conv bias anywhere


def bn(c: int) -> int:
    return 2 * c  # weight + bias


def expected_params_basic_v1(n: int, classes: int, cin: int = 3, w: int = 16) -> int:
    total = conv(cin, w, 3) + bn(w)  # stem
    prev = w
    for stage in range(3):
        c = w * 2**stage
        for i in range(n):
            cin_block = prev if i == 0 else c
            total += conv(cin_block, c, 3) + bn(c) + conv(c, c, 3) + bn(c)
            if cin_block != c:  # projection shortcut: 1x1 conv (stride 2) + BN
                total += conv(cin_block, c, 1) + bn(c)
        prev = c
    return total + prev * classes + classes  # fc weight + bias


def expected_params_basic_v2(n: int, classes: int, cin: int = 3, w: int = 16) -> int:
    total = conv(cin, w, 3)  # bare stem conv
    prev = w
    for stage in range(3):
        c = w * 2**stage
        for i in range(n):
            cin_block = prev if i == 0 else c
            total += bn(cin_block) + conv(cin_block, c, 3) + bn(c) + conv(c, c, 3)
            if cin_block != c:  # projection: bare 1x1 conv
                total += conv(cin_block, c, 1)
        prev = c
    return total + bn(prev) + prev * classes + classes  # final BN, fc


def expected_params_bottleneck(n: int, classes: int, cin: int = 3, w: int = 16) -> int:
    total = conv(cin, w, 3)
    prev = w
    for stage in range(3):
        p = w * 2**stage
        out = 4 * p
        for i in range(n):
            cin_block = prev if i == 0 else out
            total += bn(cin_block) + conv(cin_block, p, 1)
            total += bn(p) + conv(p, p, 3)
            total += bn(p) + conv(p, out, 1)
            if cin_block != out:
                total += conv(cin_block, out, 1)
        prev = out
    return total + bn(prev) + prev * classes + classes


def test_resnet32_v1_parameter_count_closed_form():
    expected = expected_params_basic_v1(n=5, classes=10)
    model = CifarResNet(32, 10)
    assert n_params(model) == expected
    assert 0.46e6 < expected < 0.47e6  # "ResNet-32 has ~0.46M parameters"


@pytest.mark.parametrize(
    ("depth", "version", "classes", "cin", "width", "formula"),
    [
        (8, "v1", 3, 1, 16, expected_params_basic_v1),
        (20, "v1", 100, 3, 8, expected_params_basic_v1),
        (14, "v2", 10, 1, 16, expected_params_basic_v2),
        (32, "v2", 10, 3, 16, expected_params_basic_v2),
        (11, "bottleneck", 10, 1, 16, expected_params_bottleneck),
        (20, "bottleneck", 7, 3, 16, expected_params_bottleneck),
    ],
)
def test_parameter_counts_closed_form(depth, version, classes, cin, width, formula):
    model = CifarResNet(depth, classes, version=version, in_channels=cin, width=width)
    n = (depth - 2) // (9 if version == "bottleneck" else 6)
    assert n_params(model) == formula(n, classes, cin, width)


@pytest.mark.parametrize(
    ("depth", "version"),
    [
        (8, "v1"),
        (20, "v1"),
        (56, "v1"),
        (14, "v2"),
        (32, "v2"),
        (11, "bottleneck"),
        (29, "bottleneck"),
    ],
)
def test_layer_counts_follow_depth(depth, version):
    model = CifarResNet(depth, 10, version=version)
    per_block = 3 if version == "bottleneck" else 2
    n = (depth - 2) // (3 * per_block)
    assert model.num_blocks == n == blocks_per_stage(depth, version)
    # Depth counts the stem conv, every conv of the main path and the fc layer.
    projections = 3 if version == "bottleneck" else 2  # stage entries that change shape
    assert count_modules(model, nn.Conv2d) == (depth - 2) + 1 + projections
    assert count_modules(model, nn.Linear) == 1
    main_path = 1 + 3 * n * per_block
    assert main_path + 1 == depth
    if version == "v1":
        expected_bn = 1 + 3 * n * 2 + projections  # stem, two per block, projection BNs
    else:
        expected_bn = 3 * n * per_block + 1  # one per conv-in-block, plus the final BN
    assert count_modules(model, nn.BatchNorm2d) == expected_bn
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3)] == [n, n, n]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("cin", "size"), [(1, 8), (3, 32)])
def test_output_shapes(version, cin, size):
    depth = 11 if version == "bottleneck" else 8
    model = CifarResNet(depth, 7, version=version, in_channels=cin)
    sizes = []
    hooks = [
        layer.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:])))
        for layer in (model.layer1, model.layer2, model.layer3)
    ]
    x = torch.randn(3, cin, size, size, generator=torch.Generator().manual_seed(0))
    out = model(x)
    for h in hooks:
        h.remove()
    assert out.shape == (3, 7)
    assert model.forward_features(x).shape == (3, model.fc.in_features)
    mult = 4 if version == "bottleneck" else 1
    half = (size + 1) // 2
    assert sizes == [
        (16 * mult, size, size),
        (32 * mult, half, half),
        (64 * mult, (half + 1) // 2, (half + 1) // 2),
    ]


def test_fc_is_linear_with_bias_and_width():
    for version, feat in (("v1", 64), ("v2", 64), ("bottleneck", 256)):
        model = CifarResNet(20, 5, version=version)
        assert isinstance(model.fc, nn.Linear)
        assert model.fc.bias is not None
        assert (model.fc.in_features, model.fc.out_features) == (feat, 5)
    assert CifarResNet(8, 5, width=4).fc.in_features == 16


def test_initialisation():
    with seeded(0):
        model = CifarResNet(20, 10, bn_momentum=0.01, bn_eps=1e-3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
            assert m.momentum == 0.01 and m.eps == 1e-3
    w = model.layer3[1].conv2.weight  # 64 -> 64, 3x3: fan_out = 64 * 9
    assert w.std().item() == pytest.approx(math.sqrt(2.0 / (64 * 9)), rel=0.05)
    assert w.mean().abs().item() < 0.01
    # fc keeps nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias
    bound = 1.0 / math.sqrt(64)
    assert model.fc.weight.abs().max().item() <= bound
    assert model.fc.bias.abs().max().item() <= bound
    assert CifarResNet(8).layer1[0].bn1.momentum == 0.1  # = TF decay 0.9


@pytest.mark.parametrize("version", VERSIONS)
def test_channels_last_matches_contiguous(version):
    depth = 11 if version == "bottleneck" else 8
    with seeded(1):
        model = CifarResNet(depth, 10, version=version)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    for train in (True, False):
        model.train(train)
        ref = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        out = model_cl(x.contiguous(memory_format=torch.channels_last))
        model.to(memory_format=torch.contiguous_format)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("version", VERSIONS)
def test_torchscript_scripts_every_version_to_the_same_logits(version):
    """``torch.jit.script`` compiles each version (class-level string annotations of the
    shared pre-activation block would stop it) and gives the eager logits."""
    depth = 11 if version == "bottleneck" else 8
    with seeded(3):
        model = CifarResNet(depth, 10, version=version).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script's deprecation
        scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("version", VERSIONS)
def test_sgd_step_reduces_loss(version):
    depth = 11 if version == "bottleneck" else 8
    with seeded(3):
        model = CifarResNet(depth, 4, version=version, in_channels=1)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(16, 1, 8, 8, generator=g)
    y = torch.randint(0, 4, (16,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    loss0 = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss0.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    opt.step()
    loss1 = F.cross_entropy(model(x), y)
    assert loss1.item() < loss0.item()


def test_training_fits_a_tiny_batch():
    with seeded(5):
        model = CifarResNet(8, 3, in_channels=1)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(12, 1, 8, 8, generator=g)
    y = torch.arange(12) % 3
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("depth", [0, 2, 7, 9, 33, 100])
def test_bad_depth_v1(depth):
    msg = f"resnet depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110, ...), got {depth}"
    with pytest.raises(ValueError) as err:
        CifarResNet(depth)
    assert str(err.value) == msg


@pytest.mark.parametrize("depth", [8, 12, 32])
def test_bad_depth_bottleneck(depth):
    with pytest.raises(ValueError, match=r"9n\+2 \(11, 20, 29, .*got " + str(depth)):
        CifarResNet(depth, version="bottleneck")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"depth": 32.0}, TypeError),
        ({"depth": True}, TypeError),
        ({"version": "v3"}, ValueError),
        ({"num_classes": 0}, ValueError),
        ({"num_classes": "10"}, TypeError),
        ({"in_channels": 0}, ValueError),
        ({"width": 0}, ValueError),
        ({"bn_momentum": 1.5}, ValueError),
        ({"bn_momentum": None}, TypeError),
        ({"bn_eps": 0.0}, ValueError),
    ],
)
def test_invalid_arguments(kwargs, error):
    (name,) = kwargs
    with pytest.raises(error, match=rf"\b{name}\b"):  # the message names the argument
        CifarResNet(**kwargs)
