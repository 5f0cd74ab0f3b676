"""The one place that prints progress messages for the command line and the launchers."""

from __future__ import annotations

import sys

__all__ = ["info"]


def info(message: str) -> None:
    """Print one progress line on stderr (stdout stays free for results)."""
    print(message, file=sys.stderr, flush=True)
