"""class_counts on plain labels (no framework needed) and its one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from classbalanced.integrations._common import class_counts


def test_counts_of_indices_multi_hot_and_ignored_labels_match_bincount():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (200,), generator=generator)
    expected = torch.bincount(labels, minlength=7)
    assert torch.equal(class_counts(labels, num_labels=7), expected)
    assert torch.equal(class_counts(labels.numpy().astype(np.float32), num_labels=7), expected)
    with_ignored = torch.cat([labels, torch.full((9,), -100)])
    assert torch.equal(class_counts(with_ignored.tolist(), num_labels=7), expected)
    multi_hot = torch.rand(50, 4, generator=generator) < 0.3
    assert torch.equal(class_counts(multi_hot), multi_hot.sum(0))
    assert class_counts(multi_hot.int(), num_labels=4).dtype == torch.int64


@pytest.mark.parametrize(
    ("labels", "error", "message"),
    [
        ([0, -1, 2], ValueError, r"integer class indices >= 0 \(or -100, ignored\)"),
        ([0, 1.5], ValueError, "integer class indices"),
        ([True, False], ValueError, "integer class indices"),
        (["a", "b"], TypeError, "dtype <U1"),
        ([[0, 1], [1]], TypeError, "ragged rows"),
        ([[0, 2], [1, 0]], ValueError, "only 0/1"),
        (np.zeros((2, 2, 2)), TypeError, r"shape \(2, 2, 2\)"),
        ({"train": [0, 1]}, TypeError, "got dict"),
    ],
)
def test_bad_labels_are_refused_in_one_line(labels, error, message):
    with pytest.raises(error, match=message):
        class_counts(labels)


def test_more_labels_than_num_labels_is_refused():
    with pytest.raises(ValueError, match="labels span 4 classes, expected num_labels=3"):
        class_counts([0, 3], num_labels=3)
