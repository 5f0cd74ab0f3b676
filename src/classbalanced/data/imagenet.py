"""ImageNet (ILSVRC 2012): the official folders parsed into samples (for ``prepare``).

``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``; the class index is the sorted training
wnids. ``val/`` may also be the official flat folder with a ground-truth file
(:mod:`~classbalanced.data.imagenet_val`). :func:`scan` lists the folders (no image is
opened); :func:`~classbalanced.data.prepare.prepare` writes what it finds in the prepared
format (:mod:`~classbalanced.data.prepared`).

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for rel in ("train/n2/b.JPEG", "train/n1/a.JPEG", "val/n1/c.JPEG"):
    ...     (d / rel).parent.mkdir(parents=True, exist_ok=True)
    ...     _ = (d / rel).write_bytes(b"")
    >>> found = scan(d, d / "out", skip_missing=False, log=print)
    >>> found["names"], found["splits"]["train"], found["splits"]["val"]
    (['n1', 'n2'], [('train/n1/a.JPEG', 0), ('train/n2/b.JPEG', 1)], [('val/n1/c.JPEG', 0)])
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .imagenet_val import flat_val_samples
from .images import IMG_EXTENSIONS
from .sources import flat_digest, source_stamp, tree_digest

__all__ = ["scan"]


def _class_folders(split_dir: Path, what: str, *, allow_flat: bool = False) -> list[str]:
    """Sorted class folder names of ``split_dir``; ``[]`` for a flat folder when ``allow_flat``."""
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"ImageNet layout: expected a folder {what}/ in {split_dir.parent}, got no such folder"
        )
    with os.scandir(split_dir) as it:
        entries = list(it)
    wnids = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    loose = sorted(
        e.name
        for e in entries
        if e.name.lower().endswith(IMG_EXTENSIONS) and not e.name.startswith(".") and e.is_file()
    )
    if wnids and loose:  # the loose images would be left out without a word
        raise ValueError(
            f"ImageNet layout: expected either class folders or loose images in {what}/, got "
            f"{len(wnids)} class folders and {len(loose)} loose images (e.g. {', '.join(loose[:3])})"
        )
    if not wnids:
        if allow_flat and loose:
            return []
        raise ValueError(
            f"ImageNet layout: expected class folders {what}/<wnid>/*.JPEG, got {len(loose)} loose files "
            f"and no folders in {split_dir} (sort the images into class folders first)"
        )
    return wnids


def _folder_images(folder: Path, prefix: str) -> list[str]:
    with os.scandir(folder) as it:
        files = sorted(
            e.name
            for e in it
            if e.name.lower().endswith(IMG_EXTENSIONS) and not e.name.startswith(".")
        )
    for name in files:
        if "\t" in name or "\n" in name or "\r" in name:
            raise ValueError(
                f"ImageNet layout: expected file names without tabs or newlines, got {prefix}/{name!r}"
            )
    return [f"{prefix}/{name}" for name in files]


def scan(root: Path, out: Path, *, skip_missing: bool, log: Callable[[str], Any]) -> dict[str, Any]:
    """Read and check the ``train/`` and ``val/`` folders in ``root`` (``out``: the prepared folder,
    where a devkit archive is parsed); see :func:`classbalanced.data.prepare.prepare`.

    Returns ``sources`` (folder or label file -> stamp), ``ids`` and ``names`` (the sorted
    training wnids), ``splits`` (``train`` / ``val`` -> samples) and ``skipped`` (missing
    images of a flat ``val/`` left out).
    """
    wnids = _class_folders(root / "train", "train")
    index = {w: i for i, w in enumerate(wnids)}
    val_wnids = _class_folders(root / "val", "val", allow_flat=True)
    unknown = [w for w in val_wnids if w not in index]
    if unknown:
        raise ValueError(
            f"ImageNet layout: expected val/ class folders that also exist in train/, "
            f"got {len(unknown)} unknown (e.g. {', '.join(unknown[:3])})"
        )
    train = [
        (rel, i)
        for i, w in enumerate(wnids)
        for rel in _folder_images(root / "train" / w, f"train/{w}")
    ]
    if not train:
        raise ValueError(f"ImageNet layout: expected images in {root / 'train'}/<wnid>/, got none")
    sources: dict[str, Any] = {"train/": tree_digest(root, "train")}
    skipped = 0
    if val_wnids:
        val = [
            (rel, index[w])
            for w in val_wnids
            for rel in _folder_images(root / "val" / w, f"val/{w}")
        ]
        sources["val/"] = tree_digest(root, "val")
    else:  # the official flat val/ folder with a ground-truth file
        val, label_source, skipped = flat_val_samples(root, out, index, skip_missing, log)
        sources["val/"] = flat_digest(root / "val")
        sources[label_source] = source_stamp(root / label_source)
    return {
        "sources": sources,
        "ids": list(wnids),
        "names": list(wnids),
        "splits": {"train": train, "val": val},
        "skipped": skipped,
    }
