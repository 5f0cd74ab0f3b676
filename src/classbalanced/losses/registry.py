"""Loss names -> builders, for the trainer, the CLI's ``--loss`` and the sweeps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .._validation import check_choice
from .functional import DEFAULT_GAMMA
from .modules import ClassBalancedLoss

__all__ = ["LossSpec", "register_loss", "available_losses", "build_loss"]


@dataclass(frozen=True)
class LossSpec:
    """How to build a named loss from the training counts and hyper-parameters."""

    build: Callable[..., nn.Module]
    description: str


_REGISTRY: dict[str, LossSpec] = {}


def register_loss(name: str, build: Callable[..., nn.Module], description: str = "") -> None:
    """Register ``build(samples_per_class, *, beta, gamma, reduction) -> nn.Module`` as ``name``."""
    if name in _REGISTRY:
        raise ValueError(f"loss {name!r} is already registered")
    _REGISTRY[name] = LossSpec(build, description)


def available_losses() -> list[str]:
    """Names accepted by :func:`build_loss` (and the CLI's ``--loss``)."""
    return sorted(_REGISTRY)


def build_loss(
    name: str,
    samples_per_class,
    *,
    beta: float = 0.0,
    gamma: float = DEFAULT_GAMMA,
    reduction: str = "mean",
) -> nn.Module:
    """Build the registered loss ``name`` for the given training counts.

    >>> build_loss("focal", [50, 5], beta=0.9, gamma=2.0)
    ClassBalancedLoss(beta=0.9, loss_type='focal', gamma=2.0, reduction='mean')
    """
    check_choice("loss", name, available_losses())
    return _REGISTRY[name].build(samples_per_class, beta=beta, gamma=gamma, reduction=reduction)


for _name, _text in (
    ("softmax", "softmax cross-entropy"),
    ("sigmoid", "one-vs-all sigmoid cross-entropy"),
    ("focal", "sigmoid focal loss"),
):
    register_loss(
        _name,
        lambda samples_per_class, *, beta, gamma, reduction, _t=_name: ClassBalancedLoss(
            samples_per_class, beta=beta, loss_type=_t, gamma=gamma, reduction=reduction
        ),
        f"class-balanced {_text} (beta = 0: unweighted)",
    )
