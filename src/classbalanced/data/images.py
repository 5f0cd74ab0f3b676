"""Image helpers every file loader of ``data/`` shares: extensions, RGB conversion, bad files.

This module imports nothing else of ``data/``: the in-memory folder loader
(:mod:`~classbalanced.data.arrays`), the streamed datasets
(:mod:`~classbalanced.data.loaders`), the transforms (:mod:`~classbalanced.data.pipeline`),
the device decoding (:mod:`~classbalanced.data.encoded`), the resized copies
(:mod:`~classbalanced.data.resize`) and the ImageNet parser all read images through it.

Example:
    >>> ".jpeg" in IMG_EXTENSIONS, ".txt" in IMG_EXTENSIONS
    (True, False)
"""

from __future__ import annotations

import warnings

import numpy as np
from PIL import Image

__all__ = ["IMG_EXTENSIONS", "BadImageWarning", "to_rgb", "warn_bad_image"]

#: the file name endings read as images (lower case; compare with ``name.lower()``)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class BadImageWarning(UserWarning):
    """An image file could not be decoded; it is skipped."""


def warn_bad_image(msg: str, stacklevel: int = 2) -> None:
    """Warn ``msg`` as a :class:`BadImageWarning`, attributed ``stacklevel`` frames up from the
    caller of this function (2: the caller's caller, as ``warnings.warn``).

    The warning is the one report of a bad image (the command line prints it as one line;
    ``logging.captureWarnings(True)`` routes it to ``logging``): it is not logged as well,
    which printed every bad image twice.
    """
    warnings.warn(msg, BadImageWarning, stacklevel=stacklevel + 1)


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` (decoded) in RGB: ``img.convert("RGB")``, except that 16-bit greyscale (modes
    ``I;16``, ``I;16B``, ...: 16-bit PNGs and TIFFs) is first scaled to 8 bits (``v / 257``,
    rounded) where PIL's conversion clips every level above 255 to white.

    >>> deep = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16))
    >>> deep.mode, np.asarray(to_rgb(deep))[0, :, 0].tolist()
    ('I;16', [0, 128, 255])
    """
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16"):
        levels = (np.asarray(img).astype(np.uint32) + 128) // 257
        img = Image.fromarray(levels.astype(np.uint8))
    return img.convert("RGB")
