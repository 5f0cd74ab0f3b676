"""Helpers shared by the data-layer tests: small noise JPEGs and a silent log."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def noise_jpeg(path: Path, seed: int, size: tuple[int, int] = (20, 14)) -> Path:
    """A ``size`` (width, height) JPEG of seeded uniform noise at ``path`` (folders made)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, "JPEG")
    return path


def quiet(_msg: str) -> None:
    """A ``log`` that prints nothing."""
