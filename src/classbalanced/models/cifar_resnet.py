"""ResNets for small images (CIFAR, digits): depth 6n+2 basic blocks or 9n+2 bottlenecks.

Three variants, as in the Class-Balanced Loss release (the paper's Sec. 5.2 and the authors' release):

``"v1"``
    Post-activation ResNet of He et al. (2016a) for CIFAR: a 3x3 stem conv
    (``width`` channels) + BN + ReLU, three stages of ``n`` basic blocks with
    widths ``width, 2*width, 4*width`` (16/32/64 by default) and strides
    1/2/2, global average pooling and a linear classifier. Depth = 6n + 2
    (ResNet-32 has n = 5).
``"v2"``
    Pre-activation basic blocks (BN-ReLU-conv, He et al. 2016b); the stem is a
    bare conv and a final BN + ReLU precedes the pooling. Depth = 6n + 2.
``"bottleneck"``
    Pre-activation bottleneck blocks (BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1,
    expansion 4): stage widths 16/32/64 give outputs 64/128/256. Depth = 9n + 2.

Shortcuts: identity when the shape is unchanged, otherwise a *projection*
(1x1 conv with the block's stride; followed by BN in v1, bare in the
pre-activation variants, where it is applied to the block's pre-activated
input). This is option (B) of He et al.; the paper's CIFAR ResNets used
zero-padding shortcuts (option A), which have no parameters. The projection
adds 2 (v1/v2) or 3 (bottleneck) 1x1 convs, e.g. ResNet-32 v1 has 466,906
parameters for 10 classes (464,154 with option A).

Initialisation: Kaiming-normal convs (``fan_out``, ReLU gain), BN weight 1 and
bias 0, ``fc`` keeps PyTorch's default ``nn.Linear`` initialisation. The
classifier is always ``model.fc`` (``nn.Linear`` with bias), so a trainer can
set its bias to a prior and exclude it from weight decay (the paper's Sec. 4 and the authors' release).

Global average pooling makes the network input-size agnostic: 8x8 single-channel
digits and 32x32 RGB images both work. ``channels_last`` works as with any
standard convolutional network (``model.to(memory_format=torch.channels_last)``).
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Literal, TypedDict, get_args

import torch
from torch import Tensor, nn

from .._validation import check_int

__all__ = ["VERSIONS", "Version", "CifarResNet", "blocks_per_stage"]

#: Valid values of ``CifarResNet(version=...)``.
Version = Literal["v1", "v2", "bottleneck"]
VERSIONS: tuple[str, ...] = get_args(Version)

_EXPANSION = 4  # bottleneck output channels / inner channels


class _BatchNormOptions(TypedDict):
    momentum: float
    eps: float


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


class _BasicBlockV1(nn.Module):
    """Post-activation basic block: conv-BN-ReLU-conv-BN, + shortcut, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, bn_kw: _BatchNormOptions) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch, **bn_kw)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch, **bn_kw)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                _conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch, **bn_kw)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class _PreActivationBlock(nn.Module):
    """Pre-activation residual block: BN-ReLU of the input feeds both the residual branch
    (:meth:`residual`, the subclass's convs) and the shortcut, a bare 1x1 projection where
    the shape changes. Subclasses register ``bn1``, their convs, then call
    :meth:`_add_shortcut` (the modules' order fixes the parameters' order)."""

    if TYPE_CHECKING:  # for mypy only: TorchScript cannot read these (string) annotations
        bn1: nn.BatchNorm2d
        relu: nn.ReLU
        shortcut: nn.Module | None

    def _add_shortcut(self, in_ch: int, out_ch: int, stride: int) -> None:
        self.relu = nn.ReLU(inplace=False)
        self.shortcut = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = _conv1x1(in_ch, out_ch, stride)

    def residual(self, pre: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(pre)
        return self.residual(pre) + identity


class _BasicBlockV2(_PreActivationBlock):
    """Pre-activation basic block: BN-ReLU-conv-BN-ReLU-conv, + shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, bn_kw: _BatchNormOptions) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch, **bn_kw)
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn2 = nn.BatchNorm2d(out_ch, **bn_kw)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self._add_shortcut(in_ch, out_ch, stride)

    def residual(self, pre: Tensor) -> Tensor:
        return self.conv2(self.relu(self.bn2(self.conv1(pre))))


class _BottleneckV2(_PreActivationBlock):
    """Pre-activation bottleneck: BN-ReLU-1x1, BN-ReLU-3x3 (stride), BN-ReLU-1x1 (x4)."""

    def __init__(self, in_ch: int, planes: int, stride: int, bn_kw: _BatchNormOptions) -> None:
        super().__init__()
        out_ch = planes * _EXPANSION
        self.bn1 = nn.BatchNorm2d(in_ch, **bn_kw)
        self.conv1 = _conv1x1(in_ch, planes)
        self.bn2 = nn.BatchNorm2d(planes, **bn_kw)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, **bn_kw)
        self.conv3 = _conv1x1(planes, out_ch)
        self._add_shortcut(in_ch, out_ch, stride)

    def residual(self, pre: Tensor) -> Tensor:
        out = self.conv2(self.relu(self.bn2(self.conv1(pre))))
        return self.conv3(self.relu(self.bn3(out)))


def _check_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"expected {name} to be a float, got {type(value).__name__}")
    return float(value)


#: The deepest network :func:`blocks_per_stage` accepts.
MAX_DEPTH = 2000


def blocks_per_stage(depth: int, version: Version = "v1") -> int:
    """Number ``n`` of blocks per stage for a given depth (6n+2, or 9n+2 for bottleneck).

    >>> blocks_per_stage(32), blocks_per_stage(110, "v2"), blocks_per_stage(164, "bottleneck")
    (5, 18, 18)
    """
    depth = check_int("depth", depth, 0)
    if (
        depth > MAX_DEPTH
    ):  # else a typo like resnet600002 builds for minutes, then runs out of memory
        raise ValueError(
            f"resnet depth must be at most {MAX_DEPTH} (the deepest CIFAR ResNets of He et al. "
            f"have 1202 and 1001 layers), got {depth}"
        )
    if version not in VERSIONS:
        raise ValueError(f"expected version in {list(VERSIONS)}, got {version!r}")
    if version == "bottleneck":
        if depth < 11 or (depth - 2) % 9:
            raise ValueError(
                f"bottleneck resnet depth must be 9n+2 (11, 20, 29, 38, 47, 56, 110, 164, ...), got {depth}"
            )
        return (depth - 2) // 9
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"resnet depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110, ...), got {depth}"
        )
    return (depth - 2) // 6


class CifarResNet(nn.Module):
    """ResNet for small images; see the module docstring for the three variants.

    Args:
        depth: 6n+2 for ``"v1"``/``"v2"`` (8, 14, 20, 32, 44, 56, 110, ...), 9n+2 for
            ``"bottleneck"`` (11, 20, 29, ..., 110, 164, ...).
        num_classes: size of the output, ``fc.out_features``.
        version: ``"v1"`` (post-activation), ``"v2"`` (pre-activation) or ``"bottleneck"``.
        in_channels: channels of the input images (3 for RGB, 1 for digits).
        width: channels of the first stage; stages have ``width * (1, 2, 4)``
            (times 4 for bottleneck outputs).
        bn_momentum: PyTorch BatchNorm momentum; 0.1 equals the TensorFlow decay 0.9
            of the reference recipe (``momentum = 1 - decay``).
        bn_eps: BatchNorm epsilon (1e-5 as in the reference recipe).

    Shapes: input ``(B, in_channels, H, W)`` with any H, W >= 1; output logits
    ``(B, num_classes)``. :meth:`forward_features` gives the pooled embedding
    ``(B, fc.in_features)``; ``fc.in_features`` is ``4 * width`` (``16 * width``
    for bottleneck).

    >>> import torch
    >>> model = CifarResNet(8, num_classes=5, in_channels=1)
    >>> model(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 5])
    >>> model.fc
    Linear(in_features=64, out_features=5, bias=True)
    >>> CifarResNet(20, 3, version="bottleneck").fc.in_features
    256
    """

    def __init__(
        self,
        depth: int = 32,
        num_classes: int = 10,
        *,
        version: Version = "v1",
        in_channels: int = 3,
        width: int = 16,
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if not isinstance(version, str) or version not in VERSIONS:
            raise ValueError(f"expected version in {list(VERSIONS)}, got {version!r}")
        n = blocks_per_stage(depth, version)
        num_classes = check_int("num_classes", num_classes, 1)
        in_channels = check_int("in_channels", in_channels, 1)
        width = check_int("width", width, 1)
        bn_momentum = _check_float("bn_momentum", bn_momentum)
        bn_eps = _check_float("bn_eps", bn_eps)
        if not 0.0 <= bn_momentum <= 1.0:
            raise ValueError(f"expected bn_momentum in [0, 1], got {bn_momentum}")
        if not bn_eps > 0.0:
            raise ValueError(f"expected bn_eps > 0, got {bn_eps}")

        self.depth = int(depth)
        self.version = version
        self.num_blocks = n
        bn_kw: _BatchNormOptions = {"momentum": bn_momentum, "eps": bn_eps}

        # Stem: v1 is conv-BN-ReLU; the pre-activation variants start with a bare conv.
        if version == "v1":
            self.stem = nn.Sequential(
                _conv3x3(in_channels, width),
                nn.BatchNorm2d(width, **bn_kw),
                nn.ReLU(inplace=True),
            )
        else:
            self.stem = nn.Sequential(_conv3x3(in_channels, width))

        in_ch = width
        stages = []
        for stage, stride in enumerate((1, 2, 2)):
            planes = width * 2**stage
            blocks: list[nn.Module] = []
            for i in range(n):
                s = stride if i == 0 else 1
                if version == "v1":
                    blocks.append(_BasicBlockV1(in_ch, planes, s, bn_kw))
                    in_ch = planes
                elif version == "v2":
                    blocks.append(_BasicBlockV2(in_ch, planes, s, bn_kw))
                    in_ch = planes
                else:
                    blocks.append(_BottleneckV2(in_ch, planes, s, bn_kw))
                    in_ch = planes * _EXPANSION
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages

        # Pre-activation networks end with BN + ReLU before pooling.
        if version == "v1":
            self.final: nn.Module = nn.Identity()
        else:
            self.final = nn.Sequential(nn.BatchNorm2d(in_ch, **bn_kw), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def extra_repr(self) -> str:
        return f"depth={self.depth}, version={self.version!r}, blocks_per_stage={self.num_blocks}"

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled embedding: ``(B, in_channels, H, W)`` -> ``(B, fc.in_features)``."""
        x = self.stem(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.final(x)
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits: ``(B, in_channels, H, W)`` -> ``(B, num_classes)``."""
        return self.fc(self.forward_features(x))
