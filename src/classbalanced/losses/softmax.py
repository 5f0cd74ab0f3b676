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

**Class offsets** (the logit-adjusted loss and balanced softmax: ``CE(z + o, y)`` with
``o_j = tau * log(n_j)`` up to a constant). Adding a rounded ``o`` to ``z`` would round
every adjusted logit, and ``exp`` of an adjusted difference ``d`` would carry a relative
error of about ``|d|`` ulps: the margin again. A :class:`ClassShift` gives the offsets
also as the factors ``r_j = exp(o_j - max o)`` computed from the counts without that
rounding (``(n_j / max n) ** tau``), and every term is formed as
``exp(z_j - z_k) * r_j / r_k``: the logits' own difference (rounded only as the plain
kernel rounds it, exact when it is representable) times a ratio good to a few ulps,
whatever the margin. The pivot ``k`` is the largest adjusted logit, and ``(m - z_y)``
becomes ``(z_k - z_y) + (o_k - o_y)``. Two limits: a term whose ``exp(z_j - z_k)`` is
subnormal (a loss or gradient entry below about ``tiny / eps``, 1e-31 in float32) keeps
fewer digits; and a class whose factor is below the dtype's ``eps`` (an offset range over
``tau * log(max n / min n) = 15.9`` in float32, 36 in float64) would put
``exp(z_j - z_k)`` out of range, so its offset is added to its logit instead (finite, exact
to about ``|z_j + o_j|`` ulps, the rounding of that sum).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .checks import compiling
from .kernels import functorch_active

__all__ = ["ClassShift", "softmax_ce_rows"]


class ClassShift(NamedTuple):
    """Per-class offsets ``o`` ``(C,)`` added to every row of logits, in the two forms the
    exact kernel needs: ``log``, the offsets as the dtype rounds them (they pick each row's
    pivot), and ``scale``, ``exp(o - max o)`` in ``(0, 1]`` computed without that rounding.

    >>> counts = torch.tensor([90.0, 10.0])
    >>> ClassShift.from_counts(counts, tau=1.0)  # o = log(n): ratios n / max n
    ClassShift(log=tensor([ 0.0000, -2.1972]), scale=tensor([1.0000, 0.1111]))
    """

    log: Tensor
    scale: Tensor

    @classmethod
    def from_counts(cls, counts: Tensor, tau: float) -> ClassShift:
        """``o = tau * log(n)`` (a constant apart from ``tau * log(pi)``, which the softmax
        cancels) of positive counts ``n`` ``(C,)``: ``scale = (n / max n) ** tau``."""
        ratio = counts / counts.max()
        if tau == 1.0:  # the default of both losses: no pow for a compiled graph to inline
            return cls(ratio.log(), ratio)
        return cls(ratio.log().mul(tau), ratio.pow(tau))

    def split(self, dtype: torch.dtype) -> tuple[Tensor | None, Tensor, Tensor]:
        """``(fold, log, scale)``: ``fold`` the offsets of the classes whose ``scale`` is below
        ``dtype``'s ``eps`` (added to those classes' logits; 0 elsewhere), then the offsets
        and scales of the rest (the folded classes' offset 0, scale 1). ``fold`` is ``None``
        when no class folds and that is known without waiting on a device (CPU tensors,
        eager: a compiled graph keeps no branch on a value)."""
        folded = self.scale < torch.finfo(dtype).eps
        if not compiling() and self.scale.device.type == "cpu" and not bool(folded.any()):
            return None, self.log, self.scale
        zero, one = self.log.new_zeros(()), self.log.new_ones(())
        rest = torch.where(folded, zero, self.log), torch.where(folded, one, self.scale)
        return torch.where(folded, self.log, zero), *rest


def softmax_ce_rows(z: Tensor, targets: Tensor, shift: ClassShift | None = None) -> Tensor:
    """``(N,)`` cross-entropy ``logsumexp(x_b) - x_{b, y_b}`` of ``x = z + shift`` (``z``
    ``(N, C)``, validated class indices ``targets`` ``(N,)``, an optional :class:`ClassShift`
    in ``z``'s dtype and device), exact to a few ulps for every finite logit, as is its
    gradient (see the module docstring).

    >>> softmax_ce_rows(torch.tensor([[20.0, 0.0]]), torch.tensor([0]))  # log1p(exp(-20))
    tensor([2.0612e-09])
    """
    parts = (None, None, None) if shift is None else shift.split(z.dtype)
    if z.requires_grad and torch.is_grad_enabled() and not (compiling() or functorch_active()):
        return _SoftmaxCE.apply(z, targets, *parts)
    return _softmax_ce_terms(z, targets, *parts)


class _SoftmaxCE(torch.autograd.Function):
    """Eager loss rows and their gradient ``p - onehot(y)`` in one forward pass; backward
    scales the kept gradient in place (a second backward of a retained graph, or a graph
    of the gradient for second derivatives, goes through :func:`_softmax_ce_terms`).
    ``fold``, ``log``, ``scale``: :meth:`ClassShift.split`'s, or ``None``."""

    @staticmethod
    def forward(ctx, z: Tensor, targets: Tensor, fold, log, scale):
        rows, ctx.grad = _rows_and_grad(z, targets, fold, log, scale)
        ctx.save_for_backward(z, targets, fold, log, scale)
        return rows

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        grad, ctx.grad = ctx.grad, None
        none = (None, None, None, None)
        if torch.is_grad_enabled():  # create_graph: the gradient as a differentiable function
            z, targets, fold, log, scale = ctx.saved_tensors
            return _autograd_of_terms(z, targets, fold, log, scale, grad_output), *none
        if grad is None:  # a second backward of a retained graph: the same bits again
            grad = _rows_and_grad(*ctx.saved_tensors)[1]
        return grad.mul_(grad_output.unsqueeze(1)), *none


def _pivot(z: Tensor, fold: Tensor | None, log: Tensor | None) -> tuple[Tensor, Tensor]:
    """``k`` ``(N, 1)``, the first index of each row's largest adjusted logit, and ``m``, the
    logit there (``z_k + fold_k``); ``(m, k)``."""
    if log is None:
        return z.max(1, keepdim=True)
    offsets = log if fold is None else log + fold
    k = torch.add(z, offsets).argmax(1, keepdim=True)
    m = z.gather(1, k)
    return (m if fold is None else m + fold[k]), k


def _rows_and_grad(
    z: Tensor,
    targets: Tensor,
    fold: Tensor | None = None,
    log: Tensor | None = None,
    scale: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Loss rows and their gradient ``p - onehot(y)`` ``(N, C)`` (no autograd); with a shift,
    of the logits ``z + fold`` (never formed: added in place to ``z - m``)."""
    index = targets.unsqueeze(1)
    m, k = _pivot(z, fold, log)
    e = torch.sub(z, m)
    if fold is not None:
        e.add_(fold)
    e.exp_()  # exp(z_j - m)
    if scale is not None:
        e.mul_(scale)  # times r_j; the 1 / r_k is a factor of the row
    e.scatter_(1, k, 0.0)  # the winner's 1 left out
    s = e.sum(1, keepdim=True)
    if scale is not None:
        s.div_(scale[k])
    r = s.add(1.0).reciprocal_()
    z_y = z.gather(1, index)
    if fold is not None:
        z_y = z_y + fold[index]  # as m was formed: 0 where y = k
    margin = m - z_y
    if log is not None:
        margin += log[k] - log[index]
    rows = torch.log1p(s).add_(margin).squeeze(1)
    grad = e.mul_(r if scale is None else r / scale[k]).scatter_(1, k, r)  # p
    # the true class: -s / (1 + s) where it wins (no cancellation), else p_y - 1
    true = torch.where(k == index, -s * r, grad.gather(1, index) - 1.0)
    return rows, grad.scatter_(1, index, true)


def _autograd_of_terms(
    z: Tensor,
    targets: Tensor,
    fold: Tensor | None,
    log: Tensor | None,
    scale: Tensor | None,
    grad_output: Tensor,
) -> Tensor:
    """``d(grad_output . rows) / dz`` through :func:`_softmax_ce_terms`, with its graph."""
    rows = _softmax_ce_terms(z, targets, fold, log, scale)
    return torch.autograd.grad(rows, z, grad_output, create_graph=True)[0]


def _softmax_ce_terms(
    z: Tensor,
    targets: Tensor,
    fold: Tensor | None = None,
    log: Tensor | None = None,
    scale: Tensor | None = None,
) -> Tensor:
    """The loss rows from differentiable operations whose autograd forms the exact gradient
    (the pivots of the module docstring); with a shift, of the logits ``z + fold``."""
    if fold is not None:
        z = z + fold
    index = targets.unsqueeze(1)
    z_y = z.gather(1, index)
    m, k = _pivot(z.detach(), None, log)
    y_wins = k == index
    pivot = torch.where(y_wins, z_y, m)  # attached only where it is z_y
    at_k = torch.arange(z.shape[1], device=z.device) == k
    zero = torch.zeros((), dtype=z.dtype, device=z.device)
    # the winner's own term: a constant 0 where y wins (its dependence is in the pivot),
    # exp(z_k - m) - 1 = 0 with derivative p_k elsewhere
    terms = torch.exp(torch.where(at_k & y_wins, zero, z - pivot))
    winner = at_k.to(z.dtype)
    if scale is None:
        s = (terms - winner).sum(1)
    else:  # times r_j, the winner's r_k taken out; the 1 / r_k is a factor of the row
        r_k = scale[k]
        s = (terms * scale - winner * r_k).sum(1) / r_k.squeeze(1)
    margin = m - z_y
    if log is not None:
        margin = margin + (log[k] - log[index])
    return torch.where(y_wins, zero, margin).squeeze(1) + torch.log1p(s)
