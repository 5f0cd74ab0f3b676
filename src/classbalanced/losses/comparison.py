"""Later long-tailed losses to compare the class-balanced loss against.

Three softmax losses that use the training counts ``n_j`` (``(C,)``, each > 0)
instead of (or as well as) per-class weights; batch of ``N`` examples, ``C``
classes, logits ``z`` of shape ``(N, C)``, class-index targets ``y``:

* **LDAM** (Cao et al., NeurIPS 2019, "Learning Imbalanced Datasets with
  Label-Distribution-Aware Margin Loss"): per-class margin
  ``Delta_j = C_m / n_j ** (1/4)`` with ``C_m`` chosen so that the largest margin
  (the rarest class) equals ``max_m``, i.e. ``Delta_j = max_m * (min_k n_k / n_j) ** (1/4)``;
  ``loss_b = CE(s * (z_b - Delta_{y_b} * onehot(y_b)), y_b)``.
* **Logit-adjusted loss** (Menon et al., ICLR 2021, "Long-tail learning via logit
  adjustment"): ``loss_b = CE(z_b + tau * log(pi), y_b)`` with class priors
  ``pi_j = n_j / sum_k n_k``; at prediction time :func:`post_hoc_logit_adjustment`
  gives ``z - tau * log(pi)`` instead (for a model trained with plain CE).
* **Balanced softmax** (Ren et al., NeurIPS 2020, "Balanced Meta-Softmax for
  Long-Tailed Visual Recognition"): ``loss_b = CE(z_b + log(n), y_b)``, which is
  the logit-adjusted loss with ``tau = 1``: ``log(n) = log(pi) + log(sum n)``
  and a constant added to every logit of a row cancels inside the softmax.

Every loss takes optional per-class weights ``w`` (``(C,)``, finite, >= 0) applied
per example as ``w[y_b] * loss_b`` (e.g. deferred re-weighting, "DRW"), and the
reductions of :func:`classbalanced.losses.softmax_cross_entropy`: ``"mean"``
divides the weighted sum by ``N`` (the convention used throughout this
library), NOT by ``sum_b w[y_b]`` as ``torch.nn.functional.cross_entropy(weight=...)``
(and hence the LDAM authors' PyTorch code) does; ``"sum"`` sums and ``"none"``
returns the ``(N,)`` per-example losses. Without weights the two means agree.

Each is the cross-entropy of the adjusted logits ``x`` in the compute dtype (float32,
float64 for float64 logits; half-precision logits are up-cast, autocast is disabled
inside), computed by :func:`~classbalanced.losses.softmax.softmax_ce_rows`: finite for
every finite logit, and exact to a few ulps of ``CE(x, y)`` and its gradient however
wide the margin of the true class. LDAM's shifted logits are formed in the dtype; the
prior offsets of the logit-adjusted loss and balanced softmax are never rounded into the
logits (a :class:`~classbalanced.losses.softmax.ClassShift`: the kernel multiplies each
term by the exact count ratio), so those two are exact for the exact offsets.

The modules (:class:`LDAMLoss`, :class:`LogitAdjustedLoss`,
:class:`BalancedSoftmaxLoss`) keep the counts and the optional weights as buffers,
replace the weights with ``set_weight`` (the trainer's re-weighting schedules),
and report ``uses_prior_bias = False`` (softmax losses keep the default
classifier-bias initialisation). Importing this module registers them with
:func:`classbalanced.losses.register_loss` as ``"ldam"``, ``"logit_adjusted"`` and
``"balanced_softmax"``; the builder ignores ``gamma``, and ``beta > 0`` makes the
initial weights the class-balanced weights
:func:`classbalanced.weights.class_balanced_weights` ``(counts, beta)`` (``beta = 0``:
unweighted), with the method's default hyper-parameters (``max_m = 0.5``,
``s = 30``, ``tau = 1``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._validation import check_beta, check_choice, check_real
from ..weights import as_counts, class_balanced_weights
from .checks import (
    check_logits,
    check_num_classes,
    check_targets,
    check_weight,
    compute_dtype,
    full_precision,
)
from .functional import REDUCTIONS, weighted_ce
from .modules import ClassWeightBuffers
from .registry import register_loss
from .softmax import ClassShift
from .types import Reduction

__all__ = [
    "ldam_margins",
    "ldam_loss",
    "logit_adjusted_loss",
    "balanced_softmax_loss",
    "post_hoc_logit_adjustment",
    "LogitAdjustment",
    "LDAMLoss",
    "LogitAdjustedLoss",
    "BalancedSoftmaxLoss",
]


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


def _check_counts(samples_per_class, logits: Tensor) -> Tensor:
    """Validated ``(C,)`` counts on the logits' device, in the compute dtype."""
    counts = as_counts(samples_per_class)
    check_num_classes(counts.shape[0], logits)
    return counts.to(device=logits.device, dtype=compute_dtype(logits))


def _margins(counts: Tensor, max_m: float) -> Tensor:
    # max_m * (n_min / n_j) ** (1/4): the largest margin (rarest class) is exactly max_m
    return (counts.min() / counts).pow(0.25).mul(max_m)


def _log_prior(counts: Tensor) -> Tensor:
    return counts.log() - counts.sum().log()


# ---------------------------------------------------------------------------
# Cores (inputs already validated; counts in the compute dtype on the logits' device)
# ---------------------------------------------------------------------------


def _ldam_core(z, targets, weight, counts, max_m: float, s: float, reduction: Reduction) -> Tensor:
    index = targets.unsqueeze(1)
    shift = _margins(counts, max_m)[targets].unsqueeze(1).neg()
    return weighted_ce(z.scatter_add(1, index, shift).mul(s), targets, weight, reduction)


def _shifted_core(z, targets, weight, counts: Tensor, tau: float, reduction: Reduction) -> Tensor:
    """``w[y] * CE(z + tau * log(n), y)``: the logit-adjusted loss (balanced softmax at 1)."""
    return weighted_ce(z, targets, weight, reduction, ClassShift.from_counts(counts, tau))


def _prepare(logits, targets, weight, reduction, validate: bool = True):
    logits = check_logits(logits)
    targets, _ = check_targets(targets, logits, allow_dense=False, validate=validate)
    weight = check_weight(weight, logits, validate)
    check_choice("reduction", reduction, REDUCTIONS)
    return logits, targets, weight


def _apply_core(core, logits, targets, samples_per_class, weight, reduction, validate) -> Tensor:
    """The public functions' common path: check the inputs, cast the logits to the compute
    dtype and return ``core(z, targets, weight, counts)`` computed in full precision."""
    logits, targets, weight = _prepare(logits, targets, weight, reduction, validate)
    counts = _check_counts(samples_per_class, logits)
    z = logits.to(compute_dtype(logits))
    with full_precision(z):
        return core(z, targets, weight, counts)


# ---------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------


def ldam_margins(samples_per_class, max_m: float = 0.5) -> Tensor:
    """LDAM margins ``Delta_j = C_m / n_j ** (1/4)`` scaled so that ``max_j Delta_j = max_m``.

    Equivalently ``Delta_j = max_m * (min_k n_k / n_j) ** (1/4)``: the rarest class
    gets ``max_m``, more frequent classes smaller margins.

    Args:
        samples_per_class: ``(C,)`` training counts (list, numpy array or tensor), each > 0.
        max_m: the largest margin, a finite number ``>= 0`` (0: no margins).

    Returns:
        ``(C,)`` float64 tensor (on the device of a tensor input).

    >>> ldam_margins([10000, 625, 16], max_m=0.5)
    tensor([0.1000, 0.2000, 0.5000], dtype=torch.float64)
    """
    max_m = check_real("max_m", max_m, positive=False)
    return _margins(as_counts(samples_per_class), max_m)


def ldam_loss(
    logits: Tensor,
    targets: Tensor,
    samples_per_class,
    weight: Tensor | None = None,
    *,
    max_m: float = 0.5,
    s: float = 30.0,
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> Tensor:
    """LDAM loss: ``w[y_b] * CE(s * (z_b - Delta_{y_b} * onehot(y_b)), y_b)``.

    The true class's logit is lowered by its margin :func:`ldam_margins` before the
    softmax, and all logits are multiplied by the scale ``s``. The paper feeds it
    the logits of a normalised classifier (cosine similarities in ``[-1, 1]``,
    which is why ``s`` is needed); this function applies it to whatever logits it
    is given, raw ones included, and leaves the classifier to the caller.

    Args:
        logits: ``(N, C)`` floating tensor (half precision is computed in float32).
        targets: ``(N,)`` integer class indices in ``[0, C)``.
        samples_per_class: ``(C,)`` training counts, each > 0.
        weight: optional ``(C,)`` non-negative per-class weights (e.g. DRW).
        max_m: the largest margin, finite, ``>= 0``; s: the scale, finite, ``> 0``.
        reduction: ``"mean"`` (weighted sum / ``N``), ``"sum"`` or ``"none"`` (``(N,)``).
        validate_args: check the values of ``targets`` and ``weight`` (see
            :func:`classbalanced.losses.softmax_cross_entropy`).

    Returns:
        A scalar (or ``(N,)``) in float32, float64 for float64 logits.

    ``max_m = 0`` and ``s = 1`` give the plain (weighted) softmax cross-entropy.

    >>> z = torch.zeros(2, 2)
    >>> ldam_margins([10000, 16])
    tensor([0.1000, 0.5000], dtype=torch.float64)
    >>> ldam_loss(z, torch.tensor([0, 1]), [10000, 16], max_m=0.5, s=1.0, reduction="none")
    tensor([0.7444, 0.9741])
    """
    max_m = check_real("max_m", max_m, positive=False)
    s = check_real("s", s, positive=True)

    def core(z, y, w, counts):
        return _ldam_core(z, y, w, counts, max_m, s, reduction)

    return _apply_core(core, logits, targets, samples_per_class, weight, reduction, validate_args)


def logit_adjusted_loss(
    logits: Tensor,
    targets: Tensor,
    samples_per_class,
    weight: Tensor | None = None,
    *,
    tau: float = 1.0,
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> Tensor:
    """Logit-adjusted loss: ``w[y_b] * CE(z_b + tau * log(pi), y_b)``, ``pi_j = n_j / sum_k n_k``.

    Adding the log-prior during training makes the model's own logits ``z``
    approximately balanced-error optimal, so predict with ``argmax z`` (no
    post-hoc correction). ``tau = 0`` is the plain (weighted) cross-entropy.

    Args:
        logits: ``(N, C)`` floating tensor; targets: ``(N,)`` class indices in ``[0, C)``;
        samples_per_class: ``(C,)`` training counts, each > 0;
        weight: optional ``(C,)`` non-negative per-class weights;
        tau: temperature of the adjustment, finite, ``>= 0``;
        reduction: ``"mean"`` (weighted sum / ``N``), ``"sum"`` or ``"none"`` (``(N,)``).
        validate_args: check the values of ``targets`` and ``weight`` (see
            :func:`classbalanced.losses.softmax_cross_entropy`).

    Returns:
        A scalar (or ``(N,)``) in float32, float64 for float64 logits.

    >>> z = torch.zeros(2, 2)
    >>> logit_adjusted_loss(z, torch.tensor([0, 1]), [90, 10], reduction="none")  # -log(pi_y)
    tensor([0.1054, 2.3026])
    """
    tau = check_real("tau", tau, positive=False)

    def core(z, y, w, counts):
        return _shifted_core(z, y, w, counts, tau, reduction)

    return _apply_core(core, logits, targets, samples_per_class, weight, reduction, validate_args)


def balanced_softmax_loss(
    logits: Tensor,
    targets: Tensor,
    samples_per_class,
    weight: Tensor | None = None,
    *,
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> Tensor:
    """Balanced softmax: ``w[y_b] * CE(z_b + log(n), y_b)``.

    Equal (up to rounding) to :func:`logit_adjusted_loss` with ``tau = 1``: the
    two shifts differ by ``log(sum_k n_k)`` on every logit, which cancels in the
    softmax.

    Args:
        logits: ``(N, C)`` floating tensor; targets: ``(N,)`` class indices in ``[0, C)``;
        samples_per_class: ``(C,)`` training counts, each > 0;
        weight: optional ``(C,)`` non-negative per-class weights;
        reduction: ``"mean"`` (weighted sum / ``N``), ``"sum"`` or ``"none"`` (``(N,)``).
        validate_args: check the values of ``targets`` and ``weight`` (see
            :func:`classbalanced.losses.softmax_cross_entropy`).

    Returns:
        A scalar (or ``(N,)``) in float32, float64 for float64 logits.

    >>> balanced_softmax_loss(torch.zeros(1, 2), torch.tensor([1]), [90, 10])  # -log(10 / 100)
    tensor(2.3026)
    """

    def core(z, y, w, counts):
        return _shifted_core(z, y, w, counts, 1.0, reduction)

    return _apply_core(core, logits, targets, samples_per_class, weight, reduction, validate_args)


def post_hoc_logit_adjustment(logits: Tensor, samples_per_class, tau: float = 1.0) -> Tensor:
    """Prediction-time logit adjustment ``z - tau * log(pi)``, ``pi_j = n_j / sum_k n_k``.

    For a model trained with the plain cross-entropy on the long-tailed counts:
    ``argmax`` of the adjusted logits favours the rare classes (balanced error).
    Differentiable; does not modify ``logits``.

    Args:
        logits: ``(N, C)`` floating tensor.
        samples_per_class: ``(C,)`` training counts, each > 0.
        tau: finite, ``>= 0`` (0 returns the logits unchanged, up-cast).

    Returns:
        ``(N, C)`` float32 tensor (float64 for float64 logits).

    >>> z = torch.tensor([[2.0, 0.5]])
    >>> adjusted = post_hoc_logit_adjustment(z, [99, 1])
    >>> adjusted, adjusted.argmax(1)
    (tensor([[2.0101, 5.1052]]), tensor([1]))
    """
    tau = check_real("tau", tau, positive=False)
    logits = check_logits(logits)
    counts = _check_counts(samples_per_class, logits)
    z = logits.to(compute_dtype(logits))
    with full_precision(z):
        return z - tau * _log_prior(counts)


# ---------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------


class LogitAdjustment(nn.Module):
    """``model`` followed by :func:`post_hoc_logit_adjustment`: ``model(x) - tau * log(pi)``
    with ``pi`` from the training counts (a float32 buffer ``shift``, the same float32
    values the function subtracts). Scriptable and exportable (TorchScript, ONNX).

    >>> net = nn.Linear(2, 2, bias=False)
    >>> _ = net.weight.data.copy_(torch.eye(2))
    >>> LogitAdjustment(net, [99, 1], tau=1.0)(torch.tensor([[2.0, 0.5]]))
    tensor([[2.0101, 5.1052]], grad_fn=<SubBackward0>)
    """

    def __init__(self, model: nn.Module, samples_per_class, tau: float = 1.0) -> None:
        super().__init__()
        tau = check_real("tau", tau, positive=False)
        counts = as_counts(samples_per_class).float()
        self.model = model
        self.tau = tau
        self.register_buffer("shift", tau * _log_prior(counts))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) - self.shift


class _CountsSoftmaxLoss(ClassWeightBuffers):
    """Base: ``samples_per_class`` and the optional ``weight`` are float32 buffers.

    A subclass gives ``_core(z, targets, weight, counts)`` (the loss on checked inputs in
    the compute dtype) and names its hyper-parameters in ``_OPTIONS`` (for ``repr``).
    """

    _OPTIONS: tuple[str, ...] = ()
    samples_per_class: Tensor  # a buffer (register_buffer)

    def __init__(
        self, samples_per_class, weight: Tensor | None, reduction: Reduction, validate_args: bool
    ) -> None:
        super().__init__()
        counts = as_counts(samples_per_class)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.validate_args = bool(validate_args)
        # float32 keeps the module usable on backends without float64; integer
        # counts up to 2**24 stay exact and are up-cast for float64 logits
        self.register_buffer("samples_per_class", counts.to(torch.float32))
        self.register_buffer("weight", None)
        self.set_weight(weight)

    @property
    def num_classes(self) -> int:
        return int(self.samples_per_class.shape[0])

    def _num_weights(self) -> int:
        return self.num_classes

    def _core(self, z: Tensor, targets: Tensor, weight: Tensor | None, counts: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        logits, targets, weight = _prepare(
            logits, targets, self.weight, self.reduction, self.validate_args
        )
        check_num_classes(self.num_classes, logits)
        z = logits.to(compute_dtype(logits))
        counts = self.samples_per_class.to(device=z.device, dtype=z.dtype)
        with full_precision(z):
            return self._core(z, targets, weight, counts)

    def extra_repr(self) -> str:
        options = "".join(f"{name}={getattr(self, name)}, " for name in self._OPTIONS)
        weighted = self.weight is not None
        return (
            f"num_classes={self.num_classes}, {options}reduction={self.reduction!r}, "
            f"weighted={weighted}"
        )


class LDAMLoss(_CountsSoftmaxLoss):
    """Module form of :func:`ldam_loss` (margins from the counts buffer).

    LDAM's scale ``s`` assumes cosine logits in ``[-1, 1]``: ``normalized_classifier``
    tells a trainer to replace the last linear layer by
    :class:`classbalanced.models.NormedLinear`, as in the LDAM paper.

    Args:
        samples_per_class: ``(C,)`` training counts, each > 0.
        weight: optional ``(C,)`` non-negative per-class weights (``set_weight`` replaces them).
        max_m: the largest margin, ``>= 0``; s: the logit scale, ``> 0``;
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    >>> loss = LDAMLoss([10000, 16], s=1.0)
    >>> loss
    LDAMLoss(num_classes=2, max_m=0.5, s=1.0, reduction='mean', weighted=False)
    >>> loss(torch.zeros(2, 2), torch.tensor([0, 1]))
    tensor(0.8592)
    """

    normalized_classifier = True
    _OPTIONS = ("max_m", "s")

    def __init__(
        self,
        samples_per_class,
        weight: Tensor | None = None,
        *,
        max_m: float = 0.5,
        s: float = 30.0,
        reduction: Reduction = "mean",
        validate_args: bool = True,
    ) -> None:
        self.max_m = check_real("max_m", max_m, positive=False)
        self.s = check_real("s", s, positive=True)
        super().__init__(samples_per_class, weight, reduction, validate_args)

    @property
    def margins(self) -> Tensor:
        """``(C,)`` per-class margins (float32)."""
        return _margins(self.samples_per_class, self.max_m)

    def _core(self, z, targets, weight, counts) -> Tensor:
        return _ldam_core(z, targets, weight, counts, self.max_m, self.s, self.reduction)


class LogitAdjustedLoss(_CountsSoftmaxLoss):
    """Module form of :func:`logit_adjusted_loss` (priors from the counts buffer).

    Args:
        samples_per_class: ``(C,)`` training counts, each > 0.
        weight: optional ``(C,)`` non-negative per-class weights (``set_weight`` replaces them).
        tau: finite, ``>= 0``; reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    >>> loss = LogitAdjustedLoss([90, 10], tau=1.0, reduction="sum")
    >>> loss(torch.zeros(2, 2), torch.tensor([0, 1]))  # -log(0.9) - log(0.1)
    tensor(2.4079)
    """

    _OPTIONS = ("tau",)

    def __init__(
        self,
        samples_per_class,
        weight: Tensor | None = None,
        *,
        tau: float = 1.0,
        reduction: Reduction = "mean",
        validate_args: bool = True,
    ) -> None:
        self.tau = check_real("tau", tau, positive=False)
        super().__init__(samples_per_class, weight, reduction, validate_args)

    def _core(self, z, targets, weight, counts) -> Tensor:
        return _shifted_core(z, targets, weight, counts, self.tau, self.reduction)


class BalancedSoftmaxLoss(_CountsSoftmaxLoss):
    """Module form of :func:`balanced_softmax_loss`.

    Args:
        samples_per_class: ``(C,)`` training counts, each > 0.
        weight: optional ``(C,)`` non-negative per-class weights (``set_weight`` replaces them).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    >>> loss = BalancedSoftmaxLoss([90, 10], weight=torch.tensor([1.0, 2.0]), reduction="none")
    >>> loss(torch.zeros(2, 2), torch.tensor([0, 1]))  # 1 * -log(0.9), 2 * -log(0.1)
    tensor([0.1054, 4.6052])
    """

    def __init__(
        self,
        samples_per_class,
        weight: Tensor | None = None,
        *,
        reduction: Reduction = "mean",
        validate_args: bool = True,
    ) -> None:
        super().__init__(samples_per_class, weight, reduction, validate_args)

    def _core(self, z, targets, weight, counts) -> Tensor:
        return _shifted_core(z, targets, weight, counts, 1.0, self.reduction)


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------


def _initial_weight(samples_per_class, beta: float) -> Tensor | None:
    """Class-balanced weights for ``beta > 0``, ``None`` (unweighted) for ``beta = 0``."""
    beta = check_beta(beta)
    return class_balanced_weights(samples_per_class, beta) if beta > 0.0 else None


def _build_ldam(
    samples_per_class,
    *,
    beta: float,
    gamma: float,
    reduction: Reduction,
    max_m: float = 0.5,
    s: float = 30.0,
) -> LDAMLoss:
    weight = _initial_weight(samples_per_class, beta)
    return LDAMLoss(samples_per_class, weight, max_m=max_m, s=s, reduction=reduction)


def _build_logit_adjusted(
    samples_per_class, *, beta: float, gamma: float, reduction: Reduction, tau: float = 1.0
):
    weight = _initial_weight(samples_per_class, beta)
    return LogitAdjustedLoss(samples_per_class, weight, tau=tau, reduction=reduction)


def _build_balanced_softmax(samples_per_class, *, beta: float, gamma: float, reduction: Reduction):
    weight = _initial_weight(samples_per_class, beta)
    return BalancedSoftmaxLoss(samples_per_class, weight, reduction=reduction)


register_loss(
    "ldam",
    _build_ldam,
    "LDAM margin loss (Cao et al. 2019; max_m 0.5, s 30; beta > 0: class-balanced weights)",
)
register_loss(
    "logit_adjusted",
    _build_logit_adjusted,
    "logit-adjusted softmax (Menon et al. 2021; tau 1; beta > 0: class-balanced weights)",
)
register_loss(
    "balanced_softmax",
    _build_balanced_softmax,
    "balanced softmax (Ren et al. 2020; beta > 0: class-balanced weights)",
)
