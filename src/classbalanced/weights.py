"""Effective number of samples and class-balanced weights (Cui et al., CVPR 2019).

This module has no ``torch.nn`` and no I/O: it turns per-class sample counts
into the numbers that re-weight a loss.

* Effective number of a class with ``n`` samples::

      E_n = (1 - beta ** n) / (1 - beta),     beta in [0, 1)

  ``beta = 0`` gives ``E_n = 1`` (no re-weighting); ``beta -> 1`` gives
  ``E_n -> n`` (inverse-frequency weighting).

* Class-balanced weight of class ``i``::

      alpha_i = 1 / E_{n_i} = (1 - beta) / (1 - beta ** n_i),  normalised so sum_i alpha_i = C.

Both are computed as ``-expm1(n * log(beta)) / (1 - beta)`` in float64, which is
exact for every count and stays finite as ``beta -> 1`` (no ``0 / 0``), e.g.
``beta = 0.999999`` with ``n = 1`` or ``n = 1e6``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ._effective import effective_number_formula
from ._validation import check_beta

__all__ = ["as_counts", "count_vector", "effective_number", "class_balanced_weights"]


def count_vector(counts: object, name: str) -> torch.Tensor:
    """``counts`` as a non-empty 1-D float64 tensor (on a tensor's device), its values not
    judged: :func:`as_counts` wants each > 0, the samplers' probabilities >= 0.

    Accepts a list/tuple, a numpy array or a tensor of real numbers; anything else is a
    ``TypeError`` and another shape a ``ValueError``, each naming the argument ``name``.

    >>> count_vector((3, 0, 1), "counts")
    tensor([3., 0., 1.], dtype=torch.float64)
    """
    if isinstance(counts, torch.Tensor):
        tensor = counts.detach()
    elif isinstance(counts, (np.ndarray, list, tuple)):
        array = np.asarray(counts)
        if array.dtype == object:
            raise TypeError(f"{name} must hold numbers, got a ragged or non-numeric sequence")
        if array.dtype.kind not in "iuf":  # bool, complex, strings
            raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
        tensor = torch.from_numpy(np.array(array, copy=True))
    else:
        raise TypeError(
            f"{name} must be a list, numpy array or tensor of counts, got {type(counts).__name__}"
        )
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {tensor.dtype}")
    if tensor.dim() != 1 or tensor.numel() == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D sequence (one count per class), got shape {tuple(tensor.shape)}"
        )
    return tensor.to(torch.float64)


def as_counts(samples_per_class: Sequence[float] | np.ndarray | torch.Tensor) -> torch.Tensor:
    """Validate per-class sample counts and return them as a 1-D float64 tensor.

    Accepts a list/tuple, a numpy array or a tensor of shape ``(C,)`` with every
    count finite and > 0. A class with zero or negative count is refused, naming
    the class, because its weight would be undefined.

    Under ``torch.compile`` the counts are converted without these checks
    (they would need the values on the host); check them eagerly, or use a
    loss ``Module``, which checks its counts once when it is built.

    >>> as_counts([5000, 500, 50])
    tensor([5000.,  500.,   50.], dtype=torch.float64)
    """
    if torch.compiler.is_compiling():
        return torch.as_tensor(samples_per_class, dtype=torch.float64)
    counts = count_vector(samples_per_class, "samples_per_class")
    bad = ~torch.isfinite(counts) | (counts <= 0)
    if bool(bad.any()):
        index = int(torch.nonzero(bad)[0])
        raise ValueError(
            f"samples_per_class[{index}] must be a finite count > 0, got {counts[index].item()!r}: "
            "drop that class from the label space or pass counts that include it"
        )
    return counts


def effective_number(samples_per_class, beta: float) -> torch.Tensor:
    """Effective number of samples ``E_n = (1 - beta**n) / (1 - beta)`` per class.

    Args:
        samples_per_class: ``(C,)`` counts (list, numpy array or tensor), each > 0.
        beta: hyper-parameter in ``[0, 1)``.

    Returns:
        ``(C,)`` float64 tensor (on the device of a tensor input). ``E_n`` lies
        between 1 and ``n``: ``1 <= E_n <= n`` for ``n >= 1``, ``n <= E_n <= 1`` for
        a fractional count (e.g. decayed running counts).

    >>> effective_number([1, 10, 100], beta=0.9)
    tensor([1.0000, 6.5132, 9.9997], dtype=torch.float64)
    >>> effective_number([1, 10, 100], beta=0.0)
    tensor([1., 1., 1.], dtype=torch.float64)
    """
    beta = check_beta(beta)
    counts = as_counts(samples_per_class)
    return effective_number_formula(counts, beta, torch.expm1)


def class_balanced_weights(
    samples_per_class, beta: float, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Class-balanced weights ``alpha_i = (1 - beta) / (1 - beta**n_i)``, summing to C.

    Args:
        samples_per_class: ``(C,)`` counts (list, numpy array or tensor), each > 0.
        beta: hyper-parameter in ``[0, 1)``; 0 gives all ones, ``beta -> 1``
            approaches inverse-frequency weights ``C * (1/n_i) / sum_j (1/n_j)``.
        dtype: a floating dtype of the result; the weights are computed in float64
            and rounded once (``torch.float64`` for losses computed in float64).

    Returns:
        ``(C,)`` tensor of ``dtype`` (float32 by default) with ``sum == C`` (on the
        device of a tensor input).

    >>> class_balanced_weights([100, 10], beta=0.0)
    tensor([1., 1.])
    >>> class_balanced_weights([100, 10], beta=0.999999)
    tensor([0.1818, 1.8182])
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    # alpha_i / sum_j alpha_j = (E_min / E_i) / sum_j (E_min / E_j): every ratio is in
    # (0, 1], so no 1 / E overflows, even for a count as small as 5e-324
    effective = effective_number(samples_per_class, beta).clamp_min(torch.finfo(torch.float64).tiny)
    ratio = effective.min() / effective
    return (ratio * (ratio.numel() / ratio.sum())).to(dtype)
