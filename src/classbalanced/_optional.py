"""Optional engines (Ray, submitit, Optuna, ONNX, safetensors, Transformers, Lightning):
imported by the code that wraps each, when it is used, or refused with one line naming
the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtra", "require"]


class MissingExtra(ImportError, ValueError):
    """An optional package is not installed (one line naming the extra that brings it)."""


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import the optional ``module`` for ``what``, or raise :class:`MissingExtra` in one
    line naming the extra to install.

    >>> require("json", "none", "this doctest").__name__
    'json'
    >>> require("no_such_engine.sub", "ray", "the ray launcher")
    Traceback (most recent call last):
    classbalanced._optional.MissingExtra: the ray launcher needs the optional package 'no_such_engine': pip install 'classbalanced[ray]'
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(
            f"{what} needs the optional package {module.split('.')[0]!r}: "
            f"pip install 'classbalanced[{extra}]'"
        ) from None
