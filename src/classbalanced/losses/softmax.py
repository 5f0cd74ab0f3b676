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

Plain differentiable operations (:func:`_softmax_ce_terms`), so second derivatives,
``torch.func`` transforms and ``torch.compile(fullgraph=True)`` work as for any
expression. Eager, with a gradient to form, :class:`_SoftmaxCE` computes the same loss
and that gradient in one pass (as many passes over ``(N, C)`` as ``F.cross_entropy``),
and backward scales it in place.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .checks import _compiling
from .kernels import _functorch_active


def softmax_ce_rows(z: Tensor, targets: Tensor) -> Tensor:
    """``(N,)`` cross-entropy ``logsumexp(z_b) - z_{b, y_b}`` of ``z`` ``(N, C)`` and validated
    class indices ``targets`` ``(N,)``, exact to a few ulps for every finite logit, as is
    its gradient (see the module docstring).

    >>> softmax_ce_rows(torch.tensor([[20.0, 0.0]]), torch.tensor([0]))  # log1p(exp(-20))
    tensor([2.0612e-09])
    """
    if z.requires_grad and torch.is_grad_enabled() and not (_compiling() or _functorch_active()):
        return _SoftmaxCE.apply(z, targets)
    return _softmax_ce_terms(z, targets)


class _SoftmaxCE(torch.autograd.Function):
    """Eager loss rows and their gradient ``p - onehot(y)`` in one forward pass; backward
    scales the kept gradient in place (a second backward of a retained graph, or a graph
    of the gradient for second derivatives, goes through :func:`_softmax_ce_terms`)."""

    @staticmethod
    def forward(ctx, z: Tensor, targets: Tensor) -> Tensor:
        rows, ctx.grad = _rows_and_grad(z, targets)
        ctx.save_for_backward(z, targets)
        return rows

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        grad, ctx.grad = ctx.grad, None
        if torch.is_grad_enabled():  # create_graph: the gradient as a differentiable function
            z, targets = ctx.saved_tensors
            return _autograd_of_terms(z, targets, grad_output), None
        if grad is None:  # a second backward of a retained graph: the same bits again
            grad = _rows_and_grad(*ctx.saved_tensors)[1]
        return grad.mul_(grad_output.unsqueeze(1)), None


def _rows_and_grad(z: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Loss rows and their gradient ``p - onehot(y)`` ``(N, C)`` (no autograd)."""
    index = targets.unsqueeze(1)
    m, k = z.max(1, keepdim=True)
    e = torch.sub(z, m).exp_().scatter_(1, k, 0.0)  # exp(z_j - m), the winner's 1 left out
    s = e.sum(1, keepdim=True)
    r = s.add(1.0).reciprocal_()
    rows = torch.log1p(s).add_(m - z.gather(1, index)).squeeze(1)
    grad = e.mul_(r).scatter_(1, k, r)  # p
    # the true class: -s / (1 + s) where it wins (no cancellation), else p_y - 1
    true = torch.where(k == index, -s * r, grad.gather(1, index) - 1.0)
    return rows, grad.scatter_(1, index, true)


def _autograd_of_terms(z: Tensor, targets: Tensor, grad_output: Tensor) -> Tensor:
    """``d(grad_output . rows) / dz`` through :func:`_softmax_ce_terms`, with its graph."""
    rows = _softmax_ce_terms(z, targets)
    return torch.autograd.grad(rows, z, grad_output, create_graph=True)[0]


def _softmax_ce_terms(z: Tensor, targets: Tensor) -> Tensor:
    """The loss rows from differentiable operations whose autograd forms the exact gradient
    (the pivots of the module docstring)."""
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
