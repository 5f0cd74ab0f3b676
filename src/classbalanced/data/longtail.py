"""Long-tailed subsets (Cui et al. 2019, Sec. 5.2): per-class counts and seeded index selection.

With imbalance factor ``IF = n_max / n_min >= 1`` and ``C`` classes, class ``i``
(0-indexed) keeps

* ``exp``:  ``n_i = int(n_max * (1 / IF) ** (i / (C - 1)))``  (C = 1 -> ``[n_max]``)
* ``step``: ``n_max`` for the first ``C // 2`` classes, ``int(n_max / IF)`` for the rest.

Example (CIFAR-10, IF 100 -> 12406 training images):
    >>> counts = longtail_counts(5000, 10, 100)
    >>> counts[0], counts[-1], sum(counts)
    (5000, 50, 12406)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np

from .._validation import check_positive_int

__all__ = ["PROFILES", "Profile", "class_counts", "longtail_counts", "longtail_indices"]

#: long-tail profiles: exponential decay over the classes, or a step (half the classes at n_max)
Profile = Literal["exp", "step"]
PROFILES: tuple[str, ...] = get_args(Profile)


def _check_imbalance_factor(imbalance_factor: float) -> float:
    if isinstance(imbalance_factor, bool) or not isinstance(imbalance_factor, numbers.Real):
        raise TypeError(
            f"imbalance factor: expected a real number >= 1, got {type(imbalance_factor).__name__}"
        )
    value = float(imbalance_factor)
    if not math.isfinite(value):
        raise ValueError(f"imbalance factor: expected a finite number >= 1, got {value}")
    if value < 1:
        if value > 0:
            raise ValueError(
                f"imbalance factor: expected n_max / n_min >= 1, got {value:g}; the old release "
                f"scripts passed the inverse ({value:g} means an imbalance factor of {1 / value:g}): "
                f"pass --imbalance-factor {1 / value:g}"
            )
        raise ValueError(f"imbalance factor: expected a number >= 1 (n_max / n_min), got {value:g}")
    return value


def _floor(x: float) -> int:
    """``int(x)`` for x >= 0, robust to values a rounding error below an integer."""
    nearest = round(x)
    if abs(x - nearest) <= 1e-9 * max(1.0, abs(x)):
        return int(nearest)
    return int(x)


def longtail_counts(
    n_max: int, num_classes: int, imbalance_factor: float, profile: Profile = "exp"
) -> list[int]:
    """Per-class image counts of a long-tailed split.

    Args:
        n_max: images of the head class (class 0).
        num_classes: number of classes C.
        imbalance_factor: IF = n_max / n_min, a real number >= 1 (the paper's
            convention; the old scripts' 0.02 is IF 50).
        profile: "exp" (exponential decay) or "step" (half head, half tail).

    Returns:
        C non-negative ints, non-increasing, ``counts[0] == n_max``.

    Example:
        >>> longtail_counts(500, 100, 200)[-1]   # int(2.5)
        2
        >>> longtail_counts(100, 4, 10, profile="step")
        [100, 100, 10, 10]
    """
    n_max = check_positive_int("n_max", n_max)
    num_classes = check_positive_int("num_classes", num_classes)
    factor = _check_imbalance_factor(imbalance_factor)
    if profile not in PROFILES:
        raise ValueError(f"unknown long-tail profile: expected one of {PROFILES}, got {profile!r}")
    if num_classes == 1:
        return [n_max]
    if profile == "step":
        tail = _floor(n_max / factor)
        head = num_classes // 2
        return [n_max] * head + [tail] * (num_classes - head)
    ratio = 1.0 / factor
    return [_floor(n_max * ratio ** (i / (num_classes - 1))) for i in range(num_classes)]


def class_counts(labels: Sequence[int] | np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Images per class, int64 shape (num_classes,) (default ``max(labels) + 1``).

    Example:
        >>> class_counts([0, 2, 2], num_classes=4).tolist()
        [1, 0, 2, 0]
    """
    y = np.asarray(labels)
    if y.size == 0:
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"labels: expected integer class labels, got {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"labels: expected shape (N,), got {y.shape}")
    if y.size and y.min() < 0:
        raise ValueError(f"labels: expected values >= 0, got {int(y.min())}")
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.size else 0
    else:
        num_classes = check_positive_int("num_classes", num_classes)
        if y.size and y.max() >= num_classes:
            raise ValueError(f"labels: expected values in [0, {num_classes}), got {int(y.max())}")
    return np.bincount(y, minlength=num_classes).astype(np.int64)


def longtail_indices(
    labels: Sequence[int] | np.ndarray,
    imbalance_factor: float,
    *,
    seed: int,
    profile: Profile = "exp",
    num_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Choose a long-tailed subset of a (usually balanced) labelled set.

    ``n_max`` is the largest class's count; class i keeps
    ``min(longtail_counts(n_max, C, IF, profile)[i], available_i)`` images, a
    random subset drawn with ``np.random.default_rng(seed)`` (the result is a
    pure function of ``labels`` and ``seed``). IF 1 keeps every image.

    Returns:
        (indices, counts): int64 positions into ``labels`` sorted ascending, and
        int64 per-class kept counts of shape (C,).

    Example:
        >>> labels = np.repeat(np.arange(3), 10)
        >>> idx, counts = longtail_indices(labels, 10, seed=0)
        >>> counts.tolist(), len(idx)
        ([10, 3, 1], 14)
    """
    y = np.asarray(labels)
    available = class_counts(y, num_classes)
    if available.size == 0 or available.max() == 0:
        raise ValueError("labels: expected at least one labelled image, got none")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    num = len(available)
    target = longtail_counts(int(available.max()), num, imbalance_factor, profile)
    keep = np.minimum(np.asarray(target, dtype=np.int64), available)
    empty = np.flatnonzero(keep == 0)
    if empty.size:
        absent = np.flatnonzero(available == 0)
        c = int(absent[0] if absent.size else empty[0])
        if absent.size:  # no imbalance factor can help: the data has no such image
            raise ValueError(
                f"class {c} has no images in the data: expected at least 1 image of every one of "
                f"the {num} classes (labels 0..{num - 1}), got none of class {c}"
            )
        raise ValueError(
            f"class {c} would keep 0 images: expected at least 1 (available {int(available[c])}, "
            f"target {target[c]} at imbalance factor {float(imbalance_factor):g}); use a smaller imbalance factor"
        )
    rng = np.random.default_rng(int(seed))
    chosen = []
    for c in range(num):
        members = np.flatnonzero(y == c)
        chosen.append(rng.permutation(members)[: keep[c]])
    indices = np.sort(np.concatenate(chosen)).astype(np.int64)
    return indices, keep.astype(np.int64)
