"""The one place that prints progress messages for the command line and the launchers."""

from __future__ import annotations

import sys

__all__ = ["info", "count"]


def info(message: str) -> None:
    """Print one progress line on stderr (stdout stays free for results)."""
    print(message, file=sys.stderr, flush=True)


def count(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1.

    >>> count(1, "epoch"), count(3, "epoch")
    ('1 epoch', '3 epochs')
    """
    return f"{n} {noun}" + ("" if n == 1 else "s")
