import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.utils.class_weight import compute_class_weight

from classbalanced.sklearn_weights import class_weight_dict, sample_weights
from classbalanced.weights import class_balanced_weights

COUNTS = [500, 120, 30, 4]
Y = np.repeat(np.arange(4), COUNTS)


@pytest.mark.parametrize("beta", [0.0, 0.9, 0.99, 0.999, 0.9999])
def test_proportional_to_class_balanced_weights_with_mean_one_per_sample(beta):
    weights = class_weight_dict(Y, beta)
    assert list(weights) == [0, 1, 2, 3]
    w = np.array(list(weights.values()))
    alpha = class_balanced_weights(COUNTS, beta).double().numpy()
    np.testing.assert_allclose(w / w.sum(), alpha / alpha.sum(), rtol=1e-6)
    # the documented normalisation: the average weight per sample is 1
    assert (w * np.array(COUNTS)).sum() == pytest.approx(len(Y), rel=1e-12)
    assert sample_weights(Y, beta).mean() == pytest.approx(1.0, rel=1e-12)


def test_limits():
    assert class_weight_dict(Y, 0.0) == {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}
    np.testing.assert_array_equal(sample_weights(Y, 0.0), np.ones(len(Y)))
    # beta -> 1 is scikit-learn's class_weight="balanced"
    balanced = compute_class_weight("balanced", classes=np.arange(4), y=Y)
    w = np.array(list(class_weight_dict(Y, 1 - 1e-12).values()))
    np.testing.assert_allclose(w, balanced, rtol=1e-6)


def test_non_contiguous_and_string_labels():
    y = np.array([10, 10, 10, -3, 7, 7])
    weights = class_weight_dict(y, 0.99)
    assert list(weights) == [-3, 7, 10]
    assert all(type(k) is int and type(v) is float for k, v in weights.items())
    ref = class_weight_dict(np.array([2, 2, 2, 0, 1, 1]), 0.99)
    assert list(weights.values()) == list(ref.values())
    names = ["cat", "dog", "cat", "emu", "cat", "dog"]
    by_name = class_weight_dict(names, 0.99)
    assert list(by_name) == ["cat", "dog", "emu"]
    assert all(type(k) is str for k in by_name)
    assert by_name["emu"] > by_name["dog"] > by_name["cat"]
    assert class_weight_dict(np.array([1.0, 1.0, 2.0]), 0.5) == class_weight_dict([1, 1, 2], 0.5)


@pytest.mark.parametrize("y", [Y, ["b", "a", "b", "c", "b"], [5, 5, 9]])
def test_sample_weights_index_the_class_dict(y):
    weights = class_weight_dict(y, 0.999)
    per_sample = sample_weights(y, 0.999)
    assert per_sample.dtype == np.float64 and per_sample.shape == (len(y),)
    assert per_sample.tolist() == [weights[label] for label in np.asarray(y).tolist()]


@pytest.mark.parametrize(
    "y, beta, error, match",
    [
        ([], 0.9, ValueError, "at least one label"),
        (np.zeros((3, 1)), 0.9, ValueError, "1-D"),
        ([1.0, float("nan")], 0.9, ValueError, "NaN"),
        ([1, 2], 1.0, ValueError, "beta must be in"),
        ([1, 2], -0.1, ValueError, "beta must be in"),
        ([1, 2], float("nan"), ValueError, "beta must be in"),
        ([1, 2], "0.9", TypeError, "beta must be a number"),
        (np.array([1, "a"], dtype=object), 0.9, TypeError, "one comparable type"),
    ],
)
def test_validation(y, beta, error, match):
    for fn in (class_weight_dict, sample_weights):
        with pytest.raises(error, match=match):
            fn(y, beta)


def test_module_does_not_import_torch():
    """sklearn_weights and what it imports are numpy-only (the package's __init__ imports
    torch, so the package is stood in for by a bare module with the same path)."""
    code = (
        "import os, sys, types\n"
        "package = types.ModuleType('classbalanced')\n"
        "package.__path__ = [os.path.dirname(sys.argv[1])]\n"
        "sys.modules['classbalanced'] = package\n"
        "import classbalanced.sklearn_weights as module\n"
        "print(module.class_weight_dict([0, 0, 1], 0.9)); assert 'torch' not in sys.modules\n"
    )
    import classbalanced.sklearn_weights as sw

    result = subprocess.run(
        [sys.executable, "-c", code, sw.__file__], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def _long_tailed_digits(seed=0, imbalance=50, n_max=100, n_test=40):
    """A long-tailed training subset of the bundled digits and a balanced test set."""
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        test.extend(idx[:n_test])
        train.extend(idx[n_test : n_test + int(n_max * (1 / imbalance) ** (c / 9))])
    return x[train] / 16.0, y[train], x[test] / 16.0, y[test]


def test_sklearn_accepts_both_and_balanced_weights_raise_mean_recall():
    """On long-tailed digits (IF 50: 100 images of digit 0 down to 2 of digit 9, balanced
    test set of 40 per class) class-balanced weights raise the mean per-class recall.

    Margin: over split seeds 0-9 the gain of beta = 0.999 over the unweighted fit was
    0.09-0.14 (at IF 10 only 0.02-0.05, hence IF 50); we require 0.03 on seed 0.
    """
    x, y, x_test, y_test = _long_tailed_digits(seed=0)
    plain = LogisticRegression(max_iter=1000).fit(x, y)
    by_class = LogisticRegression(max_iter=1000, class_weight=class_weight_dict(y, 0.999))
    by_class.fit(x, y)
    by_sample = LogisticRegression(max_iter=1000).fit(x, y, sample_weight=sample_weights(y, 0.999))
    # class_weight= and sample_weight= are the same weighting
    np.testing.assert_allclose(by_class.coef_, by_sample.coef_, rtol=1e-4, atol=1e-4)
    recall = {
        name: balanced_accuracy_score(y_test, model.predict(x_test))
        for name, model in [("plain", plain), ("class", by_class), ("sample", by_sample)]
    }
    assert recall["class"] > recall["plain"] + 0.03, recall
    assert recall["sample"] > recall["plain"] + 0.03, recall
    # string labels work the same way
    names = np.array([f"digit-{d}" for d in range(10)])
    string_fit = LogisticRegression(max_iter=1000, class_weight=class_weight_dict(names[y], 0.999))
    string_fit.fit(x, names[y])
    np.testing.assert_allclose(string_fit.coef_, by_class.coef_, rtol=1e-6, atol=1e-6)
