"""Loss names -> builders, for the trainer, the CLI's ``--loss`` and the sweeps."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from .._validation import check_choice
from ..registry import Registry
from .criterion import Criterion, missing_members
from .functional import DEFAULT_GAMMA
from .modules import ClassBalancedLoss
from .types import Reduction

__all__ = ["loss_options", "loss_uses_gamma", "register_loss", "available_losses", "build_loss"]


#: Loss names -> ``build(samples_per_class, *, beta, gamma, reduction, **options)``, which
#: returns a :class:`~.criterion.Criterion`; a builder's further public keyword-only
#: parameters (with defaults) are the loss's own options, settable as ``loss_options`` in
#: a config (``--loss-option KEY=VALUE``).
LOSS_REGISTRY: Registry[Callable[..., nn.Module]] = Registry("loss")
_COMMON_ARGS = ("beta", "gamma", "reduction")
_USES_GAMMA: set[str] = set()


def register_loss(
    name: str, build: Callable[..., nn.Module], description: str = "", *, uses_gamma: bool = False
) -> None:
    """Register ``build(samples_per_class, *, beta, gamma, reduction, **options) -> nn.Module`` as
    ``name``; ``uses_gamma``: whether the loss reads ``gamma`` (else it is ignored)."""
    LOSS_REGISTRY.register(name, build, description=description)
    if uses_gamma:
        _USES_GAMMA.add(name)


def loss_uses_gamma(name: str) -> bool:
    """Whether loss ``name`` reads ``gamma`` (the focal family); the others ignore it.

    >>> loss_uses_gamma("focal"), loss_uses_gamma("softmax")
    (True, False)
    """
    check_choice("loss", name, available_losses())
    return name in _USES_GAMMA


def available_losses() -> list[str]:
    """Names accepted by :func:`build_loss` (and the CLI's ``--loss``)."""
    return sorted(LOSS_REGISTRY)


def loss_options(name: str) -> dict[str, Any]:
    """The options of loss ``name`` beyond beta / gamma / reduction, with their defaults.

    >>> loss_options("ldam"), loss_options("softmax")
    ({'max_m': 0.5, 's': 30.0}, {})
    """
    check_choice("loss", name, available_losses())
    build = LOSS_REGISTRY[name]
    return {
        p.name: p.default
        for p in inspect.signature(build).parameters.values()
        if p.kind is p.KEYWORD_ONLY
        and p.name not in _COMMON_ARGS
        and not p.name.startswith("_")
        and p.default is not inspect.Parameter.empty
    }


def build_loss(
    name: str,
    samples_per_class,
    *,
    beta: float = 0.0,
    gamma: float = DEFAULT_GAMMA,
    reduction: Reduction = "mean",
    **options: Any,
) -> Criterion:
    """Build the registered loss ``name`` for the given training counts.

    ``options`` are the loss's own settings (:func:`loss_options`), e.g. LDAM's ``max_m``.
    The result is a :class:`~.criterion.Criterion` (TypeError otherwise).

    >>> build_loss("focal", [50, 5], beta=0.9, gamma=2.0)
    ClassBalancedLoss(beta=0.9, loss_type='focal', gamma=2.0, reduction='mean')
    >>> build_loss("ldam", [50, 5], max_m=0.3)
    LDAMLoss(num_classes=2, max_m=0.3, s=30.0, reduction='mean', weighted=False)
    """
    check_choice("loss", name, available_losses())
    build = LOSS_REGISTRY[name]
    unknown = sorted(set(options) - set(loss_options(name)))
    if unknown:
        valid = ", ".join(loss_options(name)) or "none"
        raise ValueError(
            f"loss {name!r} has no option {', '.join(unknown)}: expected one of: {valid}"
        )
    loss = build(samples_per_class, beta=beta, gamma=gamma, reduction=reduction, **options)
    if not isinstance(loss, Criterion):
        raise TypeError(
            f"loss {name!r} built a {type(loss).__name__} without {', '.join(missing_members(loss))}: "
            "expected a Criterion (derive from classbalanced.losses.ClassWeightBuffers)"
        )
    return loss


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
        uses_gamma=_name == "focal",
    )
