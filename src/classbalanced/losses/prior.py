"""Classifier-bias prior for sigmoid-based losses (Cui et al., 2019, section 4.3)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._validation import check_positive_int

__all__ = ["prior_bias", "init_prior_bias_"]


def prior_bias(num_classes: int, prior=None) -> Tensor:
    """Bias ``b = -log((1 - pi) / pi)`` so the initial ``sigmoid(b) = pi``.

    Args:
        num_classes: ``C >= 1``.
        prior: ``pi`` in ``(0, 1)``: a number, or ``(C,)`` per-class priors;
            default ``1 / C``, i.e. ``b = -log(C - 1)`` (``C = 1`` needs an explicit prior).

    Returns:
        ``(C,)`` float32 tensor.

    >>> prior_bias(10)
    tensor([-2.1972, -2.1972, -2.1972, -2.1972, -2.1972, -2.1972, -2.1972, -2.1972, -2.1972,
            -2.1972])
    """
    num_classes = check_positive_int("num_classes", num_classes)
    if prior is None:
        if num_classes == 1:
            raise ValueError(
                "prior_bias with num_classes=1 needs an explicit prior in (0, 1), got None"
            )
        pi = torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float64)
    else:
        pi = torch.as_tensor(prior, dtype=torch.float64).detach().cpu()
        if pi.dim() == 0:
            pi = pi.expand(num_classes)
        if pi.shape != (num_classes,):
            raise ValueError(
                f"prior must be a number or have shape ({num_classes},), got shape {tuple(pi.shape)}"
            )
        if not bool(((pi > 0) & (pi < 1)).all()):
            raise ValueError(
                f"prior must lie strictly between 0 and 1, got values in [{pi.min().item()}, {pi.max().item()}]"
            )
    return (torch.log(pi) - torch.log1p(-pi)).to(torch.float32)


def init_prior_bias_(linear: nn.Module, prior=None) -> nn.Linear:
    """Set ``linear.bias`` in place to :func:`prior_bias` (``pi = 1/C`` by default).

    >>> layer = init_prior_bias_(nn.Linear(4, 3))
    >>> torch.sigmoid(layer.bias)
    tensor([0.3333, 0.3333, 0.3333], grad_fn=<SigmoidBackward0>)
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"init_prior_bias_ expects an nn.Linear, got {type(linear).__name__}")
    if linear.bias is None:
        raise ValueError("init_prior_bias_ expects a linear layer with a bias, got bias=None")
    with torch.no_grad():
        linear.bias.copy_(prior_bias(linear.out_features, prior))
    return linear
