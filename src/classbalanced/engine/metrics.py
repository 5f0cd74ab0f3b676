"""Classification metrics built from summable counts.

Evaluation accumulates, per class, the number of test images and how many were
right at top-1 and top-k (:class:`EvalCounts`). Counts add across batches and
across distributed ranks (sum them), so nothing is averaged twice. From the
counts, :func:`summarize` derives accuracy, error, per-class accuracy and the
many / medium / few-shot accuracies (classes with more than 100, 20 to 100, and
fewer than 20 training images).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["EvalCounts", "shot_groups", "summarize", "MANY_SHOT", "FEW_SHOT"]

MANY_SHOT = 100  # many-shot: more than 100 training images
FEW_SHOT = 20  # few-shot: fewer than 20 training images


@dataclass
class EvalCounts:
    """Per-class totals: ``total`` test images, ``correct`` at top-1, ``correct_topk`` at top-k."""

    total: Tensor
    correct: Tensor
    correct_topk: Tensor
    k: int = 5

    @classmethod
    def zeros(cls, num_classes: int, *, k: int = 5, device="cpu") -> EvalCounts:
        z = lambda: torch.zeros(num_classes, dtype=torch.int64, device=device)  # noqa: E731
        return cls(z(), z(), z(), min(k, num_classes))

    def update(self, logits: Tensor, labels: Tensor) -> None:
        """Add a batch: ``logits (N, C)``, ``labels (N,)``."""
        labels = labels.to(self.total.device)
        top = logits.topk(self.k, dim=1).indices.to(self.total.device)
        hit1 = top[:, 0] == labels
        hitk = (top == labels[:, None]).any(dim=1)
        self.total.index_add_(0, labels, torch.ones_like(labels))
        self.correct.index_add_(0, labels, hit1.long())
        self.correct_topk.index_add_(0, labels, hitk.long())

    def __add__(self, other: EvalCounts) -> EvalCounts:
        """Counts of two disjoint sets of test images (batches, ranks) together."""
        if (
            not isinstance(other, EvalCounts)
            or other.k != self.k
            or other.total.shape != self.total.shape
        ):
            return NotImplemented
        return EvalCounts(
            self.total + other.total,
            self.correct + other.correct,
            self.correct_topk + other.correct_topk,
            self.k,
        )

    def stacked(self) -> Tensor:
        """``(3, C)`` tensor for one all-reduce (sum) across ranks."""
        return torch.stack([self.total, self.correct, self.correct_topk])

    @classmethod
    def from_stacked(cls, stacked: Tensor, k: int) -> EvalCounts:
        return cls(stacked[0].clone(), stacked[1].clone(), stacked[2].clone(), k)


def shot_groups(train_counts, many: int = MANY_SHOT, few: int = FEW_SHOT) -> dict[str, Tensor]:
    """Boolean class masks ``many`` (> many), ``medium`` (few..many), ``few`` (< few).

    >>> {k: v.tolist() for k, v in shot_groups([500, 100, 20, 19]).items()}
    {'many': [True, False, False, False], 'medium': [False, True, True, False], 'few': [False, False, False, True]}
    """
    counts = torch.as_tensor(train_counts)
    return {
        "many": counts > many,
        "medium": (counts >= few) & (counts <= many),
        "few": counts < few,
    }


def _mean_of(values: Tensor, mask: Tensor) -> float | None:
    selected = values[mask & ~torch.isnan(values)]
    return None if selected.numel() == 0 else float(selected.mean())


def summarize(counts: EvalCounts, train_counts) -> dict:
    """Metrics from counts: accuracies in [0, 1], errors in percent.

    ``accuracy`` is the fraction of all test images right at top-1; the group
    accuracies are the mean per-class accuracy over the classes of the group
    (``None`` when the group is empty). Classes without test images get
    ``None`` per-class accuracy and are left out of the group means.

    >>> c = EvalCounts.zeros(2, k=1)
    >>> c.update(torch.tensor([[2.0, 1.0], [0.0, 1.0], [3.0, 0.0]]), torch.tensor([0, 1, 1]))
    >>> m = summarize(c, [150, 10])
    >>> m["accuracy"], m["per_class_accuracy"], m["many_shot_accuracy"], m["few_shot_accuracy"]
    (0.6666666666666666, [1.0, 0.5], 1.0, 0.5)
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
    return {
        "accuracy": accuracy,
        "error_percent": 100.0 * (1.0 - accuracy),
        f"top{counts.k}_accuracy": topk,
        f"top{counts.k}_error_percent": 100.0 * (1.0 - topk),
        "per_class_accuracy": [None if torch.isnan(v) else float(v) for v in per_class],
        "mean_class_accuracy": _mean_of(per_class, torch.ones_like(per_class, dtype=torch.bool)),
        "many_shot_accuracy": _mean_of(per_class, groups["many"]),
        "medium_shot_accuracy": _mean_of(per_class, groups["medium"]),
        "few_shot_accuracy": _mean_of(per_class, groups["few"]),
        "num_many_shot_classes": int(groups["many"].sum()),
        "num_medium_shot_classes": int(groups["medium"].sum()),
        "num_few_shot_classes": int(groups["few"].sum()),
        "num_test_images": int(n),
    }
