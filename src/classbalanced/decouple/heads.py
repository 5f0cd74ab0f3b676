"""The stage-two classifiers: tau-normalised weights and learnable weight scaling (LWS).

``tau_normalize``: ``w_i <- w_i / ||w_i||^tau`` on every class row ``i`` of ``W`` ``(C, D)``;
:class:`LWSHead`: ``z_i = s_i (w_i . f + b_i)`` with ``s`` ``(C,)`` the only trained
parameters, folded back into a plain ``nn.Linear`` when done.

>>> w = torch.tensor([[3.0, 4.0], [0.6, 0.8]])
>>> tau_normalize(w, 1.0)
tensor([[0.6000, 0.8000],
        [0.6000, 0.8000]])
>>> torch.equal(tau_normalize(w, 0.0), w)
True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["tau_normalize", "check_tau", "LWSHead"]


def tau_normalize(weight: Tensor, tau: float) -> Tensor:
    """``w_i / ||w_i||_2 ** tau`` for every row ``i`` of ``weight`` ``(C, D)``; ``tau >= 0``.

    ``tau = 0`` returns the weights unchanged (bit for bit); ``tau = 1`` gives unit rows.
    A zero row stays zero.
    """
    if tau < 0 or not math.isfinite(tau):
        raise ValueError(f"tau must be finite and >= 0, got {tau}")
    if tau == 0:
        return weight.clone()
    norms = weight.norm(dim=1, keepdim=True)
    return weight / torch.where(norms > 0, norms, torch.ones_like(norms)).pow(tau)


def check_tau(weight: Tensor, tau: float, flag: str) -> None:
    """Refuse a ``tau`` whose ``||w_i|| ** tau`` leaves float32's range (the classifier
    would become +-inf, or all zeros): a one-line error naming the range of row norms.

    >>> check_tau(torch.ones(2, 3), 2.0, "--tau")
    """
    norms = weight.float().norm(dim=1)
    norms = norms[norms > 0]
    powers = norms.pow(tau)
    if norms.numel() and not (torch.isfinite(powers).all() and (powers > 0).all()):
        raise ValueError(
            f"{flag} {tau:g}: the classifier's row norms ({norms.min():.3g} to {norms.max():.3g}) "
            f"to the power tau leave float32's range (the weights would be infinite or zero): "
            "expected a smaller tau"
        )


class LWSHead(nn.Module):
    """Learnable weight scaling: ``z = s * (f @ W.T + b)`` with fixed ``W``, ``b`` and trained ``s``.

    >>> head = LWSHead(nn.Linear(3, 2))
    >>> f = torch.randn(4, 3)
    >>> torch.allclose(head(f), head.linear(f))
    True
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear.requires_grad_(False)
        w = linear.weight
        self.scales = nn.Parameter(torch.ones(linear.out_features, device=w.device, dtype=w.dtype))

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(features) * self.scales

    def folded(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing the same logits (``s`` folded into ``W`` and ``b``)."""
        lin = self.linear
        w = lin.weight
        out = nn.Linear(
            lin.in_features,
            lin.out_features,
            bias=lin.bias is not None,
            device=w.device,
            dtype=w.dtype,
        )
        with torch.no_grad():
            out.weight.copy_(w * self.scales[:, None])
            if lin.bias is not None:
                out.bias.copy_(lin.bias * self.scales)
        return out
