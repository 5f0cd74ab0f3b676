"""Class-balanced weights for scikit-learn, XGBoost, LightGBM (numpy in, numpy out).

The class weight of class ``i`` with ``n_i`` training samples is the
class-balanced weight ``alpha_i = (1 - beta) / (1 - beta ** n_i)`` (Cui et al.,
2019), here normalised so that the **average weight per sample is 1**::

    w_i = alpha_i * N / sum_j n_j * alpha_j,      so   sum_i n_i * w_i = N.

Why this normalisation (and not ``sum_i w_i = C`` as in
:func:`classbalanced.weights.class_balanced_weights`, to which ``w`` is
proportional): estimators add the weighted per-sample losses to a penalty
whose strength is set for unweighted data (``C`` / ``alpha`` in scikit-learn,
``min_child_weight`` / ``min_sum_hessian_in_leaf`` in XGBoost / LightGBM). With a
mean sample weight of 1 the total weight stays ``N``, so those settings keep
their meaning and only the *balance* between classes changes. It also matches
scikit-learn's own ``class_weight="balanced"`` (``N / (C * n_i)``, mean 1), which
is exactly the ``beta -> 1`` limit; ``beta = 0`` gives all ones (no re-weighting).

Weights are ``1 / E_n`` (the one effective-number formula of :mod:`classbalanced._effective`, float64),
exact and finite for every count and every ``beta`` in ``[0, 1)``.
"""

from __future__ import annotations

import numpy as np

from ._effective import effective_number_formula
from ._validation import check_beta

__all__ = ["class_weight_dict", "sample_weights"]


def _classes(y: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(classes, inverse, counts)`` of a non-empty 1-D label array."""
    array = np.asarray(y)
    if array.ndim != 1:
        raise ValueError(
            f"y must be a 1-D array of labels, got shape {array.shape} (use y.ravel() for a column)"
        )
    if array.size == 0:
        raise ValueError("y must hold at least one label, got an empty array")
    if array.dtype.kind == "f" and bool(np.isnan(array).any()):
        raise ValueError("y must not contain NaN labels")
    if array.dtype.kind == "c":
        raise TypeError(f"y must hold class labels (ints or strings), got dtype {array.dtype}")
    try:
        classes, inverse, counts = np.unique(array, return_inverse=True, return_counts=True)
    except TypeError as error:
        raise TypeError(f"y must hold labels of one comparable type, got {error}") from None
    return classes, inverse.reshape(-1), counts


def _weights(counts: np.ndarray, beta: float) -> np.ndarray:
    n = counts.astype(np.float64)
    alpha = 1.0 / effective_number_formula(n, beta, np.expm1)
    return alpha * (n.sum() / (n * alpha).sum())


def _python_scalar(value):
    return value.item() if isinstance(value, np.generic) else value


def class_weight_dict(y, beta: float) -> dict:
    """Class-balanced ``{label: weight}`` for scikit-learn's ``class_weight=``.

    Args:
        y: 1-D non-empty array-like of training labels (ints, possibly
            non-contiguous, or strings).
        beta: in ``[0, 1)``; 0 gives all ones, ``beta -> 1`` gives
            scikit-learn's ``"balanced"`` weights ``N / (C * n_i)``.

    Returns:
        ``dict`` mapping each label value present in ``y`` (as a Python scalar)
        to its weight (float); the mean weight over the samples of ``y`` is 1.

    >>> class_weight_dict(["cat"] * 3 + ["dog"], beta=0.999999)
    {'cat': 0.667, 'dog': 2.0}

    Training a classifier on long-tailed digits (bundled with scikit-learn, offline):

    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.metrics import balanced_accuracy_score
    >>> X, y = load_digits(return_X_y=True)
    >>> rng = np.random.default_rng(0)
    >>> train, test = [], []
    >>> for c in range(10):  # 100 images of digit 0 ... 2 of digit 9 (imbalance factor 50)
    ...     idx = rng.permutation(np.flatnonzero(y == c))
    ...     test.extend(idx[:40])
    ...     train.extend(idx[40 : 40 + int(100 * (1 / 50) ** (c / 9))])
    >>> weights = class_weight_dict(y[train], beta=0.999)
    >>> plain = LogisticRegression(max_iter=1000).fit(X[train] / 16, y[train])
    >>> balanced = LogisticRegression(max_iter=1000, class_weight=weights).fit(X[train] / 16, y[train])
    >>> recall = [balanced_accuracy_score(y[test], m.predict(X[test] / 16)) for m in (plain, balanced)]
    >>> recall[1] > recall[0]
    True
    """
    beta = check_beta(beta)
    classes, _, counts = _classes(y)
    weights = _weights(counts, beta)
    return {_python_scalar(c): float(w) for c, w in zip(classes, weights, strict=True)}


def sample_weights(y, beta: float) -> np.ndarray:
    """Per-sample class-balanced weights for ``sample_weight=`` (scikit-learn, XGBoost, LightGBM).

    ``sample_weights(y, beta)[k] == class_weight_dict(y, beta)[y[k]]``; the mean is 1.

    Args:
        y: 1-D non-empty array-like of training labels.
        beta: in ``[0, 1)``.

    Returns:
        ``(N,)`` float64 array.

    >>> sample_weights([0, 0, 0, 7], beta=0.999999)
    array([0.667, 0.667, 0.667, 2.0])
    """
    beta = check_beta(beta)
    _, inverse, counts = _classes(y)
    return _weights(counts, beta)[inverse]
