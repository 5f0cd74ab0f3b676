"""Pure classification metrics for imbalanced data, from summable counts.

Every metric here is a function of counts that add across batches and distributed ranks
(sum them, never average twice):

* ``total (C,)`` test images per true class, ``true_positive (C,)`` right at top-1,
  ``predicted (C,)`` top-1 predictions per class, the confusion matrix ``(C, C)``
  (rows: true class, columns: predicted class);
* the calibration bins ``(3, M)``: per bin of top-1 confidence, the number of images,
  the sum of their confidences and the number right.

From them:

* per-class recall ``R_c = TP_c / total_c``, precision ``P_c = TP_c / predicted_c`` and
  ``F1_c = 2 TP_c / (total_c + predicted_c)`` (``= 2PR / (P + R)``; 0 where a
  denominator is 0, scikit-learn's ``zero_division=0``);
* balanced accuracy = the mean recall over the classes with test images
  (``sklearn.metrics.balanced_accuracy_score``);
* macro-F1 = the mean F1 over the classes that have a test image or a prediction
  (``sklearn.metrics.f1_score(average="macro")``);
* expected calibration error (Guo et al., ICML 2017), ``M`` equal-width bins
  ``((m-1)/M, m/M]`` of the top-1 confidence:
  ``ECE = sum_m |B_m| / N * |acc(B_m) - conf(B_m)|``;
* the many / medium / few-shot groups: classes with more than 100, 20 to 100 and fewer
  than 20 training images.

>>> cm = confusion_matrix(torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 1, 1]), 2)
>>> cm.tolist()
[[1, 1], [0, 2]]
>>> balanced_accuracy(cm), macro_f1(cm)
(0.75, 0.7333333333333334)
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "ECE_BINS",
    "MANY_SHOT",
    "FEW_SHOT",
    "accuracy",
    "balanced_accuracy",
    "calibration_bins",
    "confusion_matrix",
    "expected_calibration_error",
    "group_mean",
    "macro_f1",
    "per_class_prf",
    "prf_from_counts",
    "shot_groups",
    "top1_confidence",
]

ECE_BINS = 15  # equal-width bins of top-1 confidence (Guo et al., 2017)
MANY_SHOT = 100  # many-shot: more than 100 training images
FEW_SHOT = 20  # few-shot: fewer than 20 training images


def _check_labels(name: str, labels: Tensor, num_classes: int) -> Tensor:
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(
            f"expected {name} as integer class indices (N,), got {labels.dtype} {tuple(labels.shape)}"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"expected {name} in [0, {num_classes}), got values in [{int(labels.min())}, {int(labels.max())}]"
        )
    return labels.long()


def confusion_matrix(predictions: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    """``(C, C)`` int64 counts: entry ``[t, p]`` is the number of images of true class ``t``
    predicted as ``p``. ``predictions (N,)``, ``targets (N,)`` integer class indices in
    ``[0, num_classes)``; on the device of ``targets``.

    >>> confusion_matrix(torch.tensor([2, 0]), torch.tensor([2, 1]), 3).tolist()
    [[0, 0, 0], [1, 0, 0], [0, 0, 1]]
    """
    targets = _check_labels("targets", targets, num_classes)
    predictions = _check_labels("predictions", predictions, num_classes).to(targets.device)
    if predictions.shape != targets.shape:
        raise ValueError(
            f"expected predictions and targets of one shape, got {tuple(predictions.shape)} and {tuple(targets.shape)}"
        )
    flat = torch.bincount(targets * num_classes + predictions, minlength=num_classes * num_classes)
    return flat.view(num_classes, num_classes)


def top1_confidence(logits: Tensor) -> tuple[Tensor, Tensor]:
    """``(confidence, prediction)``: the largest softmax probability of each row of
    ``logits (N, C)`` (float32 or wider) and its class.

    >>> conf, pred = top1_confidence(torch.tensor([[0.0, 0.0], [3.0, 1.0]]))
    >>> [round(c, 4) for c in conf.tolist()], pred.tolist()
    ([0.5, 0.8808], [0, 0])
    """
    z = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    confidence, prediction = torch.softmax(z, dim=1).max(dim=1)
    return confidence, prediction


def calibration_bins(confidence: Tensor, correct: Tensor, bins: int = ECE_BINS) -> Tensor:
    """``(3, bins)`` float64 sums per equal-width confidence bin ``((m-1)/M, m/M]``
    (a confidence of 0 falls in the first): number of images, sum of confidences, number
    right. ``confidence (N,)`` in [0, 1], ``correct (N,)`` booleans. Sums add across
    batches.

    >>> calibration_bins(torch.tensor([0.05, 0.95, 1.0]), torch.tensor([False, True, True]), 2).tolist()
    [[1.0, 2.0], [0.05, 1.95], [0.0, 2.0]]
    """
    if bins < 1:
        raise ValueError(f"expected bins >= 1, got {bins}")
    c = confidence.detach().double()
    index = (torch.ceil(c * bins).long() - 1).clamp_(0, bins - 1)
    out = torch.zeros(3, bins, dtype=torch.float64, device=c.device)
    out[0].index_add_(0, index, torch.ones_like(c))
    out[1].index_add_(0, index, c)
    out[2].index_add_(0, index, correct.to(device=c.device, dtype=torch.float64))
    return out


def expected_calibration_error(sums: Tensor) -> float:
    """ECE from :func:`calibration_bins` sums: ``sum_m |B_m| / N * |acc(B_m) - conf(B_m)|``
    (``= sum_m |right_m - confidence_sum_m| / N``); 0.0 for no image.

    >>> round(expected_calibration_error(torch.tensor([[1.0, 2.0], [0.05, 1.95], [0.0, 2.0]])), 6)
    0.033333
    """
    n = float(sums[0].sum())
    return float((sums[2] - sums[1]).abs().sum()) / n if n else 0.0


def prf_from_counts(
    true_positive: Tensor, total: Tensor, predicted: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class ``(precision, recall, f1)`` in float64 from ``(C,)`` counts; 0 where a
    denominator is 0 (scikit-learn's ``zero_division=0``).

    >>> p, r, f = prf_from_counts(torch.tensor([1, 0]), torch.tensor([2, 0]), torch.tensor([1, 1]))
    >>> p.tolist(), r.tolist(), f.tolist()
    ([1.0, 0.0], [0.5, 0.0], [0.6666666666666666, 0.0])
    """
    tp, total, predicted = (t.double().cpu() for t in (true_positive, total, predicted))

    def ratio(a: Tensor, b: Tensor) -> Tensor:
        return torch.where(b > 0, a / b.clamp(min=1), torch.zeros_like(a))

    return ratio(tp, predicted), ratio(tp, total), ratio(2 * tp, total + predicted)


def per_class_prf(confusion: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class ``(precision, recall, f1)`` of a confusion matrix (:func:`prf_from_counts`)."""
    return prf_from_counts(confusion.diagonal(), confusion.sum(1), confusion.sum(0))


def accuracy(confusion: Tensor) -> float:
    """Fraction of all images right at top-1 (0.0 for none)."""
    n = float(confusion.sum())
    return float(confusion.diagonal().sum()) / n if n else 0.0


def balanced_accuracy(confusion: Tensor) -> float | None:
    """Mean recall over the classes with test images (``None``: no image)."""
    total = confusion.sum(1)
    _, recall, _ = per_class_prf(confusion)
    present = total.cpu() > 0
    return float(recall[present].mean()) if bool(present.any()) else None


def macro_f1(confusion: Tensor) -> float | None:
    """Mean F1 over the classes with a test image or a prediction (``None``: no image)."""
    seen = (confusion.sum(1) + confusion.sum(0)).cpu() > 0
    _, _, f1 = per_class_prf(confusion)
    return float(f1[seen].mean()) if bool(seen.any()) else None


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


def group_mean(values: Tensor, mask: Tensor) -> float | None:
    """Mean of ``values`` over ``mask``, NaN entries left out (``None``: nothing left).

    >>> group_mean(torch.tensor([1.0, float("nan"), 0.0]), torch.tensor([True, True, False]))
    1.0
    """
    selected = values[mask & ~torch.isnan(values)]
    return None if selected.numel() == 0 else float(selected.mean())
