"""The focal kernels: elementwise terms, and fused autograd Functions for the two target kinds.

``gamma = 0`` gives the sigmoid cross-entropy. Every kernel computes the loss
and its gradient in one forward pass, so backward is one scaling; with
``create_graph=True`` backward rebuilds the gradient from differentiable ops
(:func:`_focal_terms`), so second derivatives are exact. Values are exact for
every finite logit (log-space formulas, no large term subtracted).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import compiling

__all__ = ["focal_elements", "functorch_active", "index_focal_per_example"]


def _focal_terms(z: Tensor, t: Tensor | float, gamma: float) -> tuple[Tensor, Tensor]:
    """Elementwise focal loss ``l = M * BCE`` and its derivative ``dl/dz``, from differentiable ops.

    ``BCE = -(t log p + (1 - t) log q)`` with ``p = sigmoid(z)``, ``q = 1 - p``;
    ``M = exp(gamma * (t log q + (1 - t) log p))`` (``(1 - p_t)**gamma`` for
    ``t`` in {0, 1}; the release's ``exp(-gamma t z - gamma log1p(exp(-z)))``
    for soft labels). The derivative ``dl/dz = M (p - t) + gamma (q - t) l``
    has no negative power and no product that overflows before the result
    does, so it is finite for every finite ``z``. Used by the fused kernels'
    forward (under ``no_grad``) and, for second derivatives, by their backward.
    """
    bce = -(t * F.logsigmoid(z) + (1.0 - t) * F.logsigmoid(-z))  # exact for every z
    p, q = torch.sigmoid(z), torch.sigmoid(-z)
    p_minus_t = (1.0 - t) * p - t * q  # = p - t, exact where p ~ 1 as well
    if gamma == 0.0:
        return bce, p_minus_t
    modulator = _modulator(z, t, gamma)
    loss = modulator * bce
    return loss, modulator * p_minus_t + gamma * ((1.0 - t) * q - t * p) * loss


class _FocalElements(torch.autograd.Function):
    """Elementwise focal loss (``gamma = 0``: sigmoid CE) ``(N, C)`` for float targets.

    Forward computes the loss and its gradient in one pass; backward scales the
    saved gradient, or, when a graph of the gradient is requested
    (``create_graph=True``), rebuilds it from :func:`_focal_terms` so that
    second derivatives are exact. Gradients also flow to soft targets:
    ``dl/dt = -z (gamma l + M)``.
    """

    @staticmethod
    def forward(ctx, z: Tensor, t: Tensor, gamma: float) -> Tensor:
        loss, grad = _focal_terms(z, t, gamma)
        ctx.gamma = gamma
        ctx.save_for_backward(z, t, grad)
        return loss

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        z, t, grad = ctx.saved_tensors
        if torch.is_grad_enabled() or ctx.needs_input_grad[1]:
            loss, grad = _focal_terms(z, t, ctx.gamma)
        grad_t = None
        if ctx.needs_input_grad[1]:
            grad_t = -z * (ctx.gamma * loss + _modulator(z, t, ctx.gamma)) * grad_output
        return grad * grad_output, grad_t, None


def focal_elements(z: Tensor, t: Tensor, gamma: float) -> Tensor:
    """Elementwise focal terms ``(1 - p_t)**gamma * BCE(z, t)`` of validated float inputs,
    exact and twice differentiable (see :func:`_focal_terms`)."""
    if functorch_active():
        return _focal_terms(z, t, gamma)[0]
    return _FocalElements.apply(z, t, gamma)


def index_focal_per_example(z: Tensor, targets: Tensor, gamma: float) -> Tensor:
    """``(N,)`` focal loss row sums for validated class indices ``targets`` ``(N,)``: the
    fused :class:`_IndexFocal`, or without a gradient to form :func:`_index_focal_rows`."""
    if functorch_active():
        return _focal_terms(z, _one_hot(z, targets.unsqueeze(1)), gamma)[0].sum(1)
    if torch.is_grad_enabled() and z.requires_grad:
        return _IndexFocal.apply(z.contiguous(), targets, gamma)
    return _index_focal_rows(z.contiguous(), targets, gamma)  # evaluation


def functorch_active() -> bool:
    """Whether a ``torch.func`` transform (``grad``, ``vmap``, ``hessian``...) is running.

    The fused autograd Functions have no rules for them (their forward keeps the gradient
    in ``ctx``); the same formulas as plain differentiable ops need none."""
    active = getattr(torch._C, "_are_functorch_transforms_active", None)  # a private hook
    return bool(active()) if active is not None else False


def _modulator(z: Tensor, t: Tensor | float, gamma: float) -> Tensor | float:
    if gamma == 0.0:
        return 1.0
    return torch.exp(gamma * (t * F.logsigmoid(-z) + (1.0 - t) * F.logsigmoid(z)))


#: elements per chunk of rows in the eager kernel: at 2 threads each core's share of the
#: chunk's few buffers stays in a 2 MiB L2 cache; fewer chunks, fewer per-operation costs
_CHUNK_ELEMENTS = 1 << 17
#: inputs of at most this many elements are computed in one block (no chunks, no separate
#: positives: fewer operations, which is what costs at this size); compiled, the backward
#: recomputes the gradient below it (cheaper than calling the opaque op)
_BLOCK_ELEMENTS = 1 << 14


@torch.library.custom_op("classbalanced::scale_rows_", mutates_args=("grad",))
def _scale_rows_(grad: Tensor, scale: Tensor) -> None:
    """``grad *= scale[:, None]`` in place, opaque to ``torch.compile``.

    The backward of :class:`_IndexFocal` under the compiler: an op the partitioner
    cannot fuse makes it keep the gradient computed in forward, instead of
    recomputing it (three transcendental functions per element) in backward; done in
    place, that kept buffer becomes the logits' gradient, so forward + backward hold
    one ``(N, C)`` buffer (inductor reuses the saved tensor, which dies with the call).
    """
    grad.mul_(scale.unsqueeze(1))


class _IndexFocal(torch.autograd.Function):
    """Per-example focal loss (``gamma = 0``: sigmoid CE) row sums for class-index targets.

    Eager: every logit is treated as a negative label (no one-hot matrix), in
    chunks of rows small enough to stay in cache; the single positive of each
    row is masked out and its own term added from an ``(N,)`` computation, so no
    large term is ever subtracted (inputs of at most ``_BLOCK_ELEMENTS`` elements:
    one block where the positives' logits are negated, the same elementwise
    formula). The gradient is formed in the same pass into one ``(N, C)``
    buffer, so backward is one in-place scaling of it (a second backward of a
    retained graph recomputes it). Under ``torch.compile`` the same loss and
    gradient come from one pointwise expression (:func:`_index_focal_fused`),
    which the compiler fuses into one kernel, and backward is the opaque in-place
    :func:`_scale_rows_` (above ``_BLOCK_ELEMENTS`` elements), so the gradient is
    not recomputed and no second ``(N, C)`` buffer is allocated. With ``create_graph=True`` backward rebuilds the gradient
    from differentiable ops, so second derivatives equal those of one-hot targets.
    """

    @staticmethod
    def forward(ctx, z: Tensor, targets: Tensor, gamma: float) -> Tensor:
        index = targets.unsqueeze(1)
        ctx.gamma = gamma
        if compiling():
            per_example, grad = _index_focal_fused(z, index, gamma)
            ctx.save_for_backward(z, targets, grad)
        else:
            per_example, eager_grad = _index_focal_eager(z, index, gamma)
            ctx.save_for_backward(z, targets)
            ctx.grad = eager_grad  # not a saved tensor: the first backward scales it in place
        return per_example

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        if compiling():
            z, targets, grad = ctx.saved_tensors
            if grad.numel() <= _BLOCK_ELEMENTS:  # small: the opaque op's call costs more
                return grad * grad_output.unsqueeze(1), None, None
            _scale_rows_(grad, grad_output)
            return grad, None, None
        z, targets = ctx.saved_tensors
        scale = grad_output.unsqueeze(1)
        if torch.is_grad_enabled():  # double backward: a differentiable gradient
            grad = _focal_terms(z, _one_hot(z, targets.unsqueeze(1)), ctx.gamma)[1]
            return grad * scale, None, None
        grad, ctx.grad = ctx.grad, None
        if grad is None:  # a second backward of a retained graph
            grad = _index_focal_eager(z, targets.unsqueeze(1), ctx.gamma)[1]
        return grad.mul_(scale), None, None


def _one_hot(z: Tensor, index: Tensor) -> Tensor:
    """``(N, C)`` one-hot of ``index`` ``(N, 1)`` as a comparison (fused, never stored, when
    compiled); an index outside ``[0, C)`` raises (:func:`_gather_checked`)."""
    classes = torch.arange(z.shape[1], device=z.device)
    return (classes == _gather_checked(classes.expand_as(z), index)).to(z.dtype)


def _gather_checked(z: Tensor, index: Tensor) -> Tensor:
    """``z[b, index[b]]`` ``(N, 1)``: used where a comparison with ``arange`` alone would turn
    an index outside ``[0, C)`` (``validate_args=False``: no host read) into a row without
    a positive label, a silently wrong loss. The gather checks its indices where they are:
    an error on the CPU, a device-side assert on CUDA, a bounds check in the compiled
    kernel; it costs one load per row. (Where ``positive`` holds, ``z`` equals it.)"""
    return z.gather(1, index)


def _index_focal_fused(z: Tensor, index: Tensor, gamma: float) -> tuple[Tensor, Tensor]:
    """Loss rows and gradient for class indices as one pointwise expression (for the compiler).

    Every term is ``f(s) = P**gamma * softplus(s)`` of ``s = -z`` (positive) or ``s = z``
    (negative), ``P = sigmoid(s)``; with ``e = exp(-|s|)``, ``u = 1 + e`` and
    ``r = 1 / u`` shared: ``softplus(s) = max(s, 0) + log1p(e)``, ``log P = min(s, 0) -
    log1p(e)``, ``P = r`` or ``e r``. ``log1p(e) = log(u) - ((u - 1) - e) / u``: the
    rounding error ``(u - 1) - e`` of ``u`` is exact, and removing it to first order
    makes ``log(u)`` as accurate as ``log1p`` at a fraction of its cost (``= e`` where
    ``u`` rounds to 1). Three transcendental functions per element (two exp, one
    log), fused by the compiler into one pass that writes only the gradient.
    """
    positive = torch.arange(z.shape[1], device=z.device) == index
    s = torch.where(positive, -_gather_checked(z, index), z)
    e = torch.exp(-s.abs())
    u = 1.0 + e
    r = 1.0 / u
    log1p_e = torch.log(u) - ((u - 1.0) - e) * r
    softplus = s.clamp_min(0.0) + log1p_e
    p, q = torch.where(s >= 0, r, e * r), torch.where(s >= 0, e * r, r)
    if gamma == 0.0:
        loss, grad = softplus, p
    else:
        modulator = torch.exp(gamma * (s.clamp_max(0.0) - log1p_e))
        loss, grad = modulator * softplus, modulator * (gamma * q * softplus + p)
    return loss.sum(1), torch.where(positive, -grad, grad)


def _index_focal_rows(z: Tensor, targets: Tensor, gamma: float) -> Tensor:
    """Per-example focal loss row sums for class indices, without a gradient (for logits
    that do not require grad, or under ``no_grad``): the values of :class:`_IndexFocal`
    (to the last bit in eager), at about half its cost."""
    index = targets.unsqueeze(1)
    if compiling():
        return _index_focal_fused(z, index, gamma)[0]
    return _index_focal_eager(z, index, gamma, need_grad=False)[0]


def _index_focal_eager(
    z: Tensor, index: Tensor, gamma: float, need_grad: bool = True
) -> tuple[Tensor, Tensor | None]:
    n, c = z.shape
    if n * c <= _BLOCK_ELEMENTS:
        return _index_focal_block(z, index, gamma, need_grad)
    grad = torch.empty_like(z) if need_grad else None
    rows_loss = torch.empty(n, dtype=z.dtype, device=z.device)
    rows = max(1, _CHUNK_ELEMENTS // max(c, 1))
    for start in range(0, n, rows):
        chunk, stop = index[start : start + rows], min(start + rows, n)
        grad_out = None if grad is None else grad[start:stop]
        loss, _ = _negative_terms(z[start:stop], gamma, grad_out, need_grad)
        torch.sum(loss.scatter_(1, chunk, 0.0), dim=1, out=rows_loss[start:stop])
    # a positive's term is the negative-label term of -z, with the gradient's sign flipped
    pos_loss, pos_grad = _negative_terms(z.gather(1, index).neg_(), gamma, need_grad=need_grad)
    if grad is not None and pos_grad is not None:  # both or neither: need_grad
        grad.scatter_(1, index, pos_grad.neg_())
    return rows_loss.add_(pos_loss.squeeze(1)), grad


def _index_focal_block(
    z: Tensor, index: Tensor, gamma: float, need_grad: bool = True
) -> tuple[Tensor, Tensor | None]:
    """Small inputs in one block: the chunks' elementwise terms of ``s = -z`` at the
    positives and ``s = z`` elsewhere (fewer operations than separate positives)."""
    positive = torch.arange(z.shape[1], device=z.device) == index
    s = torch.where(positive, -_gather_checked(z, index), z)
    loss, grad = _negative_terms(s, gamma, need_grad=need_grad)
    return loss.sum(1), None if grad is None else torch.where(positive, grad.neg(), grad)


#: ``softplus(z) = z`` beyond it: ``log1p(exp(-z)) < 4.3e-18`` is below half an ulp of ``z``
#: in float32 and float64 (``F.softplus``'s default 20 drops ``2e-9`` from ``20 + 2e-9`` in float64)
_SOFTPLUS_THRESHOLD = 40.0


def _negative_terms(
    z: Tensor, gamma: float, grad_out: Tensor | None = None, need_grad: bool = True
) -> tuple[Tensor, Tensor | None]:
    """Negative-label terms ``f(z) = p**gamma * softplus(z)`` and their gradient
    ``f'(z) = p**gamma * (gamma * q * softplus(z) + p)`` (``p = sigmoid(z)``, ``q = 1 - p =
    exp(-softplus(z))``: exact where ``p ~ 1`` too; its relative error, ``softplus(z)``
    ulps, moves ``f'`` by at most ``gamma * q * softplus(z)**2 / p <= 0.65 gamma`` ulps),
    written into ``grad_out`` if given. ``need_grad=False``: the same loss from the same
    operations, and ``None`` for the gradient.

    ``softplus`` is exact for every finite ``z`` (see ``_SOFTPLUS_THRESHOLD``); where
    ``p`` underflows, ``softplus(z) ~ p`` does too, so ``p**gamma`` needs no log space.
    None of these operations starts a thread pool on small inputs.
    """
    softplus = F.softplus(z, threshold=_SOFTPLUS_THRESHOLD)
    if gamma == 0.0 and not need_grad:
        return softplus, None
    prob = torch.sigmoid(z)
    if gamma == 0.0:
        grad = prob if grad_out is None else grad_out.copy_(prob)
        return softplus, grad
    if gamma == 1.0:
        modulator = prob
    else:  # sqrt: pow(x, 0.5) is the same value but starts a thread pool on small inputs
        modulator = prob.sqrt() if gamma == 0.5 else prob.pow(gamma)
    if not need_grad:
        return softplus.mul_(modulator), None
    q = torch.neg(softplus).exp_()  # cheaper than sigmoid(-z)
    grad = torch.addcmul(prob, q, softplus, value=gamma, out=grad_out).mul_(modulator)
    return softplus.mul_(modulator), grad
