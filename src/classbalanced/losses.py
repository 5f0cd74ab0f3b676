"""Weighted softmax / sigmoid / focal losses, the class-balanced loss, and its helpers.

Functional core first, thin ``nn.Module`` wrappers after, then the registry
that maps loss names to modules, then the classifier-bias prior and the
weight-decay parameter groups (REFERENCE sections 2 and 3).

Semantics (batch of ``N`` examples, ``C`` classes, per-class weight ``w``):

* softmax: ``L = (1/N) * sum_b w[y_b] * CE(softmax(z_b), y_b)`` (the mean divides
  by ``N``, not by the sum of weights, as TF1's weighted cross-entropy did);
* sigmoid: ``L = sum_{b,j} w[y_b] * BCE(z_bj, t_bj) / #positives``;
* focal: ``L = sum_{b,j} w[y_b] * (1 - p_t)**gamma * BCE(z_bj, t_bj) / #positives``
  with ``p_t = sigmoid(z)`` for ``t = 1`` and ``1 - sigmoid(z)`` for ``t = 0``.

Everything is computed in log space (``log1p(exp(-|z|))``), so the loss and its
gradient are finite and exact for every finite logit, in float32 (float64 for
float64 logits) whatever the logits' precision: half-precision logits are
up-cast, so results match float32 at any logit magnitude.
"""

from __future__ import annotations

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
    "softmax_cross_entropy",
    "sigmoid_cross_entropy",
    "sigmoid_focal_loss",
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


def _check_index_targets(targets: Tensor, logits: Tensor) -> Tensor:
    n, c = logits.shape
    if targets.dim() != 1 or targets.shape[0] != n:
        raise ValueError(
            f"class-index targets must have shape (N,) = ({n},) to match logits {tuple(logits.shape)}, "
            f"got shape {tuple(targets.shape)}"
        )
    if not _compiling() and n > 0:
        low, high = torch.aminmax(targets)
        if _host_checks(targets):
            low, high = int(low), int(high)
            if low < 0 or high >= c:
                bad = low if low < 0 else high
                raise ValueError(f"targets must be class indices in [0, {c - 1}], got {bad}")
        else:  # accelerators: checked on the device, no host synchronisation per step
            torch._assert_async(
                (low >= 0) & (high < c), f"targets must be class indices in [0, {c - 1}]"
            )
    return targets.long()


def _host_checks(tensor: Tensor) -> bool:
    """Data-dependent checks read values on the host only for CPU tensors (no GPU sync)."""
    return tensor.device.type == "cpu"


def _check_dense_targets(targets: Tensor, logits: Tensor) -> Tensor:
    if targets.shape != logits.shape:
        raise ValueError(
            f"multi-hot targets must have the logits' shape {tuple(logits.shape)}, got shape {tuple(targets.shape)}"
        )
    dense = targets.to(_compute_dtype(logits))
    if not _compiling() and dense.numel() > 0:
        low, high = float(dense.min()), float(dense.max())
        if not (0.0 <= low and high <= 1.0):
            raise ValueError(f"multi-hot targets must lie in [0, 1], got values in [{low}, {high}]")
    return dense


def _check_targets(targets: object, logits: Tensor, *, allow_dense: bool) -> tuple[Tensor, bool]:
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
        return _check_index_targets(targets, logits), False
    if not allow_dense:
        raise TypeError(
            f"targets must be int64 class indices of shape (N,), got dtype {targets.dtype}"
        )
    if targets.dim() != 2:
        raise TypeError(
            "targets must be int64 class indices of shape (N,) or float multi-hot of shape (N, C), "
            f"got dtype {targets.dtype} with shape {tuple(targets.shape)}"
        )
    return _check_dense_targets(targets, logits), True


def _check_weight(weight: object, logits: Tensor) -> Tensor | None:
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
    weight = weight.detach().to(device=logits.device, dtype=_compute_dtype(logits))
    if not _compiling():
        low, high = torch.aminmax(weight)  # NaN compares False below
        valid = (low >= 0) & (high < float("inf"))
        if not _host_checks(weight):
            torch._assert_async(valid, "weight must hold finite values >= 0")
        elif not bool(valid):
            raise ValueError(
                "weight must hold finite values >= 0, got a negative or non-finite entry"
            )
    return weight


def _full_precision(z: Tensor):
    """Disable autocast so the loss is computed (and reduced) in float32 / float64."""
    return torch.autocast(device_type=z.device.type, enabled=False)


def _reduce(per_example: Tensor, reduction: str, normalizer: Tensor | int) -> Tensor:
    if reduction == "none":
        return per_example
    total = per_example.sum()
    if reduction == "sum":
        return total
    return total / normalizer


# ---------------------------------------------------------------------------
# Elementwise focal term of a NEGATIVE label and its derivative
# ---------------------------------------------------------------------------


def _negative_focal_terms(z: Tensor, gamma: float) -> tuple[Tensor, Tensor]:
    """Loss ``f(z) = sigmoid(z)**gamma * softplus(z)`` of a NEGATIVE label and ``f'(z)``.

    A positive label's term is ``f(-z)`` with derivative ``-f'(-z)``.
    ``f'(z) = p**gamma * (gamma * (1 - p) * softplus(z) + p)`` with ``p = sigmoid(z)``:
    no negative power of ``p`` appears, so ``gamma < 1`` keeps the gradient finite.
    (Where ``1 - p`` loses relative precision, ``p ~ 1`` dominates the sum.)
    """
    softplus = F.softplus(z)  # -log(1 - p): the BCE of a negative label, exact for all z
    prob = torch.sigmoid(z)
    modulator = _modulator(prob, gamma)
    grad = _focal_grad(prob, softplus, modulator, gamma)
    loss = softplus if modulator is None else modulator * softplus
    return loss, grad


def _modulator(prob: Tensor, gamma: float) -> Tensor | None:
    """``p ** gamma`` (``None`` for gamma = 0); computed without any negative power."""
    if gamma == 0.0:
        return None
    if gamma == 1.0:
        return prob
    return prob.pow(gamma)


def _focal_grad(prob: Tensor, softplus: Tensor, modulator: Tensor | None, gamma: float) -> Tensor:
    if modulator is None:
        return prob.clone()
    inner = torch.addcmul(prob, torch.rsub(prob, 1.0), softplus, value=gamma)
    return inner.mul_(modulator)


#: elements per chunk of rows in the fused kernel: small enough to stay in cache
_CHUNK_ELEMENTS = 1 << 16


class _IndexTargetFocal(torch.autograd.Function):
    """Per-example weighted focal loss (``gamma = 0``: sigmoid CE) for class-index targets.

    Every logit is treated as a negative label (no one-hot matrix, no per-element
    weights), in chunks of rows small enough to stay in cache; the single positive
    of each row is masked out and its own term added from an ``(N,)``
    computation, so no large term is ever subtracted. The gradient is formed in
    the same pass into one ``(N, C)`` buffer: backward is a single scaling.
    """

    @staticmethod
    def forward(ctx, z: Tensor, targets: Tensor, row_weight: Tensor | None, gamma: float) -> Tensor:
        n, c = z.shape
        index = targets.unsqueeze(1)
        grad = torch.empty_like(z)
        per_example = torch.empty(n, dtype=z.dtype, device=z.device)
        rows = max(1, _CHUNK_ELEMENTS // max(c, 1))
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            _focal_chunk(
                z[start:stop], index[start:stop], gamma, grad[start:stop], per_example[start:stop]
            )
        pos_loss, pos_grad = _negative_focal_terms(-z.gather(1, index), gamma)
        grad.scatter_(1, index, pos_grad.neg_())
        per_example.add_(pos_loss.squeeze(1))
        if row_weight is not None:
            per_example.mul_(row_weight)
        ctx.save_for_backward(grad, row_weight)
        return per_example

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        grad, row_weight = ctx.saved_tensors
        scale = grad_output if row_weight is None else grad_output * row_weight
        return grad * scale.unsqueeze(1), None, None, None


def _focal_chunk(
    z: Tensor, index: Tensor, gamma: float, grad_out: Tensor, loss_out: Tensor
) -> None:
    """Negative-label focal terms of a chunk of rows: gradient into ``grad_out``,
    row sums without the positive entries into ``loss_out``."""
    softplus = F.logsigmoid(-z).neg_()  # softplus(z) = -log(1 - p): exact for all z
    if gamma == 0.0:
        torch.sigmoid(z, out=grad_out)
        torch.sum(softplus.scatter_(1, index, 0.0), dim=1, out=loss_out)
        return
    prob = torch.sigmoid(z)
    modulator = prob if gamma == 1.0 else prob.pow(gamma)
    # grad = p**gamma * (gamma * (1 - p) * softplus + p)
    torch.mul(softplus, prob, out=grad_out).sub_(softplus).mul_(-gamma).add_(prob).mul_(modulator)
    torch.sum(softplus.mul_(modulator).scatter_(1, index, 0.0), dim=1, out=loss_out)


def _dense_focal(z: Tensor, targets: Tensor, gamma: float) -> Tensor:
    """Focal (gamma = 0: BCE) terms for float targets in [0, 1], shape (N, C), via autograd.

    ``BCE = -(t log p + (1 - t) log(1 - p))``; the modulator ``(1 - p_t)**gamma`` is
    ``exp(gamma * (t log(1 - p) + (1 - t) log p))``, which equals the release's
    ``exp(-gamma t z - gamma log1p(exp(-z)))`` without its overflow.
    """
    log_p = F.logsigmoid(z)
    log_not_p = F.logsigmoid(-z)
    bce = -(targets * log_p + (1.0 - targets) * log_not_p)
    if gamma == 0.0:
        return bce
    return torch.exp(gamma * (targets * log_not_p + (1.0 - targets) * log_p)) * bce


def _binary_loss(logits, targets, weight, gamma: float, reduction: str) -> Tensor:
    logits = _check_logits(logits)
    targets, dense = _check_targets(targets, logits, allow_dense=True)
    weight = _check_weight(weight, logits)
    check_choice("reduction", reduction, REDUCTIONS)
    z = logits.to(_compute_dtype(logits))
    with _full_precision(z):
        if dense:
            row_weight = None if weight is None else (targets * weight).sum(dim=1)
            per_example = _dense_focal(z, targets, gamma).sum(dim=1)
            if row_weight is not None:
                per_example = per_example * row_weight
            positives = targets.sum()
            normalizer = torch.where(positives > 0, positives, torch.ones_like(positives))
        else:
            row_weight = None if weight is None else weight[targets]
            per_example = _IndexTargetFocal.apply(z.contiguous(), targets, row_weight, gamma)
            normalizer = max(z.shape[0], 1)
        return _reduce(per_example, reduction, normalizer)


# ---------------------------------------------------------------------------
# Public functional losses
# ---------------------------------------------------------------------------


def softmax_cross_entropy(
    logits: Tensor, targets: Tensor, weight: Tensor | None = None, *, reduction: str = "mean"
) -> Tensor:
    """Softmax cross-entropy weighted per example by the weight of its true class.

    ``loss_b = w[y_b] * (logsumexp(z_b) - z_{b, y_b})``; ``"mean"`` divides the sum
    by ``N`` (not by the sum of weights), ``"sum"`` sums, ``"none"`` returns ``(N,)``.

    Args:
        logits: ``(N, C)`` floating tensor (half precision is computed in float32).
        targets: ``(N,)`` integer class indices in ``[0, C)``.
        weight: optional ``(C,)`` non-negative per-class weights (default all ones).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        A scalar (or ``(N,)`` for ``"none"``) in float32, float64 for float64 logits.

    >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    >>> softmax_cross_entropy(logits, torch.tensor([0, 1]), torch.tensor([1.0, 3.0]), reduction="none")
    tensor([0.1269, 0.9398])
    """
    logits = _check_logits(logits)
    targets, _ = _check_targets(targets, logits, allow_dense=False)
    weight = _check_weight(weight, logits)
    check_choice("reduction", reduction, REDUCTIONS)
    z = logits.to(_compute_dtype(logits))
    with _full_precision(z):
        per_example = F.cross_entropy(z, targets, reduction="none")
        if weight is not None:
            per_example = per_example * weight[targets]
        return _reduce(per_example, reduction, max(z.shape[0], 1))


def sigmoid_cross_entropy(
    logits: Tensor, targets: Tensor, weight: Tensor | None = None, *, reduction: str = "mean"
) -> Tensor:
    """One-vs-all sigmoid cross-entropy over all ``C`` logits, weighted per example.

    ``loss_b = w_b * sum_j BCE(z_bj, t_bj)`` with ``BCE(z, t) = softplus(z) - t z``;
    ``"mean"`` divides the sum by the number of positive labels (``N`` for class
    indices, ``targets.sum()`` for multi-hot, 1 if there are none).

    Args:
        logits: ``(N, C)`` floating tensor.
        targets: ``(N,)`` integer class indices, or ``(N, C)`` float multi-hot in
            ``[0, 1]``; for multi-hot the example weight is ``w_b = t_b @ weight``
            (the weight of the true class for one-hot rows).
        weight: optional ``(C,)`` non-negative per-class weights.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(N,)`` per-example sums).

    >>> sigmoid_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 2]))  # 3 * log(2)
    tensor(2.0794)
    """
    return _binary_loss(logits, targets, weight, 0.0, reduction)


def sigmoid_focal_loss(
    logits: Tensor,
    targets: Tensor,
    weight: Tensor | None = None,
    *,
    gamma: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """Sigmoid focal loss ``(1 - p_t)**gamma * BCE`` over all ``C`` logits, weighted per example.

    Same shapes, weighting and normalisation as :func:`sigmoid_cross_entropy`, to
    which it reduces at ``gamma = 0``. Finite and exact for every finite logit and
    every ``gamma >= 0`` (also its gradient for ``gamma < 1``): a positive label
    with logit ``-100`` contributes ``100`` at ``gamma = 1``, not ``0``.

    >>> sigmoid_focal_loss(torch.tensor([[-100.0]]), torch.tensor([0]), gamma=1.0)
    tensor(100.)
    """
    gamma = check_gamma(gamma)
    return _binary_loss(logits, targets, weight, gamma, reduction)


def _loss_function(loss_type: str) -> Callable[..., Tensor]:
    check_choice("loss_type", loss_type, LOSS_TYPES)
    return _FUNCTIONS[loss_type]


def _apply(loss_type: str, logits, targets, weight, gamma: float, reduction: str) -> Tensor:
    fn = _loss_function(loss_type)
    if loss_type == "focal":
        return fn(logits, targets, weight, gamma=gamma, reduction=reduction)
    return fn(logits, targets, weight, reduction=reduction)


def class_balanced_loss(
    logits: Tensor,
    targets: Tensor,
    samples_per_class,
    *,
    beta: float,
    loss_type: str,
    gamma: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """Class-balanced loss: ``loss_type`` re-weighted by ``(1 - beta) / (1 - beta**n_y)``.

    The per-class weights are :func:`classbalanced.weights.class_balanced_weights`
    (normalised to sum to ``C``); each example is weighted by its true class's
    weight (REFERENCE section 2). ``beta = 0`` gives the unweighted loss.

    Args:
        logits: ``(N, C)``; targets: ``(N,)`` class indices (or ``(N, C)`` multi-hot
            for ``"sigmoid"`` / ``"focal"``); samples_per_class: ``(C,)`` counts > 0;
        beta: in ``[0, 1)``; loss_type: ``"softmax"``, ``"sigmoid"`` or ``"focal"``;
        gamma: focal exponent ``>= 0`` (``"focal"`` only); reduction: ``"mean"``,
            ``"sum"`` or ``"none"``.

    >>> logits = torch.tensor([[1.0, -1.0], [0.5, 0.5]])
    >>> class_balanced_loss(logits, torch.tensor([0, 1]), [100, 10], beta=0.0, loss_type="softmax")
    tensor(0.4100)
    """
    check_choice("loss_type", loss_type, LOSS_TYPES)
    gamma = check_gamma(gamma)
    logits = _check_logits(logits)
    weight = class_balanced_weights(samples_per_class, beta)
    if weight.shape[0] != logits.shape[1]:
        raise ValueError(
            f"samples_per_class must have one count per class: expected {logits.shape[1]} counts "
            f"for logits {tuple(logits.shape)}, got {weight.shape[0]}"
        )
    return _apply(loss_type, logits, targets, weight.to(logits.device), gamma, reduction)


_FUNCTIONS: dict[str, Callable[..., Tensor]] = {
    "softmax": softmax_cross_entropy,
    "sigmoid": sigmoid_cross_entropy,
    "focal": sigmoid_focal_loss,
}


# ---------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------


class WeightedLoss(nn.Module):
    """Softmax / sigmoid / focal loss with optional per-class weights held as a buffer.

    ``weight`` (``(C,)`` or ``None``) moves with ``.to()`` and is saved in the
    ``state_dict``; replace it with :meth:`set_weight` to schedule re-weighting.
    ``uses_prior_bias`` tells a trainer whether the classifier bias should start
    at :func:`prior_bias` (sigmoid-based losses) without branching on names.

    >>> loss = WeightedLoss("focal", gamma=2.0)
    >>> loss(torch.zeros(1, 2), torch.tensor([1]))  # 2 * 0.5**2 * log(2)
    tensor(0.3466)
    """

    def __init__(
        self,
        loss_type: str,
        weight: Tensor | None = None,
        *,
        gamma: float = 1.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.loss_type = check_choice("loss_type", loss_type, LOSS_TYPES)
        self.gamma = check_gamma(gamma)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.register_buffer("weight", None if weight is None else self._as_weight(weight))

    @staticmethod
    def _as_weight(weight: Tensor) -> Tensor:
        weight = torch.as_tensor(weight, dtype=torch.float32)
        if weight.dim() != 1 or not bool(torch.isfinite(weight).all()) or bool((weight < 0).any()):
            raise ValueError(
                f"weight must be a 1-D tensor of finite values >= 0, got shape {tuple(weight.shape)}"
            )
        return weight

    @property
    def uses_prior_bias(self) -> bool:
        return self.loss_type in ("sigmoid", "focal")

    def set_weight(self, weight: Tensor | None) -> None:
        """Replace the per-class weights (``None`` = unweighted), keeping the device."""
        if weight is None:
            self.weight = None
            return
        weight = self._as_weight(weight)
        if self.weight is not None:
            if weight.shape != self.weight.shape:
                raise ValueError(
                    f"weight must have shape {tuple(self.weight.shape)}, got {tuple(weight.shape)}"
                )
            weight = weight.to(self.weight.device)
        self.weight = weight

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return _apply(self.loss_type, logits, targets, self.weight, self.gamma, self.reduction)

    def extra_repr(self) -> str:
        gamma = f", gamma={self.gamma}" if self.loss_type == "focal" else ""
        return f"loss_type={self.loss_type!r}{gamma}, reduction={self.reduction!r}"


class ClassBalancedLoss(WeightedLoss):
    """Module form of :func:`class_balanced_loss`; the class weights are a buffer.

    Args:
        samples_per_class: ``(C,)`` training counts per class, each > 0.
        beta: in ``[0, 1)``; loss_type: ``"softmax"``, ``"sigmoid"`` or ``"focal"``;
        gamma: focal exponent ``>= 0``; reduction: ``"mean"``, ``"sum"``, ``"none"``.

    ``set_beta`` recomputes the weights (e.g. for deferred re-weighting).

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
        gamma: float = 1.0,
        reduction: str = "mean",
    ) -> None:
        counts = as_counts(samples_per_class)
        self.beta = check_beta(beta)
        super().__init__(
            loss_type, class_balanced_weights(counts, self.beta), gamma=gamma, reduction=reduction
        )
        self.register_buffer("samples_per_class", counts.to(torch.float32))

    def set_beta(self, beta: float) -> None:
        """Recompute the class weights for a new ``beta``."""
        self.beta = check_beta(beta)
        self.set_weight(class_balanced_weights(self.samples_per_class.double().cpu(), self.beta))

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        logits = _check_logits(logits)
        if logits.shape[1] != self.samples_per_class.shape[0]:
            raise ValueError(
                f"samples_per_class must have one count per class: expected {logits.shape[1]} counts "
                f"for logits {tuple(logits.shape)}, got {self.samples_per_class.shape[0]}"
            )
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
    gamma: float = 1.0,
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
        lambda counts, *, beta, gamma, reduction, _t=_name: ClassBalancedLoss(
            counts, beta=beta, loss_type=_t, gamma=gamma, reduction=reduction
        ),
        f"class-balanced {_text} (beta = 0: unweighted)",
    )


# ---------------------------------------------------------------------------
# Classifier-bias prior and weight-decay groups (REFERENCE section 3)
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
