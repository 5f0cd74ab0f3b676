"""The softmax cross-entropy kernel, exact when the true class wins by a wide margin.

``CE(z, y) = logsumexp(z) - z_y`` loses all relative accuracy once ``p_y`` is close to
1: the two terms agree in every digit the loss has (``torch`` and TensorFlow return
0 for ``[[20., 0.]]``, class 0, in float32, where the exact value is 2.06e-9). With
``m = z_k`` the largest logit (``k`` its first index) and
``s = sum_{j != k} exp(z_j - m)`` (every term <= 1),

    ``CE = (m - z_y) + log1p(s)``,

a sum of two non-negative terms, so exact to a few ulps of the result for every
finite input. The gradient ``p - onehot(y)`` (``p_j = exp(z_j - m) / (1 + s)``) is
exact as autograd forms it from these operations:

* if ``y = k``, the pivot is ``z_y`` itself, its own term ``exp(0) = 1`` is left out
  of ``s`` (a constant, no gradient), so ``d/dz_y = -s / (1 + s)``: a sum of positive
  terms, not ``p_y - 1``, which cancels to 0 there;
* otherwise the pivot is ``m`` without a gradient (the loss does not depend on it),
  ``k``'s term enters as ``exp(z_k - m) - 1`` (0, with derivative 1), so
  ``d/dz_k = p_k`` and ``d/dz_y = p_y - 1`` with ``p_y <= 1/2``: no cancellation.

Plain differentiable operations, so second derivatives, ``torch.func`` transforms and
``torch.compile(fullgraph=True)`` work as for any expression.
"""

from __future__ import annotations

import torch
from torch import Tensor


def softmax_ce_rows(z: Tensor, targets: Tensor) -> Tensor:
    """``(N,)`` cross-entropy ``logsumexp(z_b) - z_{b, y_b}`` of ``z`` ``(N, C)`` and validated
    class indices ``targets`` ``(N,)``, exact to a few ulps for every finite logit, as is
    its gradient (see the module docstring).

    >>> softmax_ce_rows(torch.tensor([[20.0, 0.0]]), torch.tensor([0]))  # log1p(exp(-20))
    tensor([2.0612e-09])
    """
    index = targets.unsqueeze(1)
    z_y = z.gather(1, index)
    m, k = z.detach().max(1, keepdim=True)
    y_wins = k == index
    pivot = torch.where(y_wins, z_y, m)  # attached only where it is z_y
    at_k = torch.arange(z.shape[1], device=z.device) == k
    # the winner's own term: a constant 0 where y wins (its dependence is in the pivot),
    # exp(z_k - m) - 1 = 0 with derivative p_k elsewhere
    shifted = torch.where(at_k & y_wins, torch.zeros((), dtype=z.dtype, device=z.device), z - pivot)
    s = (torch.exp(shifted) - at_k.to(z.dtype)).sum(1)
    margin = torch.where(y_wins, torch.zeros((), dtype=z.dtype, device=z.device), m - z_y)
    return margin.squeeze(1) + torch.log1p(s)
