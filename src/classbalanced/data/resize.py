"""Resized copies of a dataset's images (``classbalanced prepare --resize S``).

Decoding dominates the input pipeline at iNaturalist sizes; a copy of every image with its
short side reduced to ``S`` (:func:`resize_images`, in several processes) is what training
reads instead of the originals. Each copy carries its source's mtime, so that a prepare run
again redoes only the images that changed.

Example:
    >>> import os, tempfile
    >>> from PIL import Image
    >>> d = tempfile.mkdtemp()
    >>> Image.new("RGB", (400, 300)).save(os.path.join(d, "a.png"))
    >>> resize_images(d, os.path.join(d, "small"), ["a.png", "gone.png"], 150)
    ['gone.png']
    >>> Image.open(os.path.join(d, "small", "a.png")).size
    (200, 150)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial

from PIL import Image

from .images import to_rgb

__all__ = ["resize_copy", "resize_images"]


def resize_copy(src: str, dest: str, short_side: int) -> bool:
    """Write ``src`` to ``dest`` with its short side reduced to ``short_side`` (bicubic; JPEGs
    re-encoded at quality 90, other formats kept, or PNG, under the same name, for one PIL
    reads but cannot write: PSD, XPM, ...); an image already that small is copied as is.
    The copy takes the mtime of ``src``: a ``dest`` with the same mtime was made from this
    version of ``src`` (nothing to do); any other (a source replaced, even by an older file) is
    made again. False: ``src`` is missing or unreadable, and no copy of it is left at ``dest``.
    The file appears at once (written to a temporary name, then renamed).
    """
    try:
        stamp = os.stat(src)
        if os.path.isfile(dest) and os.stat(dest).st_mtime_ns == stamp.st_mtime_ns:
            return True
        with Image.open(src) as img:
            fmt, (w, h) = img.format, img.size
            fmt = "JPEG" if fmt == "MPO" else fmt  # a camera JPEG with a multi-picture extension
            short = min(w, h)
            if short <= short_side:
                out = None
            else:
                new = (max(1, round(w * short_side / short)), max(1, round(h * short_side / short)))
                new = (short_side, new[1]) if w <= h else (new[0], short_side)
                img.draft("RGB", new)  # decode no larger than needed (JPEG)
                img.load()
                rgb = img if img.mode in ("RGB", "L") else to_rgb(img)  # 16-bit grey: scaled
                out = rgb.resize(new, Image.Resampling.BICUBIC)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        if os.path.isfile(dest):  # a copy of an earlier version: training must not read it
            os.unlink(dest)
        return False
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = os.path.join(os.path.dirname(dest), f".{os.path.basename(dest)}.tmp")
    try:
        if out is None:
            shutil.copyfile(src, tmp)
        else:
            fmt = fmt if fmt in Image.SAVE else "PNG"  # PIL reads it, cannot write it: lossless
            out.save(tmp, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        os.utime(tmp, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return True


def resize_images(root, out, rels: Sequence[str], short_side: int, workers: int = 0) -> list[str]:
    """:func:`resize_copy` of every ``root/rel`` to ``out/rel`` (``workers`` processes; 0: here).

    Returns the relative paths that could not be read (they are left out of ``out``).
    """
    if isinstance(short_side, bool) or not isinstance(short_side, int) or short_side < 1:
        raise ValueError(f"resize: expected a short side >= 1 pixel, got {short_side!r}")
    srcs = [os.path.join(root, r) for r in rels]
    dests = [os.path.join(out, r) for r in rels]
    job = partial(resize_copy, short_side=short_side)
    if workers > 0 and len(rels) > 1:
        with ProcessPoolExecutor(workers) as pool:
            done = list(pool.map(job, srcs, dests, chunksize=64))
    else:
        done = [job(s, d) for s, d in zip(srcs, dests, strict=True)]
    return [r for r, ok in zip(rels, done, strict=True) if not ok]
