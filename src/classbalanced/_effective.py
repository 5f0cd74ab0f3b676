"""The effective number of samples, written once for numpy arrays and torch tensors.

``E_n = (1 - beta**n) / (1 - beta)`` (Cui et al., CVPR 2019, eq. 3), computed as
``-expm1(n * log(beta)) / (1 - beta)``: exact for every count, finite as
``beta -> 1`` (no ``0 / 0``). ``beta = 0`` gives ``E_n = 1``. No torch import,
so :mod:`classbalanced.sklearn_weights` stays numpy-only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

__all__ = ["effective_number_formula"]


class _Array(Protocol):
    """What the formula asks of ``counts``: a numpy array or a torch tensor."""

    def __mul__(self, other: float, /) -> Any: ...
    def __neg__(self) -> Any: ...


A = TypeVar("A", bound=_Array)


def effective_number_formula(counts: A, beta: float, expm1: Callable[[A], A]) -> A:
    """``E_n`` of validated float64 ``counts`` (``n > 0``), ``beta`` in ``[0, 1)``.

    ``expm1`` is ``numpy.expm1`` or ``torch.expm1``, matching ``counts``.

    >>> import numpy as np
    >>> effective_number_formula(np.array([1.0, 10.0, 100.0]), 0.9, np.expm1).round(4)
    array([1.    , 6.5132, 9.9997])
    """
    if beta == 0.0:
        return counts * 0.0 + 1.0
    return -expm1(counts * math.log(beta)) / (1.0 - beta)
