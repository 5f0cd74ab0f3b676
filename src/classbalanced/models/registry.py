"""Model names -> constructors.

Built-in names (case-insensitive):

- ``resnet{D}`` with D = 6n+2 (resnet8, resnet20, resnet32, resnet56, resnet110, ...):
  :class:`~classbalanced.models.cifar_resnet.CifarResNet` ``version="v1"``
  (post-activation, the reference recipe's ResNet-32).
- ``resnet{D}_v2`` with D = 6n+2: pre-activation basic blocks (``version="v2"``).
- ``resnet{D}_bottleneck`` with D = 9n+2 (resnet20_bottleneck, resnet164_bottleneck, ...):
  pre-activation bottlenecks (``version="bottleneck"``).
- **Exception:** plain ``resnet50``, ``resnet101`` and ``resnet152`` are torchvision's
  ImageNet ResNets (random initialisation, ``num_classes`` outputs, RGB input only),
  the models of the large-scale experiments (the paper's Sec. 5.3 and the authors' release). The CIFAR networks
  of those depths are reachable with the ``cifar_`` prefix, which every CIFAR name
  accepts: ``cifar_resnet50`` (v1, n = 8), ``cifar_resnet152`` (v1, n = 25),
  ``cifar_resnet32`` (same as ``resnet32``). (101 is not 6n+2, so there is no
  ``cifar_resnet101`` v1, but ``resnet101_bottleneck`` is 9n+2 with n = 11.)
- ``resnext50``: torchvision's ``resnext50_32x4d`` (random initialisation), the network of
  the decoupling paper's ImageNet-LT results (Kang et al., ICLR 2020).
- ``resnet10``: the decoupling release's other ImageNet-LT network, a torchvision-style
  ImageNet ResNet of basic blocks, one per stage (``[1, 1, 1, 1]``, widths 64-512, a
  512-wide feature); torchvision has no weights for it (no ``--pretrained``).

- ``simple_cnn``: a small convolutional net without batch norm (quick experiments, and
  exact equivalence between one process and several under DDP).

Depths are parsed, not enumerated. Every model returned exposes its classifier as
``model.fc`` (an ``nn.Linear`` with bias), torchvision's included.

Further constructors can be added with :func:`register_model`; a constructor is
called as ``factory(num_classes, in_channels=in_channels)`` and returns an
``nn.Module``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from .._validation import check_positive_int
from ..registry import Registry
from .cifar_resnet import CifarResNet, Version, blocks_per_stage

__all__ = [
    "MODEL_REGISTRY",
    "ModelFactory",
    "NormedLinear",
    "available_models",
    "build_model",
    "check_model_name",
    "check_pretrained",
    "classifier",
    "load_pretrained_",
    "pretrained_weights_path",
    "register_model",
    "set_classifier_",
    "use_normed_classifier_",
]

#: ``factory(num_classes, *, in_channels) -> nn.Module``
ModelFactory = Callable[..., nn.Module]

#: Explicitly registered names (lower case) -> constructors (a
#: :class:`classbalanced.registry.Registry`, a dict). The parsed CIFAR names
#: (``[cifar_]resnet{D}[_v2|_bottleneck]``) are resolved by :func:`build_model`
#: and are not stored here.
MODEL_REGISTRY: Registry[ModelFactory] = Registry("model", case_insensitive=True)

_CIFAR_NAME = re.compile(r"(?P<prefix>cifar_)?resnet(?P<depth>[0-9]+)(?P<suffix>_v2|_bottleneck)?")
_SUFFIX_TO_VERSION: dict[str | None, Version] = {
    None: "v1",
    "_v2": "v2",
    "_bottleneck": "bottleneck",
}
_CIFAR_PATTERNS = (
    "resnet{6n+2}",
    "resnet{6n+2}_v2",
    "resnet{9n+2}_bottleneck",
    "cifar_resnet{6n+2}",
    "cifar_resnet{6n+2}_v2",
    "cifar_resnet{9n+2}_bottleneck",
)


def register_model(
    name: str, factory: ModelFactory | None = None, *, description: str = ""
) -> ModelFactory | Callable[[ModelFactory], ModelFactory]:
    """Register ``factory`` under ``name``; without ``factory``, return a decorator.

    The factory is called as ``factory(num_classes, in_channels=in_channels)``.
    Names are case-insensitive; names already registered and names of the
    built-in CIFAR pattern ``[cifar_]resnet{D}[_v2|_bottleneck]`` are refused.
    A registered name is at once a valid ``--model`` / ``model`` config value.

    >>> from torch import nn
    >>> @register_model("tiny_mlp")
    ... def tiny_mlp(num_classes, *, in_channels=3):
    ...     return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))
    >>> "tiny_mlp" in available_models()
    True
    >>> _ = MODEL_REGISTRY.pop("tiny_mlp")  # keep the doctest side-effect free
    """
    key = MODEL_REGISTRY.key(name)
    if _CIFAR_NAME.fullmatch(key):
        raise ValueError(
            f"expected a name outside the built-in pattern [cifar_]resnet{{D}}[_v2|_bottleneck], got {name!r}"
        )
    return MODEL_REGISTRY.register(name, factory, description=description)


def available_models() -> list[str]:
    """Valid model names: the CIFAR patterns, then the registered names.

    ``{6n+2}`` stands for a depth 8, 14, 20, 32, 44, 56, 110, ...; ``{9n+2}`` for
    11, 20, 29, ..., 110, 164, .... Meant for ``--help`` and error messages.

    >>> available_models()[:3]
    ['resnet{6n+2}', 'resnet{6n+2}_v2', 'resnet{9n+2}_bottleneck']
    >>> available_models()[-4:]
    ['resnet101', 'resnet152', 'resnext50', 'simple_cnn']
    """
    return [*_CIFAR_PATTERNS, *MODEL_REGISTRY]


def build_model(name: str, num_classes: int, *, in_channels: int = 3) -> nn.Module:
    """Build the model called ``name`` (see the module docstring for the names).

    Returns a freshly initialised ``nn.Module`` mapping ``(B, in_channels, H, W)``
    to logits ``(B, num_classes)``, with its classifier at ``model.fc``.

    >>> build_model("resnet20", 10).fc.out_features
    10
    >>> m = build_model("cifar_resnet50_v2", 7, in_channels=1)
    >>> (m.depth, m.version, m.num_blocks)
    (50, 'v2', 8)
    >>> build_model("resnet21", 10)
    Traceback (most recent call last):
    ...
    ValueError: invalid model name 'resnet21': resnet depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110, ...), got 21
    """
    if not isinstance(name, str):
        raise TypeError(f"expected model name to be a str, got {type(name).__name__}")
    num_classes = check_positive_int("num_classes", num_classes)
    in_channels = check_positive_int("in_channels", in_channels)
    key = name.lower()

    factory = MODEL_REGISTRY.get(key)
    if factory is not None:
        model = factory(num_classes, in_channels=in_channels)
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"expected model factory {name!r} to return an nn.Module, got {type(model).__name__}"
            )
        return model
    depth, version = _parse_cifar_name(name)
    return CifarResNet(depth, num_classes, version=version, in_channels=in_channels)


def check_model_name(name: object) -> str:
    """Check that :func:`build_model` knows ``name`` (without building it); return it.

    >>> check_model_name("resnet110"), check_model_name("simple_cnn")
    ('resnet110', 'simple_cnn')
    >>> check_model_name("nonsense")
    Traceback (most recent call last):
    ...
    ValueError: expected a model name matching one of resnet{6n+2}, resnet{6n+2}_v2, resnet{9n+2}_bottleneck, cifar_resnet{6n+2}, cifar_resnet{6n+2}_v2, cifar_resnet{9n+2}_bottleneck, resnet10, resnet50, resnet101, resnet152, resnext50, simple_cnn, got 'nonsense'
    """
    if not isinstance(name, str):
        raise TypeError(f"expected model name to be a str, got {type(name).__name__}")
    if name.lower() not in MODEL_REGISTRY:
        _parse_cifar_name(name)
    return name


def _parse_cifar_name(name: str) -> tuple[int, Version]:
    """``(depth, version)`` of a CIFAR ResNet name; ValueError for anything else."""
    match = _CIFAR_NAME.fullmatch(name.lower())
    if match is None:
        raise ValueError(
            f"expected a model name matching one of {', '.join(available_models())}, got {name!r}"
        )
    version = _SUFFIX_TO_VERSION[match["suffix"]]
    depth = int(match["depth"])
    try:
        blocks_per_stage(depth, version)
    except ValueError as err:
        raise ValueError(f"invalid model name {name!r}: {err}") from None
    return depth, version


#: our name -> torchvision's constructor name
_TORCHVISION = {
    "resnet50": "resnet50",
    "resnet101": "resnet101",
    "resnet152": "resnet152",
    "resnext50": "resnext50_32x4d",
}


def _torchvision_model(name: str) -> ModelFactory:
    tv_name = _TORCHVISION[name]

    def factory(num_classes: int, *, in_channels: int = 3) -> nn.Module:
        if in_channels != 3:
            raise ValueError(
                f"expected in_channels=3 for torchvision's ImageNet {name}, got {in_channels}"
            )
        import torchvision.models  # deferred: importing torchvision is slow

        return getattr(torchvision.models, tv_name)(weights=None, num_classes=num_classes)

    factory.__name__ = factory.__qualname__ = f"torchvision_{name}"
    factory.__doc__ = f"torchvision's ImageNet {tv_name}, random initialisation."
    return factory


def resnet10(num_classes: int, *, in_channels: int = 3) -> nn.Module:
    """The decoupling release's ResNet-10: torchvision's ``ResNet(BasicBlock, [1, 1, 1, 1])``.

    >>> import torch
    >>> resnet10(5)(torch.zeros(2, 3, 64, 64)).shape, resnet10(5).fc.in_features
    (torch.Size([2, 5]), 512)
    """
    if in_channels != 3:
        raise ValueError(f"expected in_channels=3 for the ImageNet resnet10, got {in_channels}")
    from torchvision.models.resnet import BasicBlock, ResNet  # deferred: torchvision is slow

    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes)


# Registered directly: the resnet names deliberately shadow the CIFAR pattern (10 is not
# 6n+2, so resnet10 shadows nothing).
MODEL_REGISTRY["resnet10"] = resnet10
for _name in _TORCHVISION:
    MODEL_REGISTRY[_name] = _torchvision_model(_name)
del _name


class SimpleConvNet(nn.Module):
    """A small convolutional net without normalisation layers (fast; exact under DDP).

    conv3x3(width) - ReLU - conv3x3(2 width, stride 2) - ReLU - global average pool - ``fc``.

    >>> import torch
    >>> SimpleConvNet(10, in_channels=1)(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    def __init__(self, num_classes: int, *, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.fc(self.features(x))


MODEL_REGISTRY["simple_cnn"] = SimpleConvNet


class NormedLinear(nn.Module):
    """Cosine classifier: ``logits = normalize(x) @ normalize(W).T`` (values in ``[-1, 1]``).

    The classifier LDAM is defined with (its scale ``s`` multiplies these logits).
    ``bias`` is ``None``: there is no bias to initialise or exclude from weight decay.

    >>> import torch
    >>> head = NormedLinear(4, 3)
    >>> bool(head(torch.randn(5, 4)).abs().max() <= 1.0)
    True
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-1, 1))
        self.bias = None

    def forward(self, x):
        return nn.functional.normalize(x, dim=1) @ nn.functional.normalize(self.weight, dim=1).t()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


#: where every model keeps its classifier: ``model.fc`` (written once, read through
#: :func:`classifier` / :func:`set_classifier_` by the trainer and the decoupling stage)
CLASSIFIER = "fc"


def classifier(model: nn.Module) -> nn.Module:
    """The model's classifier, ``model.fc`` (ValueError for a model without one).

    >>> classifier(build_model("resnet8", 3))
    Linear(in_features=64, out_features=3, bias=True)
    >>> classifier(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    Traceback (most recent call last):
    ...
    ValueError: expected the model's classifier at model.fc (an nn.Linear), got a Sequential without one
    """
    head = getattr(model, CLASSIFIER, None)
    if not isinstance(head, nn.Module):
        raise ValueError(
            f"expected the model's classifier at model.{CLASSIFIER} (an nn.Linear), "
            f"got a {type(model).__name__} without one"
        )
    return head


def set_classifier_(model: nn.Module, head: nn.Module) -> nn.Module:
    """Replace the model's classifier (``model.fc``) by ``head``, in place; returns ``model``."""
    classifier(model)
    setattr(model, CLASSIFIER, head)
    return model


def use_normed_classifier_(model: nn.Module) -> nn.Module:
    """Replace ``model.fc`` (a linear layer) by a :class:`NormedLinear` of the same shape."""
    fc = classifier(model)
    if not isinstance(fc, nn.Linear | NormedLinear):
        raise ValueError(f"expected a linear layer at model.{CLASSIFIER}, got {type(fc).__name__}")
    return set_classifier_(model, NormedLinear(fc.in_features, fc.out_features))


_PRETRAINED = tuple(_TORCHVISION)


def check_pretrained(name: str) -> str:
    """Check that torchvision has ImageNet weights for model ``name``; return it.

    >>> check_pretrained("resnet50")
    'resnet50'
    >>> check_pretrained("resnet32")
    Traceback (most recent call last):
    ...
    ValueError: pretrained weights are available for resnet50, resnet101, resnet152, resnext50 (torchvision), got 'resnet32'
    """
    if name.lower() not in _PRETRAINED:
        raise ValueError(
            f"pretrained weights are available for {', '.join(_PRETRAINED)} (torchvision), got {name!r}"
        )
    return name


def pretrained_weights_path(name: str):
    """Where torchvision keeps its ImageNet weights for ``name`` (its hub cache; nothing is downloaded)."""
    import torchvision.models  # deferred: importing torchvision.models takes seconds

    key = check_pretrained(name).lower()
    weights = torchvision.models.get_model_weights(_TORCHVISION[key]).DEFAULT
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def load_pretrained_(model: nn.Module, name: str) -> nn.Module:
    """Load torchvision's ImageNet weights for ``name`` into ``model``, all but the classifier.

    The weights must already be in torchvision's local cache (``torch.hub.get_dir()``);
    nothing is downloaded. The file is read with ``weights_only=True``.
    """
    path = pretrained_weights_path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"torchvision's {name} weights are not in the local cache (expected {path}); fetch them once on a "
            f"machine with internet (torchvision.models.{_TORCHVISION[name.lower()]}(weights='DEFAULT')) "
            "or drop --pretrained"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickled code, a truncated or foreign file: refuse, never retry
        kind = type(exc).__name__
        raise ValueError(
            f"refusing {path}: it is not a plain file of tensors (torch.load with weights_only=True "
            f"failed: {kind}); delete it and fetch torchvision's {name} weights again"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not match {name}: expected a dict of tensors")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = model.state_dict()
    for key, value in state.items():  # checked first: load_state_dict copies what fits, then fails
        if key in own and getattr(value, "shape", None) != own[key].shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(
                f"{path} does not match {name}: expected {key} of shape {tuple(own[key].shape)}, got {got}"
            )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("fc.") for k in missing):
        raise ValueError(f"{path} does not match {name}: expected its parameters, got other keys")
    return model
