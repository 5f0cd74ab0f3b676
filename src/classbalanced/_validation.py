"""Boundary checks shared by the public API: one-line "expected X, got Y" errors."""

from __future__ import annotations

import math
import numbers

__all__ = ["check_beta", "check_gamma", "check_choice", "check_positive_int"]


def _describe(value: object) -> str:
    if isinstance(value, (bool, numbers.Number, str)) or value is None:
        return repr(value)
    return type(value).__name__


def check_beta(beta: object) -> float:
    """Return ``beta`` as a float after checking it lies in [0, 1)."""
    try:
        import torch

        if isinstance(beta, torch.Tensor):
            if beta.numel() != 1:
                raise TypeError(
                    f"beta must be a number in [0, 1), got a tensor of shape {tuple(beta.shape)}"
                )
            beta = beta.item()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real):
        raise TypeError(f"beta must be a number in [0, 1), got {_describe(beta)}")
    value = float(beta)
    if not (0.0 <= value < 1.0):  # also refuses NaN; traceable by torch.compile
        raise ValueError(f"beta must be in [0, 1), got {value!r}")
    return value


def check_gamma(gamma: object) -> float:
    """Return ``gamma`` as a float after checking it is finite and >= 0."""
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real):
        raise TypeError(f"gamma must be a number >= 0, got {_describe(gamma)}")
    value = float(gamma)
    if not (0.0 <= value < math.inf):  # also refuses NaN; traceable by torch.compile
        raise ValueError(f"gamma must be a finite number >= 0, got {value!r}")
    return value


def check_choice(name: str, value: object, choices) -> str:
    """Check that ``value`` is one of ``choices`` (listing them when it is not)."""
    if not isinstance(value, str) or value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"unknown {name} {_describe(value)}: expected one of {valid}")
    return value


def check_positive_int(name: str, value: object) -> int:
    """Check that ``value`` is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {_describe(value)}")
    if int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {int(value)}")
    return int(value)
