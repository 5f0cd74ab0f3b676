"""What the framework adapters share: importing an optional framework, counting labels.

>>> class_counts([0, 2, 2, -100], num_labels=4)  # -100: Transformers' "ignore" label
tensor([1, 0, 2, 0])
>>> class_counts([[1, 0, 1], [1, 1, 0]])  # multi-hot rows: positives per class
tensor([2, 1, 1])
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .._optional import require
from .._validation import check_positive_int
from ..multilabel import positive_counts

__all__ = ["IGNORE_INDEX", "class_counts", "require"]

#: the label value Transformers' collators and ``num_items_in_batch`` leave out
IGNORE_INDEX = -100


def _multi_hot(rows: list, num_classes: int) -> np.ndarray:
    """``(N, C)`` 0/1 rows from a list of class-index lists (a ``Sequence(ClassLabel)`` column)."""
    matrix = np.zeros((len(rows), num_classes), dtype=np.int64)
    for i, row in enumerate(rows):
        row = np.asarray(row, dtype=np.int64)
        if (row < 0).any():
            raise ValueError(
                f"class_counts expects class indices >= 0, got {row.tolist()} in row {i}"
            )
        matrix[i, row] = 1
    return matrix


def _labels_of(labels, label_column: str) -> tuple[np.ndarray, int | None]:
    """The labels as an array, and the number of classes a ``ClassLabel`` column declares."""
    if hasattr(labels, "column_names") and not hasattr(labels, "features"):
        raise TypeError(
            "class_counts expects one split (e.g. dataset['train']), got a "
            f"{type(labels).__name__} of splits {list(labels.column_names)}"
        )
    if hasattr(labels, "features") and hasattr(labels, "with_format"):  # a datasets.Dataset
        if label_column not in labels.column_names:
            raise ValueError(
                f"class_counts: the dataset has no column {label_column!r}, "
                f"got columns {labels.column_names}"
            )
        feature = labels.features[label_column]
        inner = getattr(feature, "feature", None)
        if inner is not None and hasattr(inner, "num_classes"):  # class indices per example
            return _multi_hot(list(labels[label_column]), inner.num_classes), inner.num_classes
        declared = getattr(feature, "num_classes", None)
        return np.asarray(labels.with_format("numpy")[label_column]), declared
    if isinstance(labels, Tensor):
        return labels.detach().cpu().numpy(), None
    if isinstance(labels, (np.ndarray, list, tuple)):
        try:
            return np.asarray(labels), None
        except ValueError:  # rows of different lengths
            return np.asarray(labels, dtype=object), None
    raise TypeError(
        "class_counts expects a datasets.Dataset, a list, numpy array or tensor of labels, "
        f"got {type(labels).__name__}"
    )


def class_counts(labels, label_column: str = "label", num_labels: int | None = None) -> Tensor:
    """Training examples per class: the ``samples_per_class`` of the losses.

    Args:
        labels: a ``datasets.Dataset`` (its ``label_column``), or a list, numpy array or
            tensor of labels: ``(N,)`` class indices in ``[0, C)`` (entries equal to
            ``-100``, Transformers' ignored label, are not counted), or ``(N, C)``
            multi-hot rows (0/1), counted as positives per class; a ``Dataset`` column of
            class-index lists (``Sequence(ClassLabel)``) counts each example once per label.
        label_column: the column holding the labels of a ``Dataset``.
        num_labels: ``C``; default: the ``ClassLabel`` feature's number of classes, the
            width of multi-hot rows, else the largest label + 1.

    Returns:
        ``(C,)`` int64 tensor on the CPU (a class without examples counts 0: the losses
        refuse it, naming the class).
    """
    array, declared = _labels_of(labels, label_column)
    if num_labels is None:
        num_labels = declared
    if array.dtype == object or array.dtype.kind not in "biuf" or array.ndim not in (1, 2):
        raise TypeError(
            "class_counts expects (N,) class indices or (N, C) multi-hot rows, "
            f"got {'ragged rows' if array.dtype == object else f'dtype {array.dtype}'} "
            f"of shape {array.shape}"
        )
    if array.ndim == 2:
        counts = positive_counts(array)
    else:
        kept = array[array != IGNORE_INDEX]
        if kept.size and (
            kept.dtype.kind == "b" or (kept != np.round(kept)).any() or kept.min() < 0
        ):
            raise ValueError(
                "class_counts expects integer class indices >= 0 (or -100, ignored), "
                f"got values in [{kept.min()}, {kept.max()}] of dtype {kept.dtype}"
            )
        kept = kept.astype(np.int64)
        width = 0 if num_labels is None else num_labels
        counts = torch.from_numpy(np.bincount(kept, minlength=width).astype(np.int64))
    if num_labels is not None and counts.shape[0] != check_positive_int("num_labels", num_labels):
        raise ValueError(
            f"class_counts: labels span {counts.shape[0]} classes, expected num_labels={num_labels}"
        )
    return counts
