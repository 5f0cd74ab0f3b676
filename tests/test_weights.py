from decimal import Decimal, getcontext

import numpy as np
import pytest
import torch

from classbalanced.weights import as_counts, class_balanced_weights, effective_number

getcontext().prec = 60


def reference_effective_number(n: int, beta: float) -> float:
    """(1 - beta^n) / (1 - beta) in 60-digit decimal arithmetic (beta taken exactly)."""
    b = Decimal(beta)
    return float((1 - b ** int(n)) / (1 - b))


@pytest.mark.parametrize("beta", [0.5, 0.9, 0.99, 0.999, 0.9999, 0.999999, 1 - 1e-12])
@pytest.mark.parametrize("n", [1, 2, 7, 100, 5000, 1_000_000])
def test_effective_number_matches_high_precision_reference(beta, n):
    got = effective_number([n], beta)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(reference_effective_number(n, beta), rel=1e-10)


def test_effective_number_bounds_and_monotone():
    counts = np.arange(1, 2000)
    for beta in (0.0, 0.9, 0.999, 0.99999):
        e = effective_number(counts, beta)
        assert torch.all(e >= 1.0 - 1e-12)
        assert torch.all(e <= torch.from_numpy(counts).double() * (1 + 1e-12))
        assert torch.all(e[1:] >= e[:-1])
    assert torch.equal(effective_number(counts, 0.0), torch.ones(len(counts), dtype=torch.float64))
    # a fractional count (decayed running counts): n <= E_n <= 1
    fractions = torch.tensor([1e-6, 0.01, 0.5, 0.999], dtype=torch.float64)
    for beta in (0.0, 0.5, 0.9, 0.999999):
        e = effective_number(fractions, beta)
        assert torch.all(e >= fractions) and torch.all(e <= 1.0)
    # E_1 == 1 for every beta
    for beta in (0.1, 0.9, 0.999999):
        assert effective_number([1], beta).item() == pytest.approx(1.0, rel=1e-12)


def test_inputs_of_every_kind_agree():
    ref = effective_number([3, 30, 300], 0.99)
    assert torch.equal(effective_number(np.array([3, 30, 300]), 0.99), ref)
    assert torch.equal(effective_number(torch.tensor([3, 30, 300]), 0.99), ref)
    assert torch.equal(effective_number((3.0, 30.0, 300.0), np.float64(0.99)), ref)
    assert torch.equal(effective_number([3, 30, 300], torch.tensor(0.99, dtype=torch.float64)), ref)


def test_weights_sum_to_num_classes_and_are_float32():
    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    for beta in (0.0, 0.9, 0.99, 0.999, 0.9999):
        w = class_balanced_weights(counts, beta)
        assert w.dtype == torch.float32
        assert w.sum().item() == pytest.approx(len(counts), rel=1e-6)
        # rarer classes never get less weight
        assert torch.all(w[1:] >= w[:-1])
    assert torch.equal(class_balanced_weights(counts, 0.0), torch.ones(10))


def test_weights_against_definition():
    counts = [1200, 80, 3]
    beta = 0.99
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    expected = torch.tensor([r * 3 / sum(raw) for r in raw])
    torch.testing.assert_close(class_balanced_weights(counts, beta), expected, rtol=1e-6, atol=0)


def test_float64_weights_are_exact_to_float64():
    counts = [1200, 80, 3]
    for beta in (0.5, 0.99, 0.999999):
        inv = [1 / reference_effective_number(n, beta) for n in counts]
        expected = torch.tensor([r * 3 / sum(inv) for r in inv], dtype=torch.float64)
        got = class_balanced_weights(counts, beta, dtype=torch.float64)
        torch.testing.assert_close(got, expected, rtol=1e-13, atol=0)
        assert torch.equal(got.float(), class_balanced_weights(counts, beta))  # rounded once
    with pytest.raises(
        TypeError, match="dtype must be a floating-point torch.dtype, got torch.int64"
    ):
        class_balanced_weights(counts, 0.9, dtype=torch.int64)


@pytest.mark.parametrize("beta", [0.999999, 1 - 1e-12])
@pytest.mark.parametrize("counts", [[1_000_000, 1], [1, 10, 1000], [1_000_000, 10_000, 100]])
def test_beta_near_one_is_finite_and_exact(beta, counts):
    w = class_balanced_weights(counts, beta)
    assert torch.all(torch.isfinite(w))
    inv = np.array([1 / reference_effective_number(n, beta) for n in counts])
    expected = torch.tensor(inv * len(counts) / inv.sum(), dtype=torch.float32)
    torch.testing.assert_close(w, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("counts", [[1_000_000, 1], [1, 10, 1000], [1_000_000, 10_000, 100]])
def test_beta_to_one_is_inverse_frequency(counts):
    # E_n = n * (1 - O(n * (1 - beta))): with 1 - beta = 1e-12, within 1e-6 of n
    inv = 1.0 / np.asarray(counts, dtype=np.float64)
    expected = torch.tensor(inv * len(counts) / inv.sum(), dtype=torch.float32)
    torch.testing.assert_close(
        class_balanced_weights(counts, 1 - 1e-12), expected, rtol=1e-5, atol=0
    )


@pytest.mark.parametrize(
    "beta, error, match",
    [
        (-0.1, ValueError, r"beta must be in \[0, 1\), got -0.1"),
        (1.0, ValueError, r"beta must be in \[0, 1\), got 1.0"),
        (float("nan"), ValueError, "beta must be in"),
        ("0.9", TypeError, "beta must be a number"),
        (True, TypeError, "beta must be a number"),
        (torch.tensor([0.9, 0.9]), TypeError, "got a tensor of shape"),
    ],
)
def test_bad_beta(beta, error, match):
    with pytest.raises(error, match=match):
        class_balanced_weights([10, 5], beta)


@pytest.mark.parametrize(
    "counts, error, match",
    [
        (
            [10, 0, 5],
            ValueError,
            r"samples_per_class\[1\] must be a finite count > 0, got 0.0: drop that class",
        ),
        ([10, 5, -3], ValueError, r"samples_per_class\[2\]"),
        ([10, float("nan")], ValueError, r"samples_per_class\[1\]"),
        ([], ValueError, "non-empty 1-D"),
        ([[1, 2], [3, 4]], ValueError, "non-empty 1-D"),
        ("abc", TypeError, "list, numpy array or tensor"),
        ([True, False], TypeError, "real numbers"),
        ([[1, 2], [3]], (TypeError, ValueError), "ragged|non-numeric|sequence"),
    ],
)
def test_bad_counts(counts, error, match):
    with pytest.raises(error, match=match):
        effective_number(counts, 0.9)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.uint64, np.int16, np.float16])
def test_counts_of_every_numeric_dtype(dtype):
    """Unsigned counts (numpy or torch) were refused as "not real numbers"."""
    expected = class_balanced_weights([300, 30, 3], 0.99)
    assert torch.equal(class_balanced_weights(np.array([300, 30, 3], dtype=dtype), 0.99), expected)
    tensor = torch.from_numpy(np.array([300, 30, 3], dtype=dtype))
    assert torch.equal(class_balanced_weights(tensor, 0.99), expected)


def test_non_numeric_counts_get_the_library_error():
    with pytest.raises(TypeError, match="samples_per_class must hold real numbers, got dtype <U"):
        as_counts(["3", "5"])
    with pytest.raises(TypeError, match="samples_per_class must hold real numbers"):
        as_counts(np.array([3, 5], dtype=np.complex64))


def test_as_counts_does_not_alias_input():
    source = np.array([4.0, 2.0])
    counts = as_counts(source)
    counts[0] = 100.0
    assert source[0] == 4.0
