"""Class-balanced weights for multi-label data, and counts that keep up with a stream.

Multi-label class-balanced loss
-------------------------------

With multi-hot targets ``t`` of shape ``(N, C)`` every class ``j`` is its own
binary problem, so each binary term gets the weight of *its own class* (unlike
the single-label sigmoid loss of :mod:`classbalanced.losses`, which multiplies
all ``C`` terms of an example by ``alpha_{y_b}``, the weight of its true class)::

    w_pos = class_balanced_weights(positives_per_class, beta)        # (C,), sums to C
    w_neg = class_balanced_weights(negatives_per_class, beta)        # (C,), or all ones if negatives_per_class is None

    L_bj = w_pos[j] * (1 - p_bj) ** gamma * -log(p_bj)        if t_bj = 1
    L_bj = w_neg[j] *       p_bj ** gamma * -log(1 - p_bj)    if t_bj = 0

    p = sigmoid(z);   "mean": sum_{b,j} L_bj / max(1, #positives);  "sum": the sum;
    "none": the (N,) per-example sums  sum_j L_bj.

``positives_per_class[j]`` is the number of training examples with label ``j`` and
``negatives_per_class[j]`` the number without it (``N - positives_per_class[j]``). ``gamma = 0`` is
the binary cross-entropy. Everything is computed from ``F.logsigmoid`` (``-log p
= -logsigmoid(z)``, ``(1 - p) ** gamma = exp(gamma * logsigmoid(-z))``), so the
loss and its gradient are finite for every finite logit and every ``gamma >= 0``.

Running counts
--------------

:class:`RunningClassCounts` accumulates class counts over a stream whose size is
not known up front (optionally forgetting old data with an exponential
``decay``) and turns them into class-balanced weights at any time.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor

from ._validation import (
    check_beta,
    check_choice,
    check_gamma,
    check_int,
    check_positive_int,
    check_real,
)
from .losses.checks import full_precision, reduce_loss
from .losses.functional import DEFAULT_GAMMA, REDUCTIONS
from .losses.kernels import focal_elements
from .losses.modules import KeptDtypeBuffers
from .losses.types import Reduction
from .weights import as_counts, class_balanced_weights

__all__ = [
    "positive_counts",
    "positive_counts_from_loader",
    "multilabel_class_balanced_loss",
    "MultiLabelClassBalancedLoss",
    "RunningClassCounts",
]


# ---------------------------------------------------------------------------
# Counting positives
# ---------------------------------------------------------------------------


def _as_multi_hot(label_matrix: object, name: str = "label_matrix") -> Tensor:
    """Validate a 2-D multi-hot matrix (values 0/1 or bool) and return it as a tensor."""
    if isinstance(label_matrix, Tensor):
        tensor = label_matrix.detach()
    elif isinstance(label_matrix, (np.ndarray, list, tuple)):
        array = np.asarray(label_matrix)
        if array.dtype == object:
            raise TypeError(f"{name} must hold 0/1 values, got a ragged or object array")
        tensor = torch.from_numpy(np.array(array, copy=True))
    else:
        raise TypeError(
            f"{name} must be a numpy array or tensor of shape (N, C), got {type(label_matrix).__name__}"
        )
    if tensor.is_complex():
        raise TypeError(f"{name} must hold 0/1 values, got dtype {tensor.dtype}")
    if tensor.dim() != 2 or tensor.shape[1] < 1:
        raise ValueError(
            f"{name} must be a multi-hot matrix of shape (N, C) with C >= 1, got shape {tuple(tensor.shape)}"
        )
    if tensor.dtype != torch.bool and tensor.numel() > 0:
        bad = (tensor != 0) & (tensor != 1)
        if bool(bad.any()):
            row, col = (int(i) for i in torch.nonzero(bad)[0])
            raise ValueError(
                f"{name} must hold only 0/1 (or bool) values, got {tensor[row, col].item()!r} at [{row}, {col}]"
            )
    return tensor


def positive_counts(label_matrix) -> Tensor:
    """Number of positive labels per class of a multi-hot ``(N, C)`` matrix.

    Args:
        label_matrix: numpy array or tensor of shape ``(N, C)`` with values 0/1 or bool.

    Returns:
        ``(C,)`` int64 tensor on the CPU.

    >>> positive_counts(np.array([[1, 0, 1], [1, 0, 0]]))
    tensor([2, 0, 1])
    """
    tensor = _as_multi_hot(label_matrix)
    return tensor.to(torch.int64).sum(dim=0).cpu()


def positive_counts_from_loader(batches: Iterable, *, return_total: bool = False):
    """Positive counts of a multi-label dataset, streamed over its batches in one pass.

    Args:
        batches: an iterable (e.g. a ``DataLoader``) of ``(x, y)`` batches (or of
            bare ``y``) with ``y`` multi-hot of shape ``(B, C)``.
        return_total: also return the number of examples ``N`` (then
            ``negatives_per_class = N - positives_per_class``).

    Returns:
        ``(C,)`` int64 tensor, or ``(counts, N)`` with ``return_total=True``.

    >>> batches = [(None, torch.tensor([[1, 0], [1, 1]])), (None, torch.tensor([[0, 1]]))]
    >>> positive_counts_from_loader(batches, return_total=True)
    (tensor([2, 2]), 3)
    """
    counts: Tensor | None = None
    total = 0
    for index, batch in enumerate(batches):
        y = batch[1] if isinstance(batch, (tuple, list)) and len(batch) >= 2 else batch
        tensor = _as_multi_hot(y, name=f"targets of batch {index}")
        if counts is None:
            counts = torch.zeros(tensor.shape[1], dtype=torch.int64)
        elif tensor.shape[1] != counts.shape[0]:
            raise ValueError(
                f"targets of batch {index} have {tensor.shape[1]} classes, earlier batches {counts.shape[0]}"
            )
        counts += tensor.to(torch.int64).sum(dim=0).cpu()
        total += tensor.shape[0]
    if counts is None:
        raise ValueError("batches must yield at least one batch, got none")
    return (counts, total) if return_total else counts


# ---------------------------------------------------------------------------
# Multi-label class-balanced loss
# ---------------------------------------------------------------------------


def _check_logits_targets(logits: object, targets: object) -> tuple[Tensor, Tensor]:
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise TypeError(
            "logits must be a floating-point tensor of shape (N, C), got "
            + (f"dtype {logits.dtype}" if isinstance(logits, Tensor) else type(logits).__name__)
        )
    if logits.dim() != 2 or logits.shape[1] < 1:
        raise ValueError(
            f"logits must have shape (N, C) with C >= 1, got shape {tuple(logits.shape)}"
        )
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a tensor, got {type(targets).__name__}")
    if targets.shape != logits.shape:
        raise ValueError(
            f"multi-hot targets must have the logits' shape {tuple(logits.shape)}, got shape {tuple(targets.shape)}"
        )
    if targets.device != logits.device:
        raise ValueError(
            f"targets must be on the logits' device {logits.device}, got targets on {targets.device}"
        )
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    if (
        targets.dtype != torch.bool
        and targets.device.type == "cpu"
        and targets.numel() > 0
        and not torch.compiler.is_compiling()  # a host read would break the compiled graph
    ):
        if bool(((targets != 0) & (targets != 1)).any()):
            raise ValueError("multi-hot targets must hold only 0/1 (or bool) values")
    return logits.to(dtype), targets.to(dtype)


def _class_weight_vector(counts, beta: float, logits: Tensor, name: str) -> Tensor:
    """Checked ``(C,)`` class-balanced weights in the dtype of the (up-cast) ``logits``."""
    num_classes = logits.shape[1]
    try:
        counts = as_counts(counts)
    except ValueError as error:  # name the argument in the message
        raise ValueError(f"{name}: {error}") from None
    if counts.shape[0] != num_classes:
        raise ValueError(
            f"{name} must have one count per class: expected {num_classes}, got {counts.shape[0]}"
        )
    return class_balanced_weights(counts, beta, dtype=logits.dtype)


def _weighted_binary_focal(
    z: Tensor, t: Tensor, w_pos: Tensor, w_neg: Tensor | None, gamma: float, reduction: Reduction
) -> Tensor:
    with full_precision(z):
        w_neg = torch.ones_like(w_pos) if w_neg is None else w_neg
        weights = torch.where(t > 0.5, w_pos.to(z), w_neg.to(z))
        per_example = (focal_elements(z, t, gamma) * weights).sum(dim=1)
        return reduce_loss(per_example, reduction, t.sum().clamp_min(1.0))


def multilabel_class_balanced_loss(
    logits: Tensor,
    targets: Tensor,
    positives_per_class,
    *,
    beta: float,
    negatives_per_class=None,
    gamma: float = DEFAULT_GAMMA,
    reduction: Reduction = "mean",
) -> Tensor:
    """Multi-label sigmoid / focal loss with a class-balanced weight per binary term.

    Term ``(b, j)`` is weighted by ``w_pos[j]`` when ``t_bj = 1`` and by ``w_neg[j]``
    when ``t_bj = 0`` (module docstring); ``w_pos`` / ``w_neg`` are
    :func:`~classbalanced.weights.class_balanced_weights` of ``positives_per_class`` /
    ``negatives_per_class`` (``w_neg = 1`` when ``negatives_per_class`` is ``None``),
    in float64 for float64 logits.

    Args:
        logits: ``(N, C)`` floating tensor (computed in float32, float64 for float64).
        targets: ``(N, C)`` multi-hot, values 0/1 (bool, integer or float); the values
            are checked for CPU tensors outside ``torch.compile`` (the loss compiles
            with ``fullgraph=True``).
        positives_per_class: ``(C,)`` training examples with each label, every count > 0.
        beta: in ``[0, 1)``; 0 gives the unweighted loss.
        negatives_per_class: optional ``(C,)`` training examples without each label, > 0.
        gamma: focal exponent ``>= 0`` (0: binary cross-entropy).
        reduction: ``"mean"`` (sum / number of positives, at least 1), ``"sum"``,
            ``"none"`` (``(N,)`` per-example sums).

    >>> z = torch.zeros(1, 2)
    >>> multilabel_class_balanced_loss(z, torch.tensor([[1, 1]]), [90, 10], beta=0.0, gamma=0.0)
    tensor(0.6931)
    >>> multilabel_class_balanced_loss(z, torch.tensor([[0, 1]]), [90, 10], beta=0.999999, gamma=0)
    tensor(1.9408)
    """
    beta = check_beta(beta)
    gamma = check_gamma(gamma)
    check_choice("reduction", reduction, REDUCTIONS)
    z, t = _check_logits_targets(logits, targets)
    w_pos = _class_weight_vector(positives_per_class, beta, z, "positives_per_class")
    w_neg = (
        None
        if negatives_per_class is None
        else _class_weight_vector(negatives_per_class, beta, z, "negatives_per_class")
    )
    return _weighted_binary_focal(z, t, w_pos, w_neg, gamma, reduction)


class MultiLabelClassBalancedLoss(KeptDtypeBuffers):
    """Module form of :func:`multilabel_class_balanced_loss`.

    ``pos_weight`` and ``neg_weight`` (``(C,)`` float32, all ones without
    ``negatives_per_class``) and the counts are buffers: they follow ``.to()`` and the
    ``state_dict``, and stay float32 under module dtype casts (``.half()``,
    ``.to(torch.bfloat16)``). :meth:`set_beta` recomputes the weights.

    >>> loss = MultiLabelClassBalancedLoss(
    ...     [90, 10], beta=0.999999, negatives_per_class=[10, 90], gamma=0.0
    ... )
    >>> loss.pos_weight, loss.neg_weight
    (tensor([0.2000, 1.8000]), tensor([1.8000, 0.2000]))
    >>> loss(torch.zeros(1, 2), torch.tensor([[0, 1]]))  # (1.8 + 1.8) * log 2
    tensor(2.4953)
    """

    # buffers (register_buffer)
    positives_per_class: Tensor
    negatives_per_class: Tensor | None
    pos_weight: Tensor
    neg_weight: Tensor

    def __init__(
        self,
        positives_per_class,
        *,
        beta: float,
        negatives_per_class=None,
        gamma: float = DEFAULT_GAMMA,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        self.gamma = check_gamma(gamma)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        pos = as_counts(positives_per_class)
        self.register_buffer("positives_per_class", pos.to(torch.float32))
        if negatives_per_class is None:
            self.register_buffer("negatives_per_class", None)
        else:
            neg = as_counts(negatives_per_class)
            if neg.shape != pos.shape:
                raise ValueError(
                    f"negatives_per_class must have one count per class ({pos.shape[0]}), got {neg.shape[0]}"
                )
            self.register_buffer("negatives_per_class", neg.to(torch.float32))
        self.register_buffer("pos_weight", torch.ones(pos.shape[0]))
        self.register_buffer("neg_weight", torch.ones(pos.shape[0]))
        self.set_beta(beta)

    def set_beta(self, beta: float) -> None:
        """Recompute ``pos_weight`` / ``neg_weight`` for a new ``beta``."""
        self.beta = check_beta(beta)
        device = self.pos_weight.device
        pos = class_balanced_weights(self.positives_per_class.double().cpu(), self.beta)
        self.pos_weight = pos.to(device)
        if self.negatives_per_class is not None:
            neg = class_balanced_weights(self.negatives_per_class.double().cpu(), self.beta)
            self.neg_weight = neg.to(device)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        z, t = _check_logits_targets(logits, targets)
        if z.shape[1] != self.pos_weight.shape[0]:
            raise ValueError(
                f"logits must have {self.pos_weight.shape[0]} classes (one per count), got shape {tuple(z.shape)}"
            )
        w_neg = None if self.negatives_per_class is None else self.neg_weight
        return _weighted_binary_focal(z, t, self.pos_weight, w_neg, self.gamma, self.reduction)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, gamma={self.gamma}, reduction={self.reduction!r}"


# ---------------------------------------------------------------------------
# Running counts for streaming data
# ---------------------------------------------------------------------------


class RunningClassCounts:
    """Class counts accumulated over a stream, with optional exponential forgetting.

    Each :meth:`update` with a batch of labels does::

        counts = decay * counts + batch_counts

    where ``batch_counts[j]`` is the number of examples of class ``j`` (class
    indices) or of positives of label ``j`` (multi-hot) in the batch. ``decay = 1``
    (default) keeps exact cumulative counts; ``decay < 1`` forgets, with an
    effective memory of about ``1 / (1 - decay)`` updates (steady batch counts
    ``m`` give ``counts -> m / (1 - decay)``).

    :meth:`weights` returns ``class_balanced_weights(max(counts, min_count), beta)``:
    a class never seen (count 0), or whose decayed count fell below ``min_count``,
    is treated as having ``min_count`` examples (default 1), so its weight is the
    largest possible but finite, never ``1 / 0``.

    Counts are float64 on the CPU; the state (:meth:`state_dict`) holds only
    tensors, floats and ints, so ``torch.load(..., weights_only=True)`` reads it.

    >>> running = RunningClassCounts(3, decay=0.5)
    >>> running.update(torch.tensor([0, 0, 1])).update(torch.tensor([1]))
    RunningClassCounts(num_classes=3, decay=0.5, min_count=1.0, num_updates=2)
    >>> running.counts  # 0.5 * [2, 1, 0] + [0, 1, 0]
    tensor([1.0000, 1.5000, 0.0000], dtype=torch.float64)
    >>> running.weights(beta=0.0)
    tensor([1., 1., 1.])
    """

    def __init__(self, num_classes: int, *, decay: float = 1.0, min_count: float = 1.0) -> None:
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.decay = self._check_decay(decay)
        self.min_count = check_real("min_count", min_count, positive=True)
        self._counts = torch.zeros(self.num_classes, dtype=torch.float64)
        self.num_updates = 0

    @staticmethod
    def _check_decay(decay: object) -> float:
        if isinstance(decay, bool) or not isinstance(decay, numbers.Real):
            raise TypeError(f"decay must be a number in (0, 1], got {type(decay).__name__}")
        value = float(decay)
        if not (0.0 < value <= 1.0):
            raise ValueError(f"decay must be in (0, 1], got {value!r}")
        return value

    def _batch_counts(self, labels: object) -> Tensor:
        if isinstance(labels, (np.ndarray, list, tuple)):
            array = np.asarray(labels)
            if array.dtype == object:
                raise TypeError(
                    "labels must be class indices or a multi-hot matrix, got an object array"
                )
            labels = torch.from_numpy(np.array(array, copy=True))
        if not isinstance(labels, Tensor):
            raise TypeError(
                f"labels must be a tensor or numpy array of class indices (B,) or multi-hot (B, C), got {type(labels).__name__}"
            )
        labels = labels.detach()
        if labels.dim() == 2:
            if labels.shape[1] != self.num_classes:
                raise ValueError(
                    f"multi-hot labels must have {self.num_classes} columns, got shape {tuple(labels.shape)}"
                )
            return positive_counts(labels).to(torch.float64)
        if labels.dim() != 1:
            raise ValueError(
                f"labels must be class indices (B,) or multi-hot (B, C), got shape {tuple(labels.shape)}"
            )
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"1-D labels must be integer class indices, got dtype {labels.dtype}")
        labels = labels.to(torch.int64).cpu()
        if labels.numel() > 0:
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high >= self.num_classes:
                bad = low if low < 0 else high
                raise ValueError(
                    f"labels must be class indices in [0, {self.num_classes - 1}], got {bad}"
                )
        return torch.bincount(labels, minlength=self.num_classes).to(torch.float64)

    def update(self, labels) -> RunningClassCounts:
        """Add a batch: ``(B,)`` class indices or ``(B, C)`` multi-hot (0/1 or bool). Returns self."""
        batch = self._batch_counts(labels)
        if self.decay != 1.0:
            self._counts.mul_(self.decay)
        self._counts.add_(batch)
        self.num_updates += 1
        return self

    @property
    def counts(self) -> Tensor:
        """Current ``(C,)`` float64 counts (a copy)."""
        return self._counts.clone()

    def weights(self, beta: float) -> Tensor:
        """``class_balanced_weights(max(counts, min_count), beta)``: ``(C,)`` float32, sum ``C``."""
        return class_balanced_weights(self._counts.clamp_min(self.min_count), beta)

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._counts.zero_()
        self.num_updates = 0

    def state_dict(self) -> dict:
        """Plain state (tensors, floats, ints) for checkpoints; ``weights_only``-loadable."""
        return {
            "num_classes": self.num_classes,
            "counts": self._counts.clone(),
            "decay": self.decay,
            "min_count": self.min_count,
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore counts, ``decay``, ``min_count`` and ``num_updates`` from :meth:`state_dict`."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict from state_dict(), got {type(state).__name__}")
        missing = {"num_classes", "counts", "decay", "min_count", "num_updates"} - set(state)
        if missing:
            raise ValueError(f"state is missing {sorted(missing)}")
        if int(state["num_classes"]) != self.num_classes:
            raise ValueError(
                f"state has {int(state['num_classes'])} classes, this object {self.num_classes}"
            )
        counts = torch.as_tensor(state["counts"], dtype=torch.float64).cpu()
        if counts.shape != (self.num_classes,) or not bool(
            (torch.isfinite(counts) & (counts >= 0)).all()
        ):
            raise ValueError(
                f"state counts must be {self.num_classes} finite values >= 0, got shape {tuple(counts.shape)}"
            )
        decay = self._check_decay(state["decay"])  # every value checked before any is set
        min_count = check_real("min_count", state["min_count"], positive=True)
        num_updates = check_int("num_updates", state["num_updates"])
        self.decay, self.min_count, self.num_updates = decay, min_count, num_updates
        self._counts = counts.clone()

    def __repr__(self) -> str:
        return (
            f"RunningClassCounts(num_classes={self.num_classes}, decay={self.decay}, "
            f"min_count={self.min_count}, num_updates={self.num_updates})"
        )
