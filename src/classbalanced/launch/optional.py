"""Optional engines (Ray, submitit): imported by the launcher that wraps each, when it is
made, or refused with one line naming the extra to install."""

from __future__ import annotations

import importlib

__all__ = ["require"]


def require(module: str, extra: str):
    """Import an optional engine, or fail with one line naming the extra to install.

    >>> require("json", "none").__name__
    'json'
    >>> require("no_such_engine", "ray")
    Traceback (most recent call last):
    ImportError: the ray launcher needs the 'no_such_engine' package: pip install 'classbalanced[ray]'
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"the {extra} launcher needs the {module!r} package: "
            f"pip install 'classbalanced[{extra}]'"
        ) from None
