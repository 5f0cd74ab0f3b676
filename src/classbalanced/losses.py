"""Weighted softmax / sigmoid / focal losses, the class-balanced loss, and its helpers.

Functional core first, thin ``nn.Module`` wrappers after, then the registry
that maps loss names to modules, then the classifier-bias prior and the
weight-decay parameter groups (Cui et al., CVPR 2019, section 4 and the
authors' TensorFlow release).

Semantics (batch of ``N`` examples, ``C`` classes, per-class weight ``w``):

* softmax: ``L = (1/N) * sum_b w[y_b] * CE(softmax(z_b), y_b)``; the mean divides
  by ``N``, every example counted, whatever its weight. (The release's
  ``tf.losses.softmax_cross_entropy`` divides by the number of *non-zero*
  weights; its class-balanced weights are all > 0, so the two agree unless a
  user weight is exactly 0.)
* sigmoid: ``L = sum_{b,j} w_b * BCE(z_bj, t_bj) / #positives``;
* focal: ``L = sum_{b,j} w_b * (1 - p_t)**gamma * BCE(z_bj, t_bj) / #positives``
  with ``p_t = sigmoid(z)`` for ``t = 1`` and ``1 - sigmoid(z)`` for ``t = 0``.

The example weight ``w_b`` is ``w[y_b]`` for class-index targets; for multi-hot
(or soft) targets it is the label-mass-weighted mean of the weights of the
example's labels, ``w_b = (t_b @ w) / sum_j t_bj``, and the mean class weight
``mean(w)`` for an example without any positive label (see
:func:`sigmoid_cross_entropy` for the reason).

Everything is computed in log space (``log sigmoid(z) = min(z, 0) - log1p(e^-|z|)``),
so the loss and its gradient are finite and exact for every finite logit, in
float32 (float64 for float64 logits) whatever the logits' precision:
half-precision logits are up-cast, so results match float32 at any logit
magnitude. Second derivatives (``create_graph=True``, gradient penalties,
meta-learning) are exact too; the losses compile with
``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validation import check_beta, check_choice, check_gamma, check_positive_int
from .registry import Registry
from .weights import as_counts, class_balanced_weights

__all__ = [
    "LOSS_TYPES",
    "REDUCTIONS",
    "DEFAULT_GAMMA",
    "softmax_cross_entropy",
    "sigmoid_cross_entropy",
    "sigmoid_focal_cross_entropy",
    "class_balanced_loss",
    "WeightedLoss",
    "ClassBalancedLoss",
    "loss_options",
    "register_loss",
    "available_losses",
    "build_loss",
    "prior_bias",
    "init_prior_bias_",
    "parameter_groups",
]

LOSS_TYPES = ("softmax", "sigmoid", "focal")
REDUCTIONS = ("mean", "sum", "none")
#: the focal exponent every loss of this package defaults to
DEFAULT_GAMMA = 1.0


# ---------------------------------------------------------------------------
# Validation at the public boundary
# ---------------------------------------------------------------------------


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def _check_logits(logits: object) -> Tensor:
    if not isinstance(logits, Tensor):
        raise TypeError(
            f"logits must be a torch.Tensor of shape (N, C), got {type(logits).__name__}"
        )
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    if logits.dim() != 2 or logits.shape[1] < 1:
        raise ValueError(
            f"logits must have shape (N, C) with C >= 1, got shape {tuple(logits.shape)}"
        )
    return logits


def _compute_dtype(logits: Tensor) -> torch.dtype:
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def _host_checks(tensor: Tensor) -> bool:
    """Data-dependent checks read values on the host only for CPU tensors (no GPU sync)."""
    return tensor.device.type == "cpu"


def _check_values(valid: Tensor, tensor: Tensor, message: Callable[[], str]) -> None:
    """Raise ``ValueError(message())`` unless the 0-d bool ``valid`` holds.

    On accelerators the check runs on the device (``_assert_async``), so a
    training step never waits for the host.
    """
    if _host_checks(tensor):
        if not bool(valid):
            raise ValueError(message())
    else:
        torch._assert_async(valid, message())


def _check_index_targets(targets: Tensor, logits: Tensor, validate: bool) -> Tensor:
    n, c = logits.shape
    if targets.dim() != 1 or targets.shape[0] != n:
        raise ValueError(
            f"class-index targets must have shape (N,) = ({n},) to match logits {tuple(logits.shape)}, "
            f"got shape {tuple(targets.shape)}"
        )
    if validate and n > 0:
        low, high = torch.aminmax(targets)

        def message() -> str:
            bad = f", got {int(low) if low < 0 else int(high)}" if _host_checks(targets) else ""
            return f"targets must be class indices in [0, {c - 1}]{bad}"

        _check_values((low >= 0) & (high < c), targets, message)
    return targets.long()


def _check_dense_targets(targets: Tensor, logits: Tensor, validate: bool) -> Tensor:
    if targets.shape != logits.shape:
        raise ValueError(
            f"multi-hot targets must have the logits' shape {tuple(logits.shape)}, got shape {tuple(targets.shape)}"
        )
    dense = targets.to(_compute_dtype(logits))
    if validate and dense.numel() > 0:
        low, high = torch.aminmax(dense.detach())
        _check_values(
            (low >= 0) & (high <= 1),
            dense,
            lambda: (
                f"multi-hot targets must lie in [0, 1], got values in [{float(low)}, {float(high)}]"
            ),
        )
    return dense


def _check_targets(
    targets: object, logits: Tensor, *, allow_dense: bool, validate: bool = True
) -> tuple[Tensor, bool]:
    """Return (targets, is_dense)."""
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    if targets.device != logits.device:
        raise ValueError(
            f"targets must be on the logits' device {logits.device}, got targets on {targets.device}"
        )
    is_integer = (
        not targets.is_floating_point() and not targets.is_complex() and targets.dtype != torch.bool
    )
    if is_integer:
        return _check_index_targets(targets, logits, validate and not _compiling()), False
    if not allow_dense:
        raise TypeError(
            f"targets must be int64 class indices of shape (N,), got dtype {targets.dtype}"
        )
    if targets.dim() != 2:
        raise TypeError(
            "targets must be int64 class indices of shape (N,) or float multi-hot of shape (N, C), "
            f"got dtype {targets.dtype} with shape {tuple(targets.shape)}"
        )
    return _check_dense_targets(targets, logits, validate and not _compiling()), True


def _check_weight(weight: object, logits: Tensor, validate: bool = True) -> Tensor | None:
    """``(C,)`` weights in the compute dtype; gradients flow to a weight that requires them."""
    if weight is None:
        return None
    if not isinstance(weight, Tensor):
        raise TypeError(
            f"weight must be a tensor of shape (C,) or None, got {type(weight).__name__}"
        )
    c = logits.shape[1]
    if weight.dim() != 1 or weight.shape[0] != c:
        raise ValueError(
            f"weight must have one entry per class, shape ({c},) for logits {tuple(logits.shape)}, "
            f"got shape {tuple(weight.shape)}"
        )
    weight = weight.to(device=logits.device, dtype=_compute_dtype(logits))
    if validate and not _compiling():
        low, high = torch.aminmax(weight.detach())  # NaN compares False below
        _check_values(
            (low >= 0) & (high < float("inf")),
            weight,
            lambda: "weight must hold finite values >= 0, got a negative or non-finite entry",
        )
    return weight


def _full_precision(z: Tensor):
    """Disable autocast so the loss is computed (and reduced) in float32 / float64."""
    if torch.is_autocast_enabled(z.device.type):
        return torch.autocast(device_type=z.device.type, enabled=False)
    return contextlib.nullcontext()


def _reduce(per_example: Tensor, reduction: str, normalizer: Tensor | int) -> Tensor:
    if reduction == "none":
        return per_example
    total = per_example.sum()
    if reduction == "sum":
        return total
    return total / normalizer


# ---------------------------------------------------------------------------
# Elementwise focal terms
# ---------------------------------------------------------------------------


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
    return _FocalElements.apply(z, t, gamma)


def _modulator(z: Tensor, t: Tensor, gamma: float) -> Tensor | float:
    if gamma == 0.0:
        return 1.0
    return torch.exp(gamma * (t * F.logsigmoid(-z) + (1.0 - t) * F.logsigmoid(z)))


#: elements per chunk of rows in the fused kernel: small enough to stay in cache
_CHUNK_ELEMENTS = 1 << 16


class _IndexFocal(torch.autograd.Function):
    """Per-example focal loss (``gamma = 0``: sigmoid CE) row sums for class-index targets.

    Eager: every logit is treated as a negative label (no one-hot matrix), in
    chunks of rows small enough to stay in cache; the single positive of each
    row is masked out and its own term added from an ``(N,)`` computation, so no
    large term is ever subtracted. The gradient is formed in the same pass into
    one ``(N, C)`` buffer, so backward is one scaling. Under ``torch.compile``
    the same loss and gradient come from :func:`_focal_terms` on the one-hot
    targets, which the compiler fuses into one kernel. With
    ``create_graph=True`` backward rebuilds the gradient from differentiable
    ops, so second derivatives equal those of one-hot targets.
    """

    @staticmethod
    def forward(ctx, z: Tensor, targets: Tensor, gamma: float) -> Tensor:
        index = targets.unsqueeze(1)
        if _compiling():
            per_example, grad = _index_focal_fused(z, index, gamma)
        else:
            per_example, grad = _index_focal_eager(z, index, gamma)
        ctx.gamma = gamma
        ctx.save_for_backward(z, targets, grad)
        return per_example

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        z, targets, grad = ctx.saved_tensors
        if torch.is_grad_enabled():  # double backward: a differentiable gradient
            grad = _focal_terms(z, _one_hot(z, targets.unsqueeze(1)), ctx.gamma)[1]
        return grad * grad_output.unsqueeze(1), None, None


def _one_hot(z: Tensor, index: Tensor) -> Tensor:
    """``(N, C)`` one-hot of ``index`` ``(N, 1)`` as a comparison (fused, never stored, when compiled)."""
    classes = torch.arange(z.shape[1], device=z.device)
    return (classes == index).to(z.dtype)


def _index_focal_fused(z: Tensor, index: Tensor, gamma: float) -> tuple[Tensor, Tensor]:
    """Loss rows and gradient for class indices as one pointwise expression (for the compiler).

    Every term is ``f(s) = P**gamma * softplus(s)`` of ``s = -z`` (positive) or ``s = z``
    (negative), ``P = sigmoid(s)``; with ``e = exp(-|z|)`` shared, ``softplus(s) =
    max(s, 0) + log1p(e)``, ``log P = min(s, 0) - log1p(e)``, ``P = 1 / (1 + e)`` or
    ``e / (1 + e)``: three transcendental functions per element, fused by the compiler
    into one pass that writes only the gradient.
    """
    positive = torch.arange(z.shape[1], device=z.device) == index
    s = torch.where(positive, -z, z)
    e = torch.exp(-s.abs())
    log1p_e = torch.log1p(e)
    softplus = s.clamp_min(0.0) + log1p_e
    r = 1.0 / (1.0 + e)
    p, q = torch.where(s >= 0, r, e * r), torch.where(s >= 0, e * r, r)
    if gamma == 0.0:
        loss, grad = softplus, p
    else:
        modulator = torch.exp(gamma * (s.clamp_max(0.0) - log1p_e))
        loss, grad = modulator * softplus, modulator * (gamma * q * softplus + p)
    return loss.sum(1), torch.where(positive, -grad, grad)


def _index_focal_eager(z: Tensor, index: Tensor, gamma: float) -> tuple[Tensor, Tensor]:
    n, c = z.shape
    grad = torch.empty_like(z)
    neg_rows = torch.empty(n, dtype=z.dtype, device=z.device)
    rows = max(1, _CHUNK_ELEMENTS // max(c, 1))
    for start in range(0, n, rows):
        chunk, stop = index[start : start + rows], min(start + rows, n)
        minus_loss, _ = _negative_terms(z[start:stop], gamma, grad[start:stop])
        torch.sum(minus_loss.scatter_(1, chunk, 0.0), dim=1, out=neg_rows[start:stop])
    # a positive's term is the negative-label term of -z, with the gradient's sign flipped
    minus_pos_loss, pos_grad = _negative_terms(z.gather(1, index).neg_(), gamma)
    grad.scatter_(1, index, pos_grad.neg_())
    return neg_rows.add_(minus_pos_loss.squeeze(1)).neg_(), grad


def _negative_terms(
    z: Tensor, gamma: float, grad_out: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Negative-label terms ``f(z) = p**gamma * softplus(z)``: returns ``-f(z)`` (one sign
    flip of the ``(N,)`` row sums saves one of the ``(N, C)`` terms) and the gradient
    ``f'(z) = p**gamma * (gamma * q * softplus(z) + p)``, written into ``grad_out`` if given."""
    neg_z = torch.neg(z)
    log_q = F.logsigmoid(neg_z)  # -softplus(z): exact for all z
    prob = torch.sigmoid(z)
    if gamma == 0.0:
        grad = prob if grad_out is None else grad_out.copy_(prob)
        return log_q, grad
    modulator = prob if gamma == 1.0 else prob.pow(gamma)
    q = neg_z.sigmoid_()  # 1 - p, exact where p ~ 1
    grad = torch.addcmul(prob, q, log_q, value=-gamma, out=grad_out).mul_(modulator)
    return log_q.mul_(modulator), grad


def _dense_row_weight(targets: Tensor, weight: Tensor) -> Tensor:
    """``(t_b @ w) / sum_j t_bj`` per example, ``mean(w)`` for rows without positives."""
    mass = targets.sum(1)
    has_labels = mass > 0
    safe_mass = torch.where(has_labels, mass, torch.ones_like(mass))
    return torch.where(has_labels, (targets * weight).sum(1) / safe_mass, weight.mean())


def _binary_loss(logits, targets, weight, gamma: float, reduction: str, validate: bool) -> Tensor:
    logits = _check_logits(logits)
    targets, dense = _check_targets(targets, logits, allow_dense=True, validate=validate)
    weight = _check_weight(weight, logits, validate)
    check_choice("reduction", reduction, REDUCTIONS)
    z = logits.to(_compute_dtype(logits))
    with _full_precision(z):
        if dense:
            per_example = focal_elements(z, targets, gamma).sum(1)
            row_weight = None if weight is None else _dense_row_weight(targets, weight)
            positives = targets.sum()
            normalizer = torch.where(positives > 0, positives, torch.ones_like(positives))
        else:
            per_example = _IndexFocal.apply(z.contiguous(), targets, gamma)
            row_weight = None if weight is None else weight[targets]
            normalizer = max(z.shape[0], 1)
        if row_weight is not None:
            per_example = per_example * row_weight
        return _reduce(per_example, reduction, normalizer)


# ---------------------------------------------------------------------------
# Public functional losses
# ---------------------------------------------------------------------------


def softmax_cross_entropy(
    logits: Tensor,
    targets: Tensor,
    weight: Tensor | None = None,
    *,
    reduction: str = "mean",
    validate_args: bool = True,
) -> Tensor:
    """Softmax cross-entropy weighted per example by the weight of its true class.

    ``loss_b = w[y_b] * (logsumexp(z_b) - z_{b, y_b})``; ``"mean"`` divides the sum
    by ``N`` (every example, also one whose weight is 0), ``"sum"`` sums,
    ``"none"`` returns ``(N,)``.

    Args:
        logits: ``(N, C)`` floating tensor (half precision is computed in float32).
        targets: ``(N,)`` integer class indices in ``[0, C)``.
        weight: optional ``(C,)`` non-negative per-class weights (default all
            ones); a weight that requires grad receives its gradient.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        validate_args: check the values of ``targets`` and ``weight`` (one
            host read each on the CPU); ``False`` skips these checks (shapes and
            types are always checked).

    Returns:
        A scalar (or ``(N,)`` for ``"none"``) in float32, float64 for float64 logits.

    >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    >>> softmax_cross_entropy(logits, torch.tensor([0, 1]), torch.tensor([1.0, 3.0]), reduction="none")
    tensor([0.1269, 0.9398])
    """
    logits = _check_logits(logits)
    targets, _ = _check_targets(targets, logits, allow_dense=False, validate=validate_args)
    weight = _check_weight(weight, logits, validate_args)
    check_choice("reduction", reduction, REDUCTIONS)
    z = logits.to(_compute_dtype(logits))
    with _full_precision(z):
        return _weighted_ce(z, targets, weight, reduction)


def _weighted_ce(z: Tensor, targets: Tensor, weight: Tensor | None, reduction: str) -> Tensor:
    """``w[y_b] * CE(z_b, y_b)`` reduced over ``N`` (inputs already validated)."""
    per_example = F.cross_entropy(z, targets, reduction="none")
    if weight is not None:
        per_example = per_example * weight[targets]
    return _reduce(per_example, reduction, max(z.shape[0], 1))


def sigmoid_cross_entropy(
    logits: Tensor,
    targets: Tensor,
    weight: Tensor | None = None,
    *,
    reduction: str = "mean",
    validate_args: bool = True,
) -> Tensor:
    """One-vs-all sigmoid cross-entropy over all ``C`` logits, weighted per example.

    ``loss_b = w_b * sum_j BCE(z_bj, t_bj)`` with ``BCE(z, t) = softplus(z) - t z``;
    ``"mean"`` divides the sum by the number of positive labels (``N`` for class
    indices, ``targets.sum()`` for multi-hot, 1 if there are none).

    Example weight ``w_b``: ``w[y_b]`` for class indices (the paper's rule); for
    multi-hot or soft targets ``w_b = (t_b @ w) / sum_j t_bj``, the mean weight
    of the example's labels, and ``mean(w)`` for an example without labels. So a
    one-hot row gets exactly ``w[y_b]``, equal weights ``c`` give ``c`` times
    the unweighted loss (``beta = 0`` gives the unweighted loss exactly), and
    neither an all-negative example (no class of its own) nor an example with
    many labels is silenced or multiplied by its label count.

    Args:
        logits: ``(N, C)`` floating tensor.
        targets: ``(N,)`` integer class indices, or ``(N, C)`` float multi-hot in ``[0, 1]``.
        weight: optional ``(C,)`` non-negative per-class weights (gradients
            flow to a weight that requires grad).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(N,)`` per-example sums).
        validate_args: see :func:`softmax_cross_entropy`.

    >>> sigmoid_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 2]))  # 3 * log(2)
    tensor(2.0794)
    """
    return _binary_loss(logits, targets, weight, 0.0, reduction, validate_args)


def sigmoid_focal_cross_entropy(
    logits: Tensor,
    targets: Tensor,
    weight: Tensor | None = None,
    *,
    gamma: float = DEFAULT_GAMMA,
    reduction: str = "mean",
    validate_args: bool = True,
) -> Tensor:
    """Sigmoid focal loss ``(1 - p_t)**gamma * BCE`` over all ``C`` logits, weighted per example.

    Same shapes, weighting and normalisation as :func:`sigmoid_cross_entropy`, to
    which it reduces at ``gamma = 0``. Unlike ``torchvision.ops.sigmoid_focal_loss``
    it takes class indices (or multi-hot), a per-class ``weight`` instead of
    ``alpha``, and ``"mean"`` divides by the number of positives. Finite and
    exact for every finite logit and every ``gamma >= 0`` (also its gradient
    for ``gamma < 1``): a positive label with logit ``-100`` contributes ``100``
    at ``gamma = 1``, not ``0``.

    >>> sigmoid_focal_cross_entropy(torch.tensor([[-100.0]]), torch.tensor([0]), gamma=1.0)
    tensor(100.)
    """
    gamma = check_gamma(gamma)
    return _binary_loss(logits, targets, weight, gamma, reduction, validate_args)


def _apply(loss_type: str, logits, targets, weight, gamma: float, reduction: str, validate: bool):
    if loss_type == "softmax":
        return softmax_cross_entropy(
            logits, targets, weight, reduction=reduction, validate_args=validate
        )
    return _binary_loss(
        logits, targets, weight, gamma if loss_type == "focal" else 0.0, reduction, validate
    )


def class_balanced_loss(
    logits: Tensor,
    targets: Tensor,
    samples_per_class,
    *,
    beta: float,
    loss_type: str,
    gamma: float = DEFAULT_GAMMA,
    reduction: str = "mean",
    validate_args: bool = True,
) -> Tensor:
    """Class-balanced loss: ``loss_type`` re-weighted by ``(1 - beta) / (1 - beta**n_y)``.

    The per-class weights are :func:`classbalanced.weights.class_balanced_weights`
    (normalised to sum to ``C``); each example is weighted by its true class's
    weight (Cui et al., 2019, eq. 6-9). ``beta = 0`` gives the unweighted loss.

    Args:
        logits: ``(N, C)``; targets: ``(N,)`` class indices (or ``(N, C)`` multi-hot
            for ``"sigmoid"`` / ``"focal"``, weighted as in :func:`sigmoid_cross_entropy`);
        samples_per_class: ``(C,)`` counts > 0 (list, numpy array or tensor);
        beta: in ``[0, 1)``; loss_type: ``"softmax"``, ``"sigmoid"`` or ``"focal"``;
        gamma: focal exponent ``>= 0`` (``"focal"`` only); reduction: ``"mean"``,
            ``"sum"`` or ``"none"``; validate_args: see :func:`softmax_cross_entropy`.

    >>> logits = torch.tensor([[1.0, -1.0], [0.5, 0.5]])
    >>> class_balanced_loss(logits, torch.tensor([0, 1]), [100, 10], beta=0.0, loss_type="softmax")
    tensor(0.4100)
    """
    check_choice("loss_type", loss_type, LOSS_TYPES)
    gamma = check_gamma(gamma)
    logits = _check_logits(logits)
    weight = class_balanced_weights(samples_per_class, beta)
    _check_num_classes(weight.shape[0], logits)
    weight = weight.to(logits.device)
    return _apply(loss_type, logits, targets, weight, gamma, reduction, validate_args)


def _check_num_classes(num_counts: int, logits: Tensor) -> None:
    if num_counts != logits.shape[1]:
        raise ValueError(
            f"samples_per_class must have one count per class: expected {logits.shape[1]} counts "
            f"for logits {tuple(logits.shape)}, got {num_counts}"
        )


# ---------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------


def _as_weight(weight: object) -> Tensor:
    """A ``(C,)`` float32 CPU copy of per-class weights, checked finite and >= 0."""
    if not isinstance(weight, Tensor):
        raise TypeError(
            f"weight must be a tensor of shape (C,) or None, got {type(weight).__name__}"
        )
    weight = weight.detach().to(dtype=torch.float32)
    if weight.dim() != 1 or not bool(torch.isfinite(weight).all()) or bool((weight < 0).any()):
        raise ValueError(
            f"weight must be a 1-D tensor of finite values >= 0, got shape {tuple(weight.shape)}"
        )
    return weight


class ClassWeightBuffers(nn.Module):
    """Base of the loss modules: float32 buffers that keep their dtype.

    ``weight`` (``(C,)`` or ``None``) and any count buffers move with ``.to()`` /
    ``.cuda()`` and are saved in the ``state_dict``, but module dtype casts
    (``.half()``, ``.to(torch.bfloat16)``, ``.double()``) leave them float32, so
    counts above 65504 or weights such as 0.1893 are never rounded. Replace the
    weights with :meth:`set_weight` (re-weighting schedules).
    """

    def _apply(self, fn, recurse=True):
        originals = dict(self._buffers)
        super()._apply(fn, recurse)
        for name, original in originals.items():
            moved = self._buffers[name]
            if original is not None and moved is not None and moved.dtype != original.dtype:
                self._buffers[name] = original.to(moved.device)  # follow the device only
        return self

    def set_weight(self, weight: Tensor | None) -> None:
        """Replace the per-class weights (``None`` = unweighted), keeping the buffers' device."""
        if weight is None:
            self.weight = None
            return
        weight = _as_weight(weight)
        expected = self._num_weights()
        if expected is not None and weight.shape[0] != expected:
            raise ValueError(f"weight must have shape ({expected},), got {tuple(weight.shape)}")
        self.weight = weight.to(self._buffer_device())

    def _num_weights(self) -> int | None:
        return None if self.weight is None else int(self.weight.shape[0])

    def _buffer_device(self) -> torch.device:
        for buf in self._buffers.values():
            if buf is not None:
                return buf.device
        return torch.device("cpu")


class WeightedLoss(ClassWeightBuffers):
    """Softmax / sigmoid / focal loss with optional per-class weights held as a buffer.

    ``weight`` (``(C,)`` or ``None``) moves with ``.to()``, keeps float32 under
    dtype casts and is saved in the ``state_dict``; replace it with
    :meth:`set_weight` to schedule re-weighting. ``uses_prior_bias`` tells a
    trainer whether the classifier bias should start at :func:`prior_bias`
    (sigmoid-based losses) without branching on names.

    >>> loss = WeightedLoss("focal", gamma=2.0)
    >>> loss(torch.zeros(1, 2), torch.tensor([1]))  # 2 * 0.5**2 * log(2)
    tensor(0.3466)
    """

    def __init__(
        self,
        loss_type: str,
        weight: Tensor | None = None,
        *,
        gamma: float = DEFAULT_GAMMA,
        reduction: str = "mean",
        validate_args: bool = True,
    ) -> None:
        super().__init__()
        self.loss_type = check_choice("loss_type", loss_type, LOSS_TYPES)
        self.gamma = check_gamma(gamma)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.validate_args = bool(validate_args)
        self.register_buffer("weight", None if weight is None else _as_weight(weight))

    @property
    def uses_prior_bias(self) -> bool:
        return self.loss_type in ("sigmoid", "focal")

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return _apply(
            self.loss_type,
            logits,
            targets,
            self.weight,
            self.gamma,
            self.reduction,
            self.validate_args,
        )

    def extra_repr(self) -> str:
        gamma = f", gamma={self.gamma}" if self.loss_type == "focal" else ""
        return f"loss_type={self.loss_type!r}{gamma}, reduction={self.reduction!r}"


class ClassBalancedLoss(WeightedLoss):
    """Module form of :func:`class_balanced_loss`; the class weights are a buffer.

    Args:
        samples_per_class: ``(C,)`` training counts per class, each > 0.
        beta: in ``[0, 1)``; loss_type: ``"softmax"``, ``"sigmoid"`` or ``"focal"``;
        gamma: focal exponent ``>= 0``; reduction: ``"mean"``, ``"sum"``, ``"none"``;
        validate_args: see :func:`softmax_cross_entropy`.

    ``set_beta`` recomputes the weights (e.g. for deferred re-weighting).
    ``samples_per_class`` and ``weight`` are float32 buffers that keep their
    dtype under ``.half()`` / ``.to(torch.bfloat16)``.

    >>> loss = ClassBalancedLoss([100, 10], beta=0.999, loss_type="focal", gamma=0.5)
    >>> loss.weight
    tensor([0.1893, 1.8107])
    """

    def __init__(
        self,
        samples_per_class,
        *,
        beta: float,
        loss_type: str,
        gamma: float = DEFAULT_GAMMA,
        reduction: str = "mean",
        validate_args: bool = True,
    ) -> None:
        counts = as_counts(samples_per_class)
        self.beta = check_beta(beta)
        super().__init__(
            loss_type,
            class_balanced_weights(counts, self.beta),
            gamma=gamma,
            reduction=reduction,
            validate_args=validate_args,
        )
        self.register_buffer("samples_per_class", counts.to(torch.float32))

    def set_beta(self, beta: float) -> None:
        """Recompute the class weights for a new ``beta``."""
        self.beta = check_beta(beta)
        self.set_weight(class_balanced_weights(self.samples_per_class.double().cpu(), self.beta))

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        logits = _check_logits(logits)
        _check_num_classes(self.samples_per_class.shape[0], logits)
        return super().forward(logits, targets)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, " + super().extra_repr()


# ---------------------------------------------------------------------------
# Registry: names -> loss builders
# ---------------------------------------------------------------------------


#: Loss names -> ``build(samples_per_class, *, beta, gamma, reduction, **options)``;
#: a builder's further public keyword-only parameters (with defaults) are the loss's own
#: options, settable as ``loss_options`` in a config (``--loss-option KEY=VALUE``).
_REGISTRY: Registry[Callable[..., nn.Module]] = Registry("loss")
_COMMON_ARGS = ("beta", "gamma", "reduction")


def register_loss(name: str, build: Callable[..., nn.Module], description: str = "") -> None:
    """Register ``build(samples_per_class, *, beta, gamma, reduction, **options) -> nn.Module`` as ``name``."""
    _REGISTRY.register(name, build, description=description)


def available_losses() -> list[str]:
    """Names accepted by :func:`build_loss` (and the CLI's ``--loss``)."""
    return sorted(_REGISTRY)


def loss_options(name: str) -> dict[str, Any]:
    """The options of loss ``name`` beyond beta / gamma / reduction, with their defaults.

    >>> loss_options("ldam"), loss_options("softmax")
    ({'max_m': 0.5, 's': 30.0}, {})
    """
    check_choice("loss", name, available_losses())
    build = _REGISTRY[name]
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
    reduction: str = "mean",
    **options: Any,
) -> nn.Module:
    """Build the registered loss ``name`` for the given training counts.

    ``options`` are the loss's own settings (:func:`loss_options`), e.g. LDAM's ``max_m``.

    >>> build_loss("focal", [50, 5], beta=0.9, gamma=2.0)
    ClassBalancedLoss(beta=0.9, loss_type='focal', gamma=2.0, reduction='mean')
    >>> build_loss("ldam", [50, 5], max_m=0.3)
    LDAMLoss(num_classes=2, max_m=0.3, s=30.0, reduction='mean', weighted=False)
    """
    check_choice("loss", name, available_losses())
    build = _REGISTRY[name]
    unknown = sorted(set(options) - set(loss_options(name)))
    if unknown:
        valid = ", ".join(loss_options(name)) or "none"
        raise ValueError(
            f"loss {name!r} has no option {', '.join(unknown)}: expected one of: {valid}"
        )
    return build(samples_per_class, beta=beta, gamma=gamma, reduction=reduction, **options)


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


# ---------------------------------------------------------------------------
# Classifier-bias prior (Cui et al., 2019, section 4.3) and weight-decay groups
# ---------------------------------------------------------------------------


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


def init_prior_bias_(linear: nn.Linear, prior=None) -> nn.Linear:
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


_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def parameter_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    no_decay: Iterable[Tensor | str] = (),
    bias_and_norm: bool = False,
) -> list[dict]:
    """Split trainable parameters into a weight-decay group and a no-decay group.

    Args:
        model: the network.
        weight_decay: decay of the first group (the second has 0).
        no_decay: parameters (or their names in ``model.named_parameters()``)
            to exclude, e.g. ``[model.fc.bias]`` for sigmoid/focal losses.
        bias_and_norm: also exclude every bias and all normalisation-layer
            parameters (the ImageNet/iNaturalist recipe).

    Returns:
        ``[{"params": [...], "weight_decay": weight_decay}, {"params": [...], "weight_decay": 0.0}]``
        for ``torch.optim`` (an empty group is kept so indices are stable).

    >>> net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Linear(2, 3))
    >>> groups = parameter_groups(net, 1e-4, no_decay=[net[2].bias])
    >>> [len(g["params"]) for g in groups]
    [5, 1]
    >>> [len(g["params"]) for g in parameter_groups(net, 1e-4, bias_and_norm=True)]
    [2, 4]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    excluded_ids = set()
    names = dict(model.named_parameters())
    for item in no_decay:
        if isinstance(item, str):
            if item not in names:
                raise ValueError(f"no_decay names an unknown parameter {item!r}")
            excluded_ids.add(id(names[item]))
        elif isinstance(item, Tensor):
            excluded_ids.add(id(item))
        else:
            raise TypeError(
                f"no_decay entries must be parameters or names, got {type(item).__name__}"
            )
    if bias_and_norm:
        for module in model.modules():
            for pname, param in module.named_parameters(recurse=False):
                if isinstance(module, _NORM_TYPES) or pname == "bias":
                    excluded_ids.add(id(param))
    decay, skip = [], []
    for param in model.parameters():
        if param.requires_grad:
            (skip if id(param) in excluded_ids else decay).append(param)
    return [
        {"params": decay, "weight_decay": float(weight_decay)},
        {"params": skip, "weight_decay": 0.0},
    ]
