"""``classbalanced prepare``: one entry above the three parsers of large datasets' layouts.

Two steps, so that a 90-epoch run never re-parses a 100 MB annotation file:

1. :func:`prepare` reads the official layout once through its parser --
   iNaturalist (:mod:`~classbalanced.data.inat`), ImageNet with class-folder or flat
   ``val/`` (:mod:`~classbalanced.data.imagenet`, :mod:`~classbalanced.data.imagenet_val`),
   list files (:mod:`~classbalanced.data.lists`) -- and writes the prepared files next to
   the data in ``<data_dir>/classbalanced-<dataset>/`` (:mod:`~classbalanced.data.prepared`),
   with resized copies of the images on request (:mod:`~classbalanced.data.resize`).
2. :func:`~classbalanced.data.prepared.load_prepared` reads them back; the file-backed
   datasets and loaders (:mod:`~classbalanced.data.loaders`) stream the images.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "train.txt").write_text("a/x.jpg 0\\nb/y.jpg 1\\nb/z.jpg 1\\n")
    >>> _ = (d / "val.txt").write_text("a/v.jpg 0\\n")
    >>> lists = {"train": d / "train.txt", "val": d / "val.txt"}
    >>> layout = prepare("list", d, lists=lists, check_files=False, log=lambda msg: None)
    >>> layout.num_classes, layout.train_counts.tolist(), layout.val_samples
    (2, [1, 2], [('a/v.jpg', 0)])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..files import PathLike
from . import imagenet, inat
from . import lists as list_files  # ``lists``: prepare's argument
from .lists import BENCHMARKS
from .prepared import (
    LIST_DATASETS,
    PreparedLayout,
    check_dataset,
    count_labels,
    prepared_dir,
    write_prepared,
)
from .resize import resize_images

__all__ = ["prepare"]


def _scan_inat(dataset: str, root: Path, opts: dict[str, Any]) -> dict[str, Any]:
    return inat.scan(
        dataset,
        root,
        skip_missing=opts["skip_missing"],
        check_files=opts["check_files"],
        log=opts["log"],
    )


def _scan_imagenet(dataset: str, root: Path, opts: dict[str, Any]) -> dict[str, Any]:
    out = prepared_dir(dataset, root)
    return imagenet.scan(root, out, skip_missing=opts["skip_missing"], log=opts["log"])


def _scan_lists(dataset: str, root: Path, opts: dict[str, Any]) -> dict[str, Any]:
    return list_files.scan(
        dataset,
        root,
        opts["lists"],
        skip_missing=opts["skip_missing"],
        check_files=opts["check_files"],
        allow_size_mismatch=opts["allow_size_mismatch"],
        log=opts["log"],
    )


#: dataset -> scan(dataset, root, options) of its official layout
_SCANNERS: dict[str, Callable[[str, Path, dict[str, Any]], dict[str, Any]]] = {
    "inat2017": _scan_inat,
    "inat2018": _scan_inat,
    "imagenet": _scan_imagenet,
    **{name: _scan_lists for name in LIST_DATASETS},
}


def prepare(
    dataset: str,
    data_dir: PathLike,
    *,
    skip_missing: bool = False,
    check_files: bool = True,
    log: Callable[[str], Any] = print,
    lists: dict[str, PathLike | None] | None = None,
    allow_size_mismatch: bool = False,
    resize: int | None = None,
    workers: int = 0,
) -> PreparedLayout:
    """Scan the official layout of ``dataset`` in ``data_dir``; write ``classbalanced-<dataset>/``.

    No image is opened: annotations are parsed with ``json.load`` and existence is
    checked with one folder listing per image folder (``check_files=False`` skips
    it). Missing images are refused (ValueError naming how many and a few of them)
    unless ``skip_missing``, which leaves them out and records how many.
    ImageNet's ``val/`` may be class folders or the official flat folder with a
    ground-truth file (:mod:`classbalanced.data.imagenet_val`). List datasets
    (:mod:`classbalanced.data.lists`) take ``lists={"train": path, "val": path,
    "test": path}`` (``imagenet_lt`` / ``places_lt``: default names in ``data_dir``)
    and refuse a benchmark list of the wrong size unless ``allow_size_mismatch``.

    ``resize=S`` also writes every image with its short side reduced to ``S`` into
    ``classbalanced-<dataset>/resized-S/`` (same relative paths; ``workers`` processes;
    copies of the current version of an image are kept) and makes it the folder training reads
    (:attr:`PreparedLayout.root`); a later prepare without ``resize`` switches back to the
    originals. Unreadable images are left out of the copy (and skipped in training).

    Raises:
        FileNotFoundError: ``data_dir``, an annotation / list file or a split folder is missing.
        ValueError: invalid JSON (file + line), a missing key, an annotation with an
            unknown image or category, an image without annotation, an image file listed
            twice (or in two splits with two classes; in both with one: a warning), a bad list line
            (file + line), a benchmark list of the wrong size, missing images, a split
            without images (e.g. all of them missing and skipped).
    """
    check_dataset(dataset)
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"data directory not found: expected a folder at {root}")
    _check_prepare_options(
        dataset, lists, allow_size_mismatch, resize, workers, skip_missing, check_files
    )
    opts = {
        "skip_missing": skip_missing,
        "check_files": check_files,
        "log": log,
        "lists": dict(lists or {}),
        "allow_size_mismatch": allow_size_mismatch,
    }
    found = _SCANNERS[dataset](dataset, root, opts)
    ids, names, splits = found["ids"], found["names"], found["splits"]
    train, skipped = splits["train"], found["skipped"]
    _check_not_empty(splits, skipped)
    counts = _train_counts(train, len(ids), names, log)
    eval_split = "test" if "test" in splits else "val"
    found["image_root"] = "."
    if resize is not None:
        found["image_root"] = _resize_cache(dataset, root, splits, resize, workers, log)
    write_prepared(dataset, root, found, counts, eval_split, check_files)
    log(
        f"prepared {dataset}: {len(ids)} classes, "
        + " / ".join(f"{len(v)} {k}" for k, v in splits.items())
        + " images"
        + (f", {skipped} missing images skipped" if skipped else "")
        + f" -> {prepared_dir(dataset, root)}"
    )
    return PreparedLayout(
        dataset=dataset,
        root=root / found["image_root"],
        class_names=list(names),
        train_samples=train,
        val_samples=splits[eval_split],
        train_counts=counts,
        category_ids=list(ids),
        num_skipped=skipped,
        splits=dict(splits),
        eval_split=eval_split,
    )


def _check_not_empty(splits: dict[str, list], skipped: int) -> None:
    """A run cannot train or be evaluated on nothing: every split has an image."""
    for split, samples in splits.items():
        if not samples:
            why = f" ({skipped} listed images are missing: --skip-missing left them out)"
            raise ValueError(
                f"no {split} images: expected at least one, got none{why if skipped else ''}"
            )


def _check_prepare_options(
    dataset: str,
    lists: dict | None,
    allow_size_mismatch: bool,
    resize: int | None,
    workers: int,
    skip_missing: bool,
    check_files: bool,
) -> None:
    """Refuse options that :func:`prepare` would ignore or could not use (one-line ValueError)."""
    if lists and any(lists.values()) and dataset not in LIST_DATASETS:
        raise ValueError(
            f"list files are for --dataset {', '.join(LIST_DATASETS)}, got --dataset {dataset}"
        )
    if skip_missing and not check_files and dataset != "imagenet":  # imagenet: the flat val/'s
        raise ValueError(
            "--skip-missing: missing images are found by the file check: expected it on, got --no-check-files"
        )
    if resize is not None and (
        isinstance(resize, bool) or not isinstance(resize, int) or resize < 1
    ):
        raise ValueError(f"--resize: expected a short side >= 1 pixel, got {resize!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"--workers: expected an integer >= 0, got {workers!r}")
    if workers and resize is None:
        raise ValueError(
            f"--workers: the processes that write resized copies: expected 0 without --resize, got {workers}"
        )
    if allow_size_mismatch and dataset not in BENCHMARKS:
        raise ValueError(
            f"--allow-size-mismatch: for --dataset {' / '.join(BENCHMARKS)} (published sizes), got --dataset {dataset}"
        )


def _train_counts(
    train: Sequence[tuple[str, int]], num_classes: int, names, log: Callable[[str], Any]
) -> np.ndarray:
    """``(C,)`` int64 training images per class; a warning names classes without any."""
    counts = count_labels(train, num_classes)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        log(
            f"warning: {len(empty)} of {num_classes} classes have no training images "
            f"(e.g. {', '.join(names[i] for i in empty[:3])})"
        )
    return counts


def _resize_cache(
    dataset: str, root: Path, splits: dict, short_side: int, workers: int, log: Callable[[str], Any]
) -> str:
    """Resized copies of every image of ``splits``; returns their folder relative to ``root``."""
    rel_dir = f"{prepared_dir(dataset, root).name}/resized-{short_side}"
    # the copies change from here on: an earlier prepared set must not outlive an interruption
    (prepared_dir(dataset, root) / "prepared.json").unlink(missing_ok=True)
    rels = sorted({rel for samples in splits.values() for rel, _ in samples})
    bad = resize_images(root, root / rel_dir, rels, short_side, workers)
    log(
        f"resized copies (short side {short_side}) of {len(rels) - len(bad)} images in {root / rel_dir}"
        + (f"; {len(bad)} unreadable left out (e.g. {', '.join(bad[:3])})" if bad else "")
    )
    return rel_dir
