"""List-file datasets: ImageNet-LT, Places-LT (Liu et al., CVPR 2019) and any ``path label`` list.

A list file holds one image per line, ``relative/path label``, the path relative
to the data folder (``--data-dir``) and the label a class index ``0..C-1``::

    train/n01440764/n01440764_10026.JPEG 0          (ImageNet_LT_train.txt)
    val/n01440764/ILSVRC2012_val_00000293.JPEG 0    (ImageNet_LT_test.txt)
    train/airfield/00000001.jpg 0                   (Places_LT_train.txt)
    val/airfield/Places365_val_00000001.jpg 0       (Places_LT_test.txt)

Datasets (all through ``classbalanced prepare`` and ``train --dataset NAME``):

* ``imagenet_lt``: ``ImageNet_LT_{train,val,test}.txt`` over an ImageNet root
  (the test list is ImageNet's validation images sorted into class folders);
  ImageNet's official flat ``val/`` folder serves too: ``val/<wnid>/X.JPEG`` is read as
  ``val/X.JPEG`` where only the latter exists (:func:`flat_val_paths`);
* ``places_lt``: ``Places_LT_{train,val,test}.txt`` over a folder in the lists' own layout,
  ``train/<class>/...`` and ``val/<class>/Places365_val_*.jpg`` (Places365-Standard's
  ``data_256/<letter>/<class>/`` and flat ``val_256/`` downloads are arranged into it:
  docs/training.md, "Places-LT");
* ``list``: any such files (``--train-list``, ``--val-list``, ``--test-list``),
  e.g. the iNaturalist 2018 lists of the decoupling paper (Kang et al., ICLR 2020).

The two benchmarks' training lists are checked against the published sizes
(:data:`BENCHMARKS`); a list that does not match is refused unless
``allow_size_mismatch``. Runs evaluate on the test list when there is one (the
split the papers report), otherwise on the val list; the val list then serves
to choose post-hoc settings such as the tau of tau-normalisation.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "train.txt").write_text("a/x.jpg 1\\nb/y.jpg 0\\n")
    >>> read_list(d / "train.txt")
    [('a/x.jpg', 1), ('b/y.jpg', 0)]
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..files import PathLike
from .prepared import prepare_hint, prepared_dir, read_prepared_meta
from .sources import check_across_splits, drop_missing, source_stamp

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "flat_val_paths",
    "check_benchmark_sizes",
    "check_prepared_lists",
    "list_paths",
    "read_list",
    "scan",
]

SPLITS = ("train", "val", "test")
_LABEL = re.compile(r"-?[0-9]+")  # ASCII digits (a minus sign: refused as out of range)


@dataclass(frozen=True)
class Benchmark:
    """A published list-file benchmark: its list names and the sizes of its training list."""

    title: str
    source: str
    files: dict[str, str]
    num_classes: int
    num_train: int
    max_per_class: int
    min_per_class: int


def _liu2019(title: str, prefix: str, **sizes: int) -> Benchmark:
    """A benchmark of Liu et al., CVPR 2019: lists ``{prefix}_{train,val,test}.txt``."""
    files = {s: f"{prefix}_{s}.txt" for s in SPLITS}
    return Benchmark(title, "Liu et al., CVPR 2019", files, **sizes)


#: the published sizes (Liu et al., "Large-Scale Long-Tailed Recognition in an Open World", CVPR 2019)
BENCHMARKS: dict[str, Benchmark] = {
    "imagenet_lt": _liu2019(
        "ImageNet-LT",
        "ImageNet_LT",
        num_classes=1000,
        num_train=115_846,
        max_per_class=1280,
        min_per_class=5,
    ),
    "places_lt": _liu2019(
        "Places-LT",
        "Places_LT",
        num_classes=365,
        num_train=62_500,
        max_per_class=4980,
        min_per_class=5,
    ),
}


def _bad_path(rel: str) -> str | None:
    """Why ``rel`` is not a usable relative path (None when it is)."""
    if rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        return "a path relative to the data folder"
    if "\\" in rel:
        return "a path with / separators"
    if ".." in rel.split("/"):
        return "a path inside the data folder"
    if "\t" in rel:
        return "a path without tabs"
    return None


def read_list(
    path: PathLike, num_classes: int | None = None, *, train: bool = False, classes_of: str = ""
) -> list[tuple[str, int]]:
    """Parse a ``relative/path label`` list file into ``(path, label)`` pairs, in file order.

    UTF-8, with or without a byte-order mark; ``LF`` or ``CR LF`` line ends. Blank lines are
    ignored; the label is the last whitespace-separated field (so a path may hold spaces);
    paths are normalised (``./a//b`` is ``a/b``), so that one image cannot be listed twice.
    ``num_classes`` bounds the labels to ``[0, num_classes)`` (``classes_of``: where that number
    comes from, for the error message); without it, a ``train`` list's
    classes are ``0 ..`` its largest label, which may not exceed the number of images (more
    classes than images leave some without any; a typo'd label would make billions).

    Raises:
        FileNotFoundError: no such file.
        ValueError: one line, naming the file and line: a line without a label, a label that
            is not an integer or is out of range, an absolute path or one with ``..``, a path
            listed twice.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"list file not found: expected a file at {path}")
    try:
        # -sig: a BOM is not text; LF, CR LF and CR end lines (not splitlines()'s other
        # separators: \x1c, \x85, \u2028, ... may be in a file name)
        lines = path.read_text(encoding="utf-8-sig").split("\n")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path.name}: expected UTF-8 text, got {exc.reason}") from None
    samples: list[tuple[str, int]] = []
    first_line: dict[str, int] = {}
    per_image = sum(1 for line in lines if line.strip()) if train and num_classes is None else None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.strip().rsplit(None, 1)
        if len(parts) != 2:
            raise ValueError(f"{path.name}: line {n}: expected 'relative/path label', got {line!r}")
        rel, label_text = parts
        if not _LABEL.fullmatch(label_text):  # int() would take 1_0, +1 and non-ASCII digits
            raise ValueError(
                f"{path.name}: line {n}: expected an integer class index, got {label_text!r}"
            )
        label = int(label_text)
        high = f"{num_classes}" if num_classes is not None else "C"
        high += f" ({classes_of})" if classes_of else ""
        if label < 0 or (num_classes is not None and label >= num_classes):
            raise ValueError(
                f"{path.name}: line {n}: label out of range: expected 0 <= label < {high}, got {label}"
            )
        if per_image is not None and label >= per_image:
            raise ValueError(
                f"{path.name}: line {n}: label {label} makes {label + 1} classes for {per_image} "
                f"training images: expected a class index below {per_image} (every class needs training images)"
            )
        why = _bad_path(rel)
        if why:
            raise ValueError(f"{path.name}: line {n}: expected {why}, got {rel!r}")
        spelled, rel = rel, posixpath.normpath(rel)  # ./a, a//b, a/./b, a/ -> one image's path
        previous = first_line.setdefault(rel, n)
        if previous != n:
            same = f" = {rel}" if spelled != rel else ""
            raise ValueError(
                f"{path.name}: line {n}: duplicated path {spelled}{same} (already listed at line {previous})"
            )
        samples.append((rel, label))
    if not samples:
        raise ValueError(f"{path.name}: expected at least one 'path label' line, got none")
    return samples


def list_paths(dataset: str, data_dir: PathLike, given: dict[str, Any]) -> dict[str, Path]:
    """The list file of each split: the given ones, else the benchmark's names in ``data_dir``.

    ``list`` needs at least ``train`` and one of ``val`` / ``test``; a benchmark's
    default files that do not exist are left out (its train list is required).
    """
    root = Path(data_dir)
    paths = {s: Path(p) for s, p in given.items() if p}
    bench = BENCHMARKS.get(dataset)
    if bench is not None:
        for split, name in bench.files.items():
            if split not in paths and (root / name).is_file():
                paths[split] = root / name
        if "train" not in paths:
            raise FileNotFoundError(
                f"{bench.title}: expected {bench.files['train']} in {root} (or --train-list PATH), got no such file"
            )
    if "train" not in paths:
        raise ValueError(f"--dataset {dataset} needs --train-list PATH")
    if "val" not in paths and "test" not in paths:
        raise ValueError(f"--dataset {dataset} needs --val-list PATH or --test-list PATH")
    return {s: paths[s] for s in SPLITS if s in paths}


def check_benchmark_sizes(dataset: str, counts: np.ndarray, list_name: str) -> str | None:
    """``None`` when ``counts`` (training images per class) match the published benchmark,
    else a one-line description of the difference.

    >>> check_benchmark_sizes("places_lt", np.array([4980] + [5] * 364), "x.txt")
    'x.txt does not match Places-LT (Liu et al., CVPR 2019): expected 365 classes, 62500 training images, 4980 to 5 per class, got 365 classes, 6800 images, 4980 to 5 per class'
    """
    bench = BENCHMARKS[dataset]
    expected = (bench.num_classes, bench.num_train, bench.max_per_class, bench.min_per_class)
    got = (len(counts), int(counts.sum()), int(counts.max()), int(counts.min()))
    if got == expected:
        return None
    return (
        f"{list_name} does not match {bench.title} ({bench.source}): expected {expected[0]} classes, "
        f"{expected[1]} training images, {expected[2]} to {expected[3]} per class, got {got[0]} classes, "
        f"{got[1]} images, {got[2]} to {got[3]} per class"
    )


def _class_names(train: Sequence[tuple[str, int]], num_classes: int) -> list[str]:
    """Each class's name: the folder of its first training image below the split folder
    (``train/n01440764/x.JPEG`` -> ``n01440764``, ``train/airfield/x.jpg`` -> ``airfield``)."""
    names: dict[int, str] = {}
    for rel, label in train:
        if label not in names:
            parts = rel.split("/")[:-1]
            names[label] = "/".join(parts[1:]) if len(parts) > 1 else "/".join(parts)
    return [names.get(i) or str(i) for i in range(num_classes)]


_WNID_VAL = re.compile(r"^val/n\d{8}/(ILSVRC2012_val_\d{8}\.JPEG)$")


def flat_val_paths(root: Path, samples: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """ImageNet-LT's ``val/<wnid>/ILSVRC2012_val_N.JPEG`` as ``val/ILSVRC2012_val_N.JPEG``
    where the class folder's file is missing and ImageNet's flat ``val/`` holds it (one
    folder listing; the label stays the list's)."""
    folder = root / "val"
    if not folder.is_dir():
        return samples
    flat = {e.name for e in os.scandir(folder) if e.is_file()}
    out = []
    for rel, label in samples:
        match = _WNID_VAL.match(rel)
        if match and match[1] in flat and not (root / rel).is_file():
            rel = f"val/{match[1]}"
        out.append((rel, label))
    return out


def scan(
    dataset: str,
    root: Path,
    lists: dict[str, Any],
    *,
    skip_missing: bool,
    check_files: bool,
    allow_size_mismatch: bool,
    log: Callable[[str], Any],
) -> dict[str, Any]:
    """Read and check the list files of ``dataset``; see :func:`classbalanced.data.prepare.prepare`.

    Returns ``sources`` (absolute list file path -> size / mtime), ``ids`` and ``names``
    (one per class), ``splits`` (split -> samples), ``skipped`` (missing images left
    out) and ``lists`` (split -> absolute list file path).
    """
    paths = list_paths(dataset, root, lists)
    bench = BENCHMARKS.get(dataset)
    train = read_list(paths["train"], bench.num_classes if bench else None, train=True)
    counts = np.bincount([label for _, label in train]).astype(np.int64)
    num_classes = len(counts)  # a list: its largest training label + 1
    if bench is not None:
        padded = np.pad(counts, (0, bench.num_classes - len(counts)))
        mismatch = check_benchmark_sizes(dataset, padded, paths["train"].name)
        if mismatch and not allow_size_mismatch:
            raise ValueError(
                f"{mismatch}; pass --allow-size-mismatch to use it anyway (or --dataset list)"
            )
        if mismatch:  # used anyway: the classes are those of the list
            log(f"warning: {mismatch}")
        else:
            num_classes = bench.num_classes
    classes_of = f"the classes of {paths['train'].name}: 0 to its largest label"
    if bench is not None and num_classes == bench.num_classes:
        classes_of = f"{bench.title}'s {num_classes} classes"
    splits = {"train": train}
    for split in ("val", "test"):
        if split in paths:
            splits[split] = read_list(paths[split], num_classes, classes_of=classes_of)
    if dataset == "imagenet_lt":  # the val / test lists over ImageNet's flat val/ too
        for split in ("val", "test"):
            if split in splits:
                splits[split] = flat_val_paths(root, splits[split])
    check_across_splits(splits, {s: p.name for s, p in paths.items()}, log)
    skipped = {}
    if check_files:
        for split, samples in splits.items():
            splits[split], skipped[split] = drop_missing(
                root, samples, paths[split].name, skip_missing, log
            )
        if skipped["train"] and bench is not None:  # missing val / test images leave it as is
            log(
                f"warning: {skipped['train']} training images are missing: the training set no "
                f"longer has {bench.title}'s published size"
            )
    sources = {str(p.resolve()): source_stamp(p) for p in paths.values()}
    names = _class_names(splits["train"], num_classes)
    return {
        "sources": sources,
        "ids": list(range(num_classes)),
        "names": names,
        "splits": splits,
        "skipped": sum(skipped.values()),
        "lists": {s: str(p.resolve()) for s, p in paths.items()},
    }


def check_prepared_lists(dataset: str, data_dir: PathLike, given: dict[str, Any]) -> None:
    """Refuse list files that differ from the ones ``prepare`` read (one-line ValueError).

    Training reads the prepared folder; a ``--train-list`` given to ``train`` must be
    the file that was prepared (its content is checked by ``load_prepared``).
    """
    meta_path = prepared_dir(dataset, data_dir) / "prepared.json"
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{dataset} is not prepared in {data_dir}: expected {meta_path}, got no such file; run "
            f"`classbalanced prepare --dataset {dataset} --data-dir {data_dir} --train-list ...` first"
        )
    # read and checked as load_prepared does: a damaged file is named, never a traceback
    meta, _, _ = read_prepared_meta(dataset, meta_path.parent, prepare_hint(dataset, data_dir))
    prepared = meta.get("lists", {})
    for split, path in given.items():
        if path and prepared.get(split) != str(Path(path).resolve()):
            raise ValueError(
                f"--{split}-list {path}: expected the list prepared in {meta_path.parent} "
                f"({prepared.get(split)}); run prepare again with this list"
            )
