"""What every parser of a dataset layout checks about its files (:mod:`~classbalanced.data.prepare`).

* which listed images are missing (:func:`missing_files`: one folder listing per folder,
  not one ``stat`` per image) and leaving them out or refusing them (:func:`drop_missing`);
* the stamps that tell :func:`~classbalanced.data.prepared.load_prepared` whether a source
  changed since it was prepared (:func:`source_stamp` of a file, :func:`tree_digest` of a
  folder of class folders, :func:`flat_digest` of a flat folder);
* one class per image across the splits (:func:`check_across_splits`).

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a.jpg").write_bytes(b"")
    >>> missing_files(d, ["a.jpg", "b/c.jpg"])
    [1]
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "check_across_splits",
    "drop_missing",
    "flat_digest",
    "missing_files",
    "source_stamp",
    "tree_digest",
]


def missing_files(root: Path, rels: Sequence[str]) -> list[int]:
    """Indices of ``rels`` (``/``-separated, relative to ``root``) that are not files.

    One ``os.scandir`` per distinct folder (much cheaper than one ``stat`` per image
    on a network filesystem); a name not found in its folder listing is checked
    once more with ``os.path.isfile`` (``./`` prefixes, case-insensitive filesystems).
    """
    listing: dict[str, set[str]] = {}
    missing = []
    base_dir = str(root)
    for i, rel in enumerate(rels):
        folder, _, base = rel.rpartition("/")
        names = listing.get(folder)
        if names is None:
            try:
                with os.scandir(os.path.join(base_dir, folder) if folder else base_dir) as it:
                    names = {e.name for e in it if not e.is_dir()}
            except (FileNotFoundError, NotADirectoryError):
                names = set()
            listing[folder] = names
        if base not in names and not os.path.isfile(os.path.join(base_dir, rel)):
            missing.append(i)
    return missing


def drop_missing(
    root: Path,
    samples: list[tuple[str, int]],
    name: str,
    skip_missing: bool,
    log: Callable[[str], Any],
) -> tuple[list[tuple[str, int]], int]:
    missing = missing_files(root, [rel for rel, _ in samples])
    if not missing:
        return samples, 0
    examples = ", ".join(samples[i][0] for i in missing[:3])
    what = f"{len(missing)} of {len(samples)} images referenced by {name} are missing (e.g. {examples})"
    if not skip_missing:
        raise ValueError(f"{what}; pass --skip-missing to train without them")
    log(f"warning: {what}; skipping them")
    drop = set(missing)
    return [s for i, s in enumerate(samples) if i not in drop], len(missing)


def source_stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def tree_digest(root: Path, split: str) -> dict[str, Any]:
    """Count + digest of the class folders' names and mtimes (changes when files are added/removed)."""
    split_dir = root / split
    h = hashlib.sha256()
    n = 0
    with os.scandir(split_dir) as it:
        entries = sorted((e for e in it if e.is_dir()), key=lambda e: e.name)
    for e in entries:
        h.update(f"{e.name}\t{e.stat().st_mtime_ns}\n".encode())
        n += 1
    return {"folders": n, "mtime_digest": h.hexdigest()}


def flat_digest(folder: Path) -> dict[str, Any]:
    """Number of files and mtime of a flat folder (changes when files are added or removed)."""
    with os.scandir(folder) as it:
        n = sum(1 for e in it if not e.is_dir())
    return {"files": n, "mtime_ns": folder.stat().st_mtime_ns}


def check_across_splits(
    splits: dict[str, list[tuple[str, int]]], names: dict[str, str], log: Callable[[str], Any]
) -> None:
    """Refuse an image listed with two labels (one-line ValueError); report training images
    that are evaluated on too (a warning: a list may do it on purpose)."""
    label_of: dict[str, tuple[int, str]] = {}
    for split, samples in splits.items():
        shared = []
        for rel, label in samples:
            first = label_of.setdefault(rel, (label, split))
            if first[0] != label:
                raise ValueError(
                    f"{names[split]}: {rel} has label {label}, but {names[first[1]]} gives it "
                    f"label {first[0]}: expected one class per image"
                )
            if split != "train" and first[1] == "train":
                shared.append(rel)
        if shared:
            log(
                f"warning: {len(shared)} of {len(samples)} images of {names[split]} are in "
                f"{names['train']} too (e.g. {', '.join(shared[:3])})"
            )
