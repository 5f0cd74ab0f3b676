from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classbalanced.data import class_counts, longtail_counts, longtail_indices

FACTORS = (200, 100, 50, 20, 10)
# Training-set sizes published with the paper (the paper's Sec. 5.1 and the authors' release).
PUBLISHED = {
    (5000, 10): (11203, 12406, 13996, 17023, 20431),
    (500, 100): (9502, 10847, 12608, 15907, 19573),
}


@pytest.mark.parametrize(("n_max", "num_classes"), sorted(PUBLISHED))
@pytest.mark.parametrize("position", range(len(FACTORS)))
def test_published_training_set_sizes(n_max, num_classes, position):
    factor = FACTORS[position]
    assert (
        sum(longtail_counts(n_max, num_classes, factor))
        == PUBLISHED[(n_max, num_classes)][position]
    )


@pytest.mark.parametrize(("n_max", "num_classes"), [(5000, 10), (500, 100), (2500, 20)])
def test_factor_one_keeps_full_set(n_max, num_classes):
    assert longtail_counts(n_max, num_classes, 1) == [n_max] * num_classes
    assert longtail_counts(n_max, num_classes, 1.0, profile="step") == [n_max] * num_classes


def test_cifar100_if200_tail_is_truncated_to_two():
    counts = longtail_counts(500, 100, 200)
    assert counts[0] == 500
    assert counts[-1] == 2  # int(2.5): a real ratio of 250


def test_exp_matches_formula_with_exact_arithmetic_at_the_ends():
    # Head is n_max, tail is floor(n_max / IF) computed exactly with fractions.
    # (49, 5, 49): the naive float formula gives 0.9999999999999999 -> 0 at the tail.
    for n_max, c, factor in [(49, 5, 49), (300, 7, 3), (5000, 10, 50), (1000, 13, 7), (81, 5, 81)]:
        counts = longtail_counts(n_max, c, factor)
        assert counts[0] == n_max
        assert counts[-1] == int(Fraction(n_max, factor))


@settings(max_examples=60, deadline=None)
@given(
    n_max=st.integers(1, 10_000),
    c=st.integers(2, 60),
    factor=st.floats(1.0, 500.0, allow_nan=False),
)
def test_exp_counts_properties(n_max, c, factor):
    counts = longtail_counts(n_max, c, factor)
    assert len(counts) == c
    assert counts[0] == n_max
    assert all(a >= b for a, b in zip(counts, counts[1:], strict=False))
    for i, n in enumerate(counts):
        exact = n_max * (1 / factor) ** (i / (c - 1))
        assert exact - 1 < n <= exact * (1 + 1e-9) + 1e-9


def test_single_class_and_step_profile():
    assert longtail_counts(123, 1, 50) == [123]
    assert longtail_counts(1000, 5, 10, profile="step") == [1000, 1000, 100, 100, 100]
    assert longtail_counts(1000, 4, 3, profile="step") == [1000, 1000, 333, 333]


def test_inverse_factor_gets_a_hint():
    with pytest.raises(ValueError, match="pass --imbalance-factor 50"):
        longtail_counts(5000, 10, 0.02)
    with pytest.raises(ValueError, match=">= 1"):
        longtail_counts(5000, 10, 0)
    with pytest.raises(ValueError, match=">= 1"):
        longtail_counts(5000, 10, -5)
    with pytest.raises(ValueError, match="finite"):
        longtail_counts(5000, 10, float("nan"))
    with pytest.raises(TypeError):
        longtail_counts(5000, 10, "50")


def test_unknown_profile_lists_choices():
    with pytest.raises(ValueError, match=r"\('exp', 'step'\)"):
        longtail_counts(5000, 10, 50, profile="linear")


def test_bad_sizes():
    with pytest.raises(ValueError, match="num_classes"):
        longtail_counts(5000, 0, 10)
    with pytest.raises(TypeError, match="n_max"):
        longtail_counts(5000.0, 10, 10)


def test_class_counts():
    assert class_counts(np.array([3, 0, 3, 1])).tolist() == [1, 1, 0, 2]
    out = class_counts([0, 0], num_classes=3)
    assert out.dtype == np.int64 and out.tolist() == [2, 0, 0]
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        class_counts([0, 2], num_classes=2)
    with pytest.raises(ValueError, match=">= 0"):
        class_counts([0, -1])
    with pytest.raises(TypeError, match="integer"):
        class_counts(np.array([0.0, 1.0]))


def _balanced_labels(per_class: int, num_classes: int, seed: int = 0) -> np.ndarray:
    labels = np.repeat(np.arange(num_classes), per_class)
    return np.random.default_rng(seed).permutation(labels)


def test_indices_counts_exact_and_subset_of_each_class():
    labels = _balanced_labels(200, 10)
    idx, counts = longtail_indices(labels, 20, seed=3)
    expected = longtail_counts(200, 10, 20)
    assert counts.tolist() == expected
    assert idx.dtype == np.int64 and counts.dtype == np.int64
    assert np.all(np.diff(idx) > 0)  # sorted, no duplicates
    assert np.bincount(labels[idx], minlength=10).tolist() == expected


def test_indices_seeded_reproducibility():
    labels = _balanced_labels(100, 5)
    a, _ = longtail_indices(labels, 10, seed=7)
    b, _ = longtail_indices(labels.copy(), 10, seed=7)
    c, _ = longtail_indices(labels, 10, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # Same per-class counts whatever the seed.
    assert np.bincount(labels[a]).tolist() == np.bincount(labels[c]).tolist()


def test_indices_do_not_touch_global_random_state():
    labels = _balanced_labels(50, 4)
    before = np.random.get_state()[1].copy()  # noqa: NPY002 - checking the legacy global state
    longtail_indices(labels, 10, seed=1)
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # noqa: NPY002


def test_factor_one_keeps_everything():
    labels = _balanced_labels(30, 3)
    idx, counts = longtail_indices(labels, 1, seed=0)
    np.testing.assert_array_equal(idx, np.arange(len(labels)))
    assert counts.tolist() == [30, 30, 30]


def test_unbalanced_input_capped_by_available():
    # Class 1 has fewer images than the formula asks for: keep all of them.
    labels = np.array([0] * 100 + [1] * 5 + [2] * 100)
    idx, counts = longtail_indices(labels, 4, seed=0)
    target = longtail_counts(100, 3, 4)
    assert counts.tolist() == [100, min(target[1], 5), min(target[2], 100)]
    assert len(idx) == counts.sum()


def test_empty_class_is_an_error_naming_the_class():
    labels = _balanced_labels(10, 5)
    first_empty = longtail_counts(10, 5, 50).index(0)  # 10 * 50 ** -0.75 < 1
    with pytest.raises(ValueError, match=f"class {first_empty} .*smaller imbalance factor"):
        longtail_indices(labels, 50, seed=0)
    with pytest.raises(ValueError, match="class 2"):
        longtail_indices(np.array([0, 0, 1, 1]), 1, seed=0, num_classes=3)


def test_indices_requires_keyword_seed():
    with pytest.raises(TypeError):
        longtail_indices(np.array([0, 1]), 1, 0)  # seed is keyword-only


def test_a_class_without_images_is_not_blamed_on_the_imbalance_factor():
    for factor in (1, 10):
        with pytest.raises(ValueError) as info:
            longtail_indices(np.array([0, 0, 1, 1]), factor, seed=0, num_classes=3)
        message = str(info.value)
        assert "class 2 has no images in the data" in message
        assert "imbalance factor" not in message
