"""A stratified validation split of a (long-tailed) training set.

Settings such as beta and gamma must be chosen on data apart from the test set.
:func:`validation_split` holds out, per class ``j`` with ``n_j`` training images,

    ``v_j = floor(F * n_j + 1/2)``  (``F * n_j`` rounded, halves up),

raised to 1 for a class with ``n_j >= 2`` and 0 for a class with a single image
(that image stays for training; such classes are returned so the caller can name
them). With ``0 < F <= 1/2`` every class keeps at least one training image. The
split is drawn with ``np.random.default_rng((seed, SPLIT_STREAM))``: a pure
function of the labels, ``F`` and the seed, and independent of the long-tailed
subset's draw (which uses ``default_rng(seed)``).

Example:
    >>> labels = np.repeat(np.arange(3), [10, 3, 1])
    >>> split = validation_split(labels, 0.2, seed=0)
    >>> split.val_counts.tolist(), split.train_counts.tolist(), split.singletons
    ([2, 1, 0], [8, 2, 1], [2])
    >>> len(split.train), len(split.val)
    (11, 3)
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from .longtail import class_counts

__all__ = [
    "MAX_VAL_FRACTION",
    "SPLIT_STREAM",
    "ValidationSplit",
    "check_val_fraction",
    "validation_counts",
    "validation_split",
]

#: the largest validation fraction: at least as many images of a class stay for training
MAX_VAL_FRACTION = 0.5
#: the second word of the split's seed (its draw never coincides with another seeded draw)
SPLIT_STREAM = 28


def check_val_fraction(fraction) -> float:
    """``fraction`` as a float in ``(0, 0.5]``, else a one-line ValueError / TypeError.

    >>> check_val_fraction(0.6)
    Traceback (most recent call last):
    ValueError: val_fraction must be in (0, 0.5], got 0.6
    """
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real):
        raise TypeError(f"val_fraction must be a number in (0, 0.5], got {fraction!r}")
    value = float(fraction)
    if not (math.isfinite(value) and 0 < value <= MAX_VAL_FRACTION):
        raise ValueError(f"val_fraction must be in (0, {MAX_VAL_FRACTION:g}], got {fraction!r}")
    return value


def validation_counts(counts, fraction: float) -> np.ndarray:
    """Held-out images per class: ``floor(F n + 1/2)``, at least 1 where ``n >= 2``, 0 where
    ``n <= 1`` (int64, the shape of ``counts``).

    >>> validation_counts([100, 7, 5, 2, 1, 0], 0.1).tolist()
    [10, 1, 1, 1, 0, 0]
    """
    fraction = check_val_fraction(fraction)
    n = np.asarray(counts, dtype=np.int64)
    held = np.floor(fraction * n + 0.5).astype(np.int64)
    held = np.where(n >= 2, np.maximum(held, 1), 0)
    return held


@dataclass(frozen=True)
class ValidationSplit:
    """Positions into the labels given: ``train`` and ``val`` (sorted, disjoint, together
    every position); the per-class counts of each; the classes with one image (kept for
    training, none held out)."""

    train: np.ndarray
    val: np.ndarray
    train_counts: np.ndarray
    val_counts: np.ndarray
    singletons: list[int]


def validation_split(
    labels, fraction: float, *, seed: int, num_classes: int | None = None
) -> ValidationSplit:
    """Hold out :func:`validation_counts` images of each class, drawn at random (module
    docstring). ``labels (N,)`` int; ``num_classes`` default ``max(labels) + 1``."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise TypeError(f"seed: expected an int >= 0, got {seed!r}")
    y = np.asarray(labels)
    counts = class_counts(y, num_classes)
    held = validation_counts(counts, fraction)
    rng = np.random.default_rng((int(seed), SPLIT_STREAM))
    val = [rng.permutation(np.flatnonzero(y == c))[: held[c]] for c in range(len(counts))]
    val_positions = np.sort(np.concatenate(val)).astype(np.int64) if val else np.zeros(0, np.int64)
    keep = np.ones(len(y), dtype=bool)
    keep[val_positions] = False
    return ValidationSplit(
        train=np.flatnonzero(keep).astype(np.int64),
        val=val_positions,
        train_counts=counts - held,
        val_counts=held,
        singletons=[int(c) for c in np.flatnonzero(counts == 1)],
    )
