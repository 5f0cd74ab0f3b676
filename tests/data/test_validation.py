"""The stratified validation split: closed-form counts, a partition, seeded, bad fractions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from classbalanced.data.validation import (
    check_val_fraction,
    validation_counts,
    validation_split,
)


def _reference(n: int, fraction: float) -> int:
    """The issue's rule, written apart: round(F n) halves up, >= 1 from 2 images, 0 for 1."""
    if n <= 1:
        return 0
    held = math.floor(fraction * n + 0.5)
    return max(1, held)


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.2, 0.25, 1 / 3, 0.5])
def test_counts_follow_the_rule_and_leave_every_class_a_training_image(fraction):
    counts = np.arange(0, 400)
    held = validation_counts(counts, fraction)
    assert held.tolist() == [_reference(int(n), fraction) for n in counts]
    assert np.all(counts[counts >= 1] - held[counts >= 1] >= 1)


def test_the_split_is_a_stratified_partition_with_the_counts():
    rng = np.random.default_rng(3)
    labels = rng.permutation(np.repeat(np.arange(6), [40, 17, 9, 4, 2, 1]))
    split = validation_split(labels, 0.2, seed=5)
    assert np.intersect1d(split.train, split.val).size == 0
    assert sorted([*split.train, *split.val]) == list(range(len(labels)))
    assert np.bincount(labels[split.val], minlength=6).tolist() == [8, 3, 2, 1, 1, 0]
    assert split.val_counts.tolist() == [8, 3, 2, 1, 1, 0]
    assert split.train_counts.tolist() == np.bincount(labels[split.train]).tolist()
    assert split.singletons == [5]


def test_the_split_is_a_function_of_the_seed():
    labels = np.repeat(np.arange(3), 50)
    a, b = validation_split(labels, 0.3, seed=1), validation_split(labels, 0.3, seed=1)
    c = validation_split(labels, 0.3, seed=2)
    assert np.array_equal(a.val, b.val)
    assert not np.array_equal(a.val, c.val)
    assert np.array_equal(a.val_counts, c.val_counts)


@pytest.mark.parametrize("bad", [0, -0.1, 0.51, 1.0, float("nan"), float("inf")])
def test_a_fraction_outside_the_range_is_one_line(bad):
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 0.5\], got"):
        check_val_fraction(bad)


@pytest.mark.parametrize("bad", ["0.1", True, None])
def test_a_fraction_of_the_wrong_type_is_one_line(bad):
    with pytest.raises(TypeError, match=r"val_fraction must be a number in \(0, 0.5\], got"):
        check_val_fraction(bad)
