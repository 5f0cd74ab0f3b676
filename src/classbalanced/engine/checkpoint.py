"""Checkpoints: atomic writes, the last K kept, safe loading (``weights_only=True``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..data.safe_io import atomic_save

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "list_checkpoints"]

_PATTERN = re.compile(r"^checkpoint-(\d{8,})\.pt$")
FORMAT_VERSION = 1


def _path(folder: Path, step: int) -> Path:
    return folder / f"checkpoint-{step:08d}.pt"


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Checkpoints in ``folder`` sorted by training step (oldest first)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: str | Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def save_checkpoint(folder: str | Path, step: int, state: dict[str, Any], *, keep: int = 2) -> Path:
    """Write ``state`` as ``checkpoint-<step>.pt`` atomically, then drop all but the last ``keep``.

    The new file is complete on disk (fsync + rename) before any older one is
    removed, so a crash at any moment leaves a loadable checkpoint.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = _path(folder, step)
    payload = dict(state, format_version=FORMAT_VERSION, global_step=step)
    atomic_save(path, lambda tmp: torch.save(payload, tmp))
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``: no code in it can run."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling errors, truncated zip files, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot load checkpoint {path}: {first}") from None
    if (
        not isinstance(state, dict)
        or "model" not in state
        or state.get("format_version") != FORMAT_VERSION
    ):
        raise ValueError(
            f"{path} is not a classbalanced checkpoint (expected format_version {FORMAT_VERSION})"
        )
    return state
