"""Boundary checks shared by the public API: one-line "expected X, got Y" errors."""

from __future__ import annotations

import math
import numbers
import reprlib
import sys
from collections.abc import Collection
from typing import TypeGuard, TypeVar

__all__ = [
    "check_beta",
    "check_gamma",
    "check_real",
    "check_choice",
    "check_int",
    "check_positive_int",
    "check_record",
    "shown",
]

#: the most characters of a value that a message echoes
SHOWN_CHARS = 80
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = SHOWN_CHARS
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = _REPR.maxset = 8
_Choice = TypeVar("_Choice")


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``value`` as a message echoes it: its repr cut to ``limit`` characters, with the
    length of a cut value (a 100 MB string makes no 100 MB message).

    >>> shown("x" * 1000)
    "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'... (1000 characters)"
    >>> shown([1, 2]), shown(0.5)
    ('[1, 2]', '0.5')
    """
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    text = _REPR.repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _describe(value: object) -> str:
    if isinstance(value, (bool, numbers.Number, str)) or value is None:
        return repr(value)
    return type(value).__name__


def check_beta(beta: object) -> float:
    """Return ``beta`` as a float after checking it lies in [0, 1)."""
    torch = sys.modules.get("torch")  # a tensor implies torch is imported; never import it here
    if torch is not None and isinstance(beta, torch.Tensor):
        if beta.numel() != 1:
            raise TypeError(
                f"beta must be a number in [0, 1), got a tensor of shape {tuple(beta.shape)}"
            )
        beta = beta.item()
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real):
        raise TypeError(f"beta must be a number in [0, 1), got {_describe(beta)}")
    value = float(beta)
    if not (0.0 <= value < 1.0):  # also refuses NaN; traceable by torch.compile
        raise ValueError(f"beta must be in [0, 1), got {value!r}")
    return value


def check_real(name: str, value: object, *, positive: bool = False) -> float:
    """Return ``value`` as a float after checking it is finite and ``>= 0`` (``> 0`` if positive).

    Written with comparisons only (NaN fails them), so ``torch.compile`` can trace it.
    """
    bound = "> 0" if positive else ">= 0"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number {bound}, got {_describe(value)}")
    number = float(value)
    above = number > 0.0 if positive else number >= 0.0
    if not (above and number < math.inf):
        raise ValueError(f"{name} must be a finite number {bound}, got {number!r}")
    return number


def check_gamma(gamma: object) -> float:
    """Return ``gamma`` as a float after checking it is finite and >= 0."""
    return check_real("gamma", gamma)


def _is_choice(value: object, choices: Collection[_Choice]) -> TypeGuard[_Choice]:
    return isinstance(value, str) and value in choices


def check_choice(name: str, value: object, choices: Collection[_Choice]) -> _Choice:
    """Check that ``value`` is one of ``choices`` (listing them when it is not)."""
    if not _is_choice(value, choices):
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"unknown {name} {_describe(value)}: expected one of {valid}")
    return value


def check_int(name: str, value: object, minimum: int = 0) -> int:
    """Check that ``value`` is an int (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {_describe(value)}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {int(value)}")
    return int(value)


def check_positive_int(name: str, value: object) -> int:
    """Check that ``value`` is an int >= 1."""
    return check_int(name, value, 1)


def check_record(
    value: object, source: object, keys: tuple[str, ...] = (), kind: type = dict, what: str = ""
) -> None:
    """ValueError unless ``value`` (a JSON file's content, read from ``source``) is a ``kind``
    holding every key of ``keys``; ``what`` names the JSON type (default: ``kind``'s name).

    >>> check_record({"a": 1}, "run.json", ("a", "b"))
    Traceback (most recent call last):
    ValueError: run.json is damaged: it lacks the key(s) b
    """
    if not isinstance(value, kind):
        raise ValueError(
            f"{source} is damaged: expected a JSON {what or kind.__name__}, "
            f"got {type(value).__name__}"
        )
    missing = [k for k in keys if k not in value]  # type: ignore[operator]  # a dict or list
    if missing:
        raise ValueError(f"{source} is damaged: it lacks the key(s) {', '.join(missing)}")
