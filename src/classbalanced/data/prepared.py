"""The prepared-file format: what :func:`~classbalanced.data.prepare.prepare` writes, read back.

In ``<data_dir>/classbalanced-<dataset>/`` (every file written atomically):

* ``train_counts.txt`` -- one training-image count per line, in class-index
  order (like the release's file); ``train_counts.json`` -- the same list;
* ``class_index.json`` -- ``[{"index", "category_id", "name"}, ...]``;
* ``train.tsv`` / ``val.tsv`` (and ``test.tsv`` for lists) -- ``relative/path<TAB>class index``,
  one per line;
* ``prepared.json`` -- written last: format, dataset, number of classes, counts sum,
  number of skipped images and the stamp of every source
  (:mod:`~classbalanced.data.sources`), so that :func:`load_prepared` notices when the
  annotations changed.

:func:`load_prepared` reads those small files back, checking them against each other and
against the sources, into a :class:`PreparedLayout`.

Example:
    >>> prepared_dir("inat2018", "/data").as_posix()
    '/data/classbalanced-inat2018'
    >>> count_labels([("a.jpg", 2), ("b.jpg", 0), ("c.jpg", 2)], 4).tolist()
    [1, 0, 2, 0]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..files import PathLike, atomic_write_json, atomic_write_text
from .sources import flat_digest, source_stamp, tree_digest

__all__ = [
    "FORMAT_VERSION",
    "LARGE_DATASETS",
    "LIST_DATASETS",
    "PreparedLayout",
    "check_dataset",
    "count_labels",
    "load_prepared",
    "prepare_hint",
    "prepared_dir",
    "read_prepared_meta",
    "write_prepared",
]


#: list-file datasets (:mod:`classbalanced.data.lists`)
LIST_DATASETS = ("list", "imagenet_lt", "places_lt")
LARGE_DATASETS = ("inat2017", "inat2018", "imagenet", *LIST_DATASETS)
FORMAT_VERSION = 1


def check_dataset(dataset: str) -> str:
    if dataset not in LARGE_DATASETS:
        raise ValueError(
            f"unknown dataset {dataset!r}: expected one of {', '.join(LARGE_DATASETS)}"
        )
    return dataset


def prepared_dir(dataset: str, data_dir: PathLike) -> Path:
    """``<data_dir>/classbalanced-<dataset>``: where :func:`prepare` writes its files."""
    return Path(data_dir) / f"classbalanced-{check_dataset(dataset)}"


def prepare_hint(dataset: str, data_dir: PathLike) -> str:
    return f"`classbalanced prepare --dataset {dataset} --data-dir {data_dir}`"


@dataclass
class PreparedLayout:
    """A prepared dataset: class names, ``(relative path, class index)`` samples, train counts.

    Attributes:
        dataset: one of :data:`LARGE_DATASETS`.
        root: the data folder; sample paths are relative to it.
        class_names: one name per class, in class-index order.
        train_samples: ``(relative path, class index)`` pairs of the training set.
        val_samples: the split runs evaluate on: the ``test`` split when the dataset
            has one (list datasets: the papers report the test list), else ``val``.
        train_counts: int64, shape (C,): training images per class.
        category_ids: the source's id of every class (iNat category id, ImageNet wnid).
        num_skipped: images left out by ``prepare(..., skip_missing=True)``.
        splits: every split by name (``train``, ``val`` and, for lists, ``test``).
        eval_split: the name of the split in ``val_samples``.
    """

    dataset: str
    root: Path
    class_names: list[str]
    train_samples: list[tuple[str, int]]
    val_samples: list[tuple[str, int]]
    train_counts: np.ndarray
    category_ids: list[Any] = field(default_factory=list)
    num_skipped: int = 0
    splits: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    eval_split: str = "val"

    def __post_init__(self) -> None:
        if not self.splits:
            self.splits = {"train": self.train_samples, "val": self.val_samples}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def tune_split(self) -> str | None:
        """``val`` when runs are evaluated on another split (post-hoc settings, e.g. decoupling's
        tau, are chosen on it), else ``None``: no split apart from the evaluated one."""
        return "val" if self.eval_split != "val" and self.splits.get("val") else None

    @property
    def tune_samples(self) -> list[tuple[str, int]]:
        """The ``val`` split when runs are evaluated on ``test`` (for choosing post-hoc settings),
        else the evaluated split itself."""
        return self.splits.get("val") or self.val_samples


def count_labels(samples: Sequence[tuple[str, int]], num_classes: int) -> np.ndarray:
    """``(num_classes,)`` int64: how many of ``samples`` (``(path, class index)``) each class has."""
    return np.bincount(
        np.fromiter((label for _, label in samples), dtype=np.int64, count=len(samples)),
        minlength=num_classes,
    ).astype(np.int64)


def _tsv(samples: Sequence[tuple[str, int]]) -> str:
    """``path<TAB>label`` lines ending in ``"\n"`` (paths hold no tab, CR or LF; other
    characters that ``str.splitlines`` breaks at, such as ``\u2028``, may be in them)."""
    if not samples:
        return ""
    return "\n".join(f"{rel}\t{label}" for rel, label in samples) + "\n"


def write_prepared(
    dataset: str, root: Path, found: dict, counts: np.ndarray, eval_split: str, check_files: bool
) -> None:
    out = prepared_dir(dataset, root)
    out.mkdir(parents=True, exist_ok=True)
    splits = found["splits"]
    # prepared.json marks a complete set: drop the old one first, write the new one last
    (out / "prepared.json").unlink(missing_ok=True)
    count_list = [int(c) for c in counts]
    atomic_write_text(out / "train_counts.txt", "".join(f"{c}\n" for c in count_list))
    atomic_write_json(out / "train_counts.json", count_list)
    atomic_write_json(
        out / "class_index.json",
        [
            {"index": i, "category_id": c, "name": n}
            for i, (c, n) in enumerate(zip(found["ids"], found["names"], strict=True))
        ],
    )
    for split, samples in splits.items():
        atomic_write_text(out / f"{split}.tsv", _tsv(samples))
    if "test" not in splits:  # from an earlier prepare with a test list
        (out / "test.tsv").unlink(missing_ok=True)
    meta = {
        "format": FORMAT_VERSION,
        "dataset": dataset,
        "num_classes": len(found["ids"]),
        "counts_sum": int(counts.sum()),
        "num_train": len(splits["train"]),
        "num_val": len(splits[eval_split]),
        "num_skipped": found["skipped"],
        "check_files": bool(check_files),
        "sources": found["sources"],
        "splits": {k: len(v) for k, v in splits.items()},
        "eval_split": eval_split,
        "image_root": found["image_root"],
    }
    if "lists" in found:
        meta["lists"] = found["lists"]
    atomic_write_json(out / "prepared.json", meta)


def _read_tsv(path: Path, num_classes: int) -> list[tuple[str, int]]:
    with open(path, encoding="utf-8") as f:  # lines end at "\n" only: see _tsv
        lines = f.read().split("\n")
    if lines[-1] == "":
        lines.pop()
    samples = []
    try:
        for n, line in enumerate(lines, 1):  # noqa: B007 - n is used in the error message
            rel, _, label = line.rpartition("\t")
            samples.append((rel, int(label)))
    except ValueError:
        raise ValueError(
            f"{path.name}: line {n}: expected 'path<TAB>class index', got {lines[n - 1]!r}"
        ) from None
    labels = np.fromiter((lab for _, lab in samples), dtype=np.int64, count=len(samples))
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        i = int(bad[0])
        raise ValueError(
            f"{path.name}: line {i + 1}: expected a class index in [0, {num_classes}), got {labels[i]}"
        )
    return samples


def _read_counts(path: Path) -> np.ndarray:
    lines = path.read_text(encoding="utf-8").split()
    try:
        return np.array([int(v) for v in lines], dtype=np.int64)
    except ValueError:
        raise ValueError(
            f"{path.name}: expected one integer count per line, got other text"
        ) from None


def load_prepared(dataset: str, data_dir: PathLike) -> PreparedLayout:
    """Read what :func:`prepare` wrote, checking it against itself and the sources.

    Raises:
        FileNotFoundError: not prepared yet (names the ``classbalanced prepare`` command).
        ValueError: the annotations, list files or ImageNet folders changed since prepare;
            ``train_counts.txt`` / ``.json`` disagree with a recount of ``train.tsv``
            (names the first mismatching class); a malformed prepared file.
    """
    check_dataset(dataset)
    root = Path(data_dir)
    out = prepared_dir(dataset, root)
    hint = prepare_hint(dataset, data_dir)
    meta, class_index, counts_json = read_prepared_meta(dataset, out, hint)
    _check_sources(dataset, root, meta.get("sources", {}), hint)
    names = [str(c["name"]) for c in class_index]
    ids = [c["category_id"] for c in class_index]
    num_classes = len(names)
    if num_classes != meta.get("num_classes") or [c["index"] for c in class_index] != list(
        range(num_classes)
    ):
        raise ValueError(
            f"class_index.json: expected indices 0..{meta.get('num_classes', '?')} - 1, got {num_classes} entries; run {hint} again"
        )
    split_names = list(meta.get("splits", {"train": 0, "val": 0}))
    eval_split = meta.get("eval_split", "val")
    splits = {}
    for split in split_names:
        path = out / f"{split}.tsv"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; run {hint} again")
        splits[split] = _read_tsv(path, num_classes)
    train = splits["train"]
    stored = _read_counts(out / "train_counts.txt")
    recount = count_labels(train, num_classes)
    if len(stored) != num_classes:
        raise ValueError(
            f"train_counts.txt: expected {num_classes} counts (one per class), got {len(stored)}; run {hint} again"
        )
    diff = np.flatnonzero(stored != recount)
    if len(diff):
        i = int(diff[0])
        raise ValueError(
            f"train_counts.txt does not match train.tsv: class {i} ({names[i]}) has "
            f"{recount[i]} images in train.tsv, got {stored[i]} in train_counts.txt; run {hint} again"
        )
    if list(counts_json) != recount.tolist():
        raise ValueError(f"train_counts.json does not match train.tsv; run {hint} again")
    val = splits[eval_split]
    if meta.get("counts_sum") != len(train) or meta.get("num_val") != len(val):
        raise ValueError(
            f"prepared.json: expected {meta.get('counts_sum')} train / {meta.get('num_val')} {eval_split} images, "
            f"got {len(train)} / {len(val)} in the .tsv files; run {hint} again"
        )
    image_root = root / meta.get("image_root", ".")
    if not image_root.is_dir():
        raise FileNotFoundError(f"{image_root} (resized copies) is gone; run {hint} again")
    return PreparedLayout(
        dataset=dataset,
        root=image_root,
        class_names=names,
        train_samples=train,
        val_samples=val,
        train_counts=recount,
        category_ids=ids,
        num_skipped=int(meta.get("num_skipped", 0)),
        splits=splits,
        eval_split=eval_split,
    )


def read_prepared_meta(dataset: str, out: Path, hint: str) -> tuple[dict, list, list]:
    """``prepared.json``, ``class_index.json`` and ``train_counts.json``, checked for presence."""
    meta_path = out / "prepared.json"
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{dataset} is not prepared in {out.parent}: expected {meta_path}, got no such file; run {hint} first"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        for name in ("class_index.json", "train_counts.txt", "train_counts.json"):
            if not (out / name).is_file():
                raise FileNotFoundError(f"{out / name} is missing; run {hint} again")
        class_index = json.loads((out / "class_index.json").read_text(encoding="utf-8"))
        counts_json = json.loads((out / "train_counts.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"corrupt prepared file in {out}: {exc.msg} at line {exc.lineno}; run {hint} again"
        ) from exc
    if not isinstance(meta, dict) or meta.get("dataset") != dataset:
        got = meta.get("dataset") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(
            f"{meta_path}: expected dataset {dataset!r}, got {got!r}; run {hint} again"
        )
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(
            f"{meta_path}: expected format {FORMAT_VERSION}, got {meta.get('format')!r}; run {hint} again"
        )
    _check_shapes(meta, class_index, counts_json, hint)
    return meta, class_index, counts_json


def _check_shapes(meta: dict, class_index: Any, counts_json: Any, hint: str) -> None:
    """Refuse prepared files holding other structures than prepare writes (hand-edited ones)."""
    sources, keys = meta.get("sources", {}), {"index", "category_id", "name"}
    wrong = {
        "prepared.json": (
            "'sources' mapping names to objects and 'splits' mapping names to sizes",
            not isinstance(sources, dict)
            or not all(isinstance(s, dict) for s in sources.values())
            or not isinstance(meta.get("splits", {}), dict),
        ),
        "class_index.json": (
            "a list of objects with index, category_id and name",
            not isinstance(class_index, list)
            or not all(isinstance(c, dict) and keys <= c.keys() for c in class_index),
        ),
        "train_counts.json": ("a list of counts", not isinstance(counts_json, list)),
    }
    for name, (expected, bad) in wrong.items():
        if bad:
            raise ValueError(
                f"{name}: expected what prepare writes ({expected}), got other content; run {hint} again"
            )


def _check_sources(dataset: str, root: Path, sources: dict[str, Any], hint: str) -> None:
    for name, stamp in sources.items():
        path = root / name  # list datasets record absolute paths: root / abs == abs
        if "folders" in stamp:  # a folder of class folders
            now = tree_digest(root, name.rstrip("/")) if path.is_dir() else None
        elif "files" in stamp:  # a flat folder of images
            now = flat_digest(path) if path.is_dir() else None
        else:
            now = source_stamp(path) if path.is_file() else None
        if now is None:
            raise FileNotFoundError(f"{path} was used by prepare but is gone; run {hint} again")
        if now != stamp:
            raise ValueError(
                f"{name} changed since it was prepared (expected {stamp}, got {now}); run {hint} again"
            )
