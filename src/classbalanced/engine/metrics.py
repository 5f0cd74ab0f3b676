"""Classification metrics built from summable counts.

Evaluation accumulates, per class, the number of test images, how many were right at
top-1 and top-k and how many were predicted, the confusion matrix (up to
:data:`CONFUSION_MAX_CLASSES` classes), the calibration bins of the top-1 confidence,
and the test images skipped as unreadable (:class:`EvalCounts`). Counts add across batches and across distributed ranks (sum
them), so nothing is averaged twice. From the counts, :func:`summarize` derives, with
the pure functions of :mod:`classbalanced.metrics`: accuracy, error, balanced accuracy,
macro-F1, per-class accuracy / precision / recall / F1, the confusion matrix, the
expected calibration error and the many / medium / few-shot accuracies (classes with
more than 100, 20 to 100, and fewer than 20 training images).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..metrics import (
    ECE_BINS,
    FEW_SHOT,
    MANY_SHOT,
    calibration_bins,
    expected_calibration_error,
    group_mean,
    prf_from_counts,
    shot_groups,
    top1_confidence,
)

__all__ = [
    "CONFUSION_MAX_CLASSES",
    "EvalCounts",
    "PER_CLASS_KEYS",
    "shot_groups",
    "scalar_metrics",
    "summarize",
    "MANY_SHOT",
    "FEW_SHOT",
]

#: the confusion matrix is counted (and written) for up to this many classes (8 MB of counts)
CONFUSION_MAX_CLASSES = 1000
#: the per-class (list-valued) entries of :func:`summarize`, left out of a run's history
PER_CLASS_KEYS = (
    "per_class_accuracy",
    "per_class_precision",
    "per_class_recall",
    "per_class_f1",
    "confusion_matrix",
    "calibration",
)


def scalar_metrics(metrics: dict) -> dict:
    """``metrics`` without its per-class entries (:data:`PER_CLASS_KEYS`): a history entry."""
    return {k: v for k, v in metrics.items() if k not in PER_CLASS_KEYS}


@dataclass
class EvalCounts:
    """Per-class totals: ``total`` test images, ``correct`` at top-1, ``correct_topk`` at
    top-k, ``predicted`` top-1 predictions; ``confusion (C, C)`` (rows: true class; ``None``
    above :data:`CONFUSION_MAX_CLASSES` classes); ``calibration (3, ECE_BINS)`` sums of
    :func:`classbalanced.metrics.calibration_bins`; ``unreadable``: test images skipped
    because they could not be decoded (in none of the other counts)."""

    total: Tensor
    correct: Tensor
    correct_topk: Tensor
    k: int = 5
    # None (the default) only until __post_init__: a Tensor wherever the counts are read
    predicted: Tensor = None  # type: ignore[assignment]
    confusion: Tensor | None = None
    calibration: Tensor = field(default=None)  # type: ignore[assignment]
    unreadable: int = 0

    def __post_init__(self) -> None:
        c, device = self.total.numel(), self.total.device
        if self.predicted is None:
            self.predicted = torch.zeros(c, dtype=torch.int64, device=device)
        if self.confusion is None and c <= CONFUSION_MAX_CLASSES:
            self.confusion = torch.zeros(c, c, dtype=torch.int64, device=device)
        if self.calibration is None:
            self.calibration = torch.zeros(3, ECE_BINS, dtype=torch.float64, device=device)

    @classmethod
    def zeros(cls, num_classes: int, *, k: int = 5, device="cpu") -> EvalCounts:
        z = lambda: torch.zeros(num_classes, dtype=torch.int64, device=device)  # noqa: E731
        return cls(z(), z(), z(), min(k, num_classes))

    @property
    def num_classes(self) -> int:
        return self.total.numel()

    def update(self, logits: Tensor, labels: Tensor) -> None:
        """Add a batch: ``logits (N, C)``, ``labels (N,)``."""
        labels = labels.to(self.total.device)
        top = logits.topk(self.k, dim=1).indices.to(self.total.device)
        hit1 = top[:, 0] == labels
        hitk = (top == labels[:, None]).any(dim=1)
        self.total.index_add_(0, labels, torch.ones_like(labels))
        self.correct.index_add_(0, labels, hit1.long())
        self.correct_topk.index_add_(0, labels, hitk.long())
        self.predicted.index_add_(0, top[:, 0], torch.ones_like(labels))
        if self.confusion is not None:
            flat = self.confusion.view(-1)
            flat.index_add_(0, labels * self.num_classes + top[:, 0], torch.ones_like(labels))
        confidence, _ = top1_confidence(logits)
        self.calibration += calibration_bins(confidence.to(self.total.device), hit1)

    def __add__(self, other: EvalCounts) -> EvalCounts:
        """Counts of two disjoint sets of test images (batches, ranks) together."""
        if (
            not isinstance(other, EvalCounts)
            or other.k != self.k
            or other.total.shape != self.total.shape
        ):
            return NotImplemented
        return EvalCounts.from_stacked(self.stacked() + other.stacked(), self.k)

    def stacked(self) -> Tensor:
        """One float64 vector for one all-reduce (sum) across ranks: ``[1, C, unreadable]``,
        then every count (float64 holds counts exactly up to 2**53). Summed over ``W`` ranks
        the head reads ``[W, W * C, unreadable]``, from which :meth:`from_stacked` finds ``C``."""
        c = self.num_classes
        parts = [self.total, self.correct, self.correct_topk, self.predicted]
        if self.confusion is not None:
            parts.append(self.confusion.reshape(-1))
        head = torch.tensor(
            [1.0, float(c), float(self.unreadable)], dtype=torch.float64, device=self.total.device
        )
        flat = [head, *(p.double() for p in parts), self.calibration.reshape(-1)]
        return torch.cat(flat)

    @classmethod
    def from_stacked(cls, stacked: Tensor, k: int) -> EvalCounts:
        """The counts of :meth:`stacked` (summed over any number of ranks)."""
        c = int(round(float(stacked[1]) / float(stacked[0])))
        unreadable = int(round(float(stacked[2])))
        counts = stacked[3 : stacked.numel() - 3 * ECE_BINS].round().long()
        total, correct, topk, predicted = (counts[i * c : (i + 1) * c].clone() for i in range(4))
        confusion = counts[4 * c :].view(c, c).clone() if c <= CONFUSION_MAX_CLASSES else None
        calibration = stacked[-3 * ECE_BINS :].double().view(3, ECE_BINS).clone()
        return cls(total, correct, topk, k, predicted, confusion, calibration, unreadable)


def _listed(values: Tensor, keep: Tensor | None = None) -> list:
    return [None if (keep is not None and not keep[i]) else float(v) for i, v in enumerate(values)]


def summarize(counts: EvalCounts, train_counts) -> dict:
    """Metrics from counts: accuracies, F1 and ECE in [0, 1], errors in percent.

    ``accuracy`` is the fraction of all test images right at top-1; ``balanced_accuracy``
    (alias ``mean_class_accuracy``) the mean per-class accuracy (recall) over the classes
    with test images; the group accuracies the same over the classes of the group
    (``None`` when the group is empty). Classes without test images get ``None``
    per-class accuracy; per-class precision / recall / F1 are 0 where undefined
    (scikit-learn's ``zero_division=0``). ``confusion_matrix``: rows are true classes
    (``None`` above :data:`CONFUSION_MAX_CLASSES` classes); ``calibration``: per bin of
    top-1 confidence, its image count, mean confidence and accuracy.
    ``num_test_images`` counts the images evaluated (every denominator above);
    ``num_unreadable_test_images`` those skipped because they could not be decoded.

    >>> c = EvalCounts.zeros(2, k=1)
    >>> c.update(torch.tensor([[2.0, 1.0], [0.0, 1.0], [3.0, 0.0]]), torch.tensor([0, 1, 1]))
    >>> m = summarize(c, [150, 10])
    >>> m["accuracy"], m["per_class_accuracy"], m["many_shot_accuracy"], m["few_shot_accuracy"]
    (0.6666666666666666, [1.0, 0.5], 1.0, 0.5)
    >>> m["balanced_accuracy"], round(m["macro_f1"], 4), m["confusion_matrix"]
    (0.75, 0.6667, [[1, 0], [1, 1]])
    """
    total = counts.total.double().cpu()
    if len(train_counts) != total.numel():
        raise ValueError(
            f"expected training counts of the {total.numel()} evaluated classes, got {len(train_counts)}"
        )
    n = float(total.sum())
    per_class = counts.correct.double().cpu() / total  # NaN where a class has no test image
    groups = shot_groups(torch.as_tensor(train_counts).cpu())
    accuracy = float(counts.correct.sum()) / n if n else 0.0
    topk = float(counts.correct_topk.sum()) / n if n else 0.0
    precision, recall, f1 = prf_from_counts(counts.correct, counts.total, counts.predicted)
    seen = (counts.total + counts.predicted).cpu() > 0
    balanced = group_mean(per_class, torch.ones_like(per_class, dtype=torch.bool))
    bins = counts.calibration.cpu()
    return {
        "accuracy": accuracy,
        "error_percent": 100.0 * (1.0 - accuracy),
        f"top{counts.k}_accuracy": topk,
        f"top{counts.k}_error_percent": 100.0 * (1.0 - topk),
        "balanced_accuracy": balanced,
        "macro_f1": float(f1[seen].mean()) if bool(seen.any()) else None,
        "ece": expected_calibration_error(bins),
        "per_class_accuracy": [None if torch.isnan(v) else float(v) for v in per_class],
        "per_class_precision": _listed(precision),
        "per_class_recall": _listed(recall),
        "per_class_f1": _listed(f1),
        "confusion_matrix": None if counts.confusion is None else counts.confusion.cpu().tolist(),
        "calibration": {
            "bins": ECE_BINS,
            "count": [int(v) for v in bins[0]],
            "confidence": _listed(bins[1] / bins[0].clamp(min=1), bins[0] > 0),
            "accuracy": _listed(bins[2] / bins[0].clamp(min=1), bins[0] > 0),
        },
        "mean_class_accuracy": balanced,  # the name before balanced_accuracy; still read
        "many_shot_accuracy": group_mean(per_class, groups["many"]),
        "medium_shot_accuracy": group_mean(per_class, groups["medium"]),
        "few_shot_accuracy": group_mean(per_class, groups["few"]),
        "num_many_shot_classes": int(groups["many"].sum()),
        "num_medium_shot_classes": int(groups["medium"].sum()),
        "num_few_shot_classes": int(groups["few"].sum()),
        "num_test_images": int(n),
        "num_unreadable_test_images": int(counts.unreadable),
    }
