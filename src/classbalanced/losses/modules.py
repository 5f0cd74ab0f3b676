"""``nn.Module`` forms of the losses: per-class weights and counts as float32 buffers."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._validation import check_beta, check_choice, check_gamma
from ..weights import as_counts, class_balanced_weights
from .checks import check_logits, check_num_classes, check_weight_type
from .functional import DEFAULT_GAMMA, LOSS_TYPES, REDUCTIONS, loss_of_type
from .types import LossType, Reduction

__all__ = ["KeptDtypeBuffers", "ClassWeightBuffers", "WeightedLoss", "ClassBalancedLoss"]


def _as_weight(weight: object) -> Tensor:
    """A ``(C,)`` float32 CPU copy of per-class weights, checked finite and >= 0."""
    weight = check_weight_type(weight).detach().to(dtype=torch.float32)
    if weight.dim() != 1 or not bool(torch.isfinite(weight).all()) or bool((weight < 0).any()):
        raise ValueError(
            f"weight must be a 1-D tensor of finite values >= 0, got shape {tuple(weight.shape)}"
        )
    return weight


class KeptDtypeBuffers(nn.Module):
    """A module whose buffers follow ``.to()`` / ``.cuda()`` but keep their dtype.

    Module dtype casts (``.half()``, ``.to(torch.bfloat16)``, ``.double()``) leave the
    buffers as they are, so float32 counts above 65504 or weights such as 0.1893 are
    never rounded (nor turned into ``inf``) when a loss is part of a cast model.
    """

    def _apply(self, fn, recurse=True):
        originals = dict(self._buffers)
        super()._apply(fn, recurse)
        for name, original in originals.items():
            moved = self._buffers[name]
            if original is not None and moved is not None and moved.dtype != original.dtype:
                self._buffers[name] = original.to(moved.device)  # follow the device only
        return self


class ClassWeightBuffers(KeptDtypeBuffers):
    """Base of the loss modules: float32 buffers that keep their dtype.

    ``weight`` (``(C,)`` or ``None``) and any count buffers move with ``.to()`` /
    ``.cuda()`` and are saved in the ``state_dict``, but stay float32 under module
    dtype casts (``.half()``, ``.to(torch.bfloat16)``, ``.double()``). Replace the
    weights with :meth:`set_weight` (re-weighting schedules). The
    :class:`~classbalanced.losses.Criterion` defaults: a linear classifier, default bias.
    """

    normalized_classifier: bool = False

    @property
    def uses_prior_bias(self) -> bool:
        return False

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
        loss_type: LossType,
        weight: Tensor | None = None,
        *,
        gamma: float = DEFAULT_GAMMA,
        reduction: Reduction = "mean",
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
        return loss_of_type(
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
    dtype under ``.half()`` / ``.to(torch.bfloat16)`` (so for float64 logits the
    module uses float32-rounded weights, the function float64 ones).

    >>> loss = ClassBalancedLoss([100, 10], beta=0.999, loss_type="focal", gamma=0.5)
    >>> loss.weight
    tensor([0.1893, 1.8107])
    """

    samples_per_class: Tensor  # a buffer (register_buffer)

    def __init__(
        self,
        samples_per_class,
        *,
        beta: float,
        loss_type: LossType,
        gamma: float = DEFAULT_GAMMA,
        reduction: Reduction = "mean",
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

    def _num_weights(self) -> int:
        return int(self.samples_per_class.shape[0])  # also while the weights are None

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        logits = check_logits(logits)
        check_num_classes(self.samples_per_class.shape[0], logits)
        return super().forward(logits, targets)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, " + super().extra_repr()
