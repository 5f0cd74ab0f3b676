"""Large-scale image datasets on disk: iNaturalist 2017 / 2018 and ImageNet (ILSVRC 2012).

Two steps, so that a 90-epoch run never re-parses a 100 MB annotation file:

1. :func:`prepare` reads the official layout once and writes, next to the data in
   ``<data_dir>/classbalanced-<dataset>/`` (every file atomically):

   * ``train_counts.txt`` -- one training-image count per line, in class-index
     order (like the release's file); ``train_counts.json`` -- the same list;
   * ``class_index.json`` -- ``[{"index", "category_id", "name"}, ...]``;
   * ``train.tsv`` / ``val.tsv`` -- ``relative/path<TAB>class index``, one per line;
   * ``prepared.json`` -- written last: dataset, number of classes, counts sum,
     number of skipped images and the size + mtime of every source, so that
     :func:`load_prepared` notices when the annotations changed.

   Layouts: iNaturalist -- ``train2017.json`` / ``val2017.json`` (or ``2018``) in
   ``data_dir`` (COCO-like ``images`` / ``annotations`` / ``categories``), image
   ``file_name`` relative to ``data_dir``; the class index is the sorted
   category ids -> ``0..C-1``. ImageNet -- ``train/<wnid>/*.JPEG`` and
   ``val/<wnid>/*.JPEG``; the class index is the sorted training wnids.

2. :func:`load_prepared` reads those small files back (checking them against each
   other and against the sources) into a :class:`PreparedLayout`;
   :class:`ImageFileDataset`, :func:`build_transforms` and :func:`make_loader`
   turn it into a training input pipeline that skips (and counts) unreadable
   images instead of crashing a long run.

Example:
    >>> mean_std("inat2018")
    ((0.466, 0.471, 0.38), (0.195, 0.194, 0.192))
    >>> list(eval_indices(5, 1, 2))
    [1, 3]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFile
from torch.utils.data import DataLoader, Dataset, DistributedSampler, SequentialSampler, Subset

from ..files import atomic_write_json, atomic_write_text
from .arrays import IMG_EXTENSIONS

__all__ = [
    "LARGE_DATASETS",
    "MEAN_STD",
    "BadImageWarning",
    "ImageFileDataset",
    "PreparedLayout",
    "build_transforms",
    "collate_skip_bad",
    "eval_indices",
    "load_prepared",
    "make_datasets",
    "make_loader",
    "mean_std",
    "prepare",
    "prepared_dir",
]

#: list-file datasets (:mod:`classbalanced.data.lists`)
LIST_DATASETS = ("list", "imagenet_lt", "places_lt")
LARGE_DATASETS = ("inat2017", "inat2018", "imagenet", *LIST_DATASETS)
MEAN_STD: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "inat": ((0.466, 0.471, 0.380), (0.195, 0.194, 0.192)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
#: which MEAN_STD entry each dataset uses (ImageNet-LT, Places-LT and lists: ImageNet's, as in
#: the recipes of Liu et al. 2019 and Kang et al. 2020)
_MEAN_STD_OF = {
    "inat2017": "inat",
    "inat2018": "inat",
    "inat": "inat",
    **{name: "imagenet" for name in ("imagenet", *LIST_DATASETS)},
}
FORMAT_VERSION = 1

logger = logging.getLogger(__name__)
PathLike = str | os.PathLike


def _check_dataset(dataset: str) -> str:
    if dataset not in LARGE_DATASETS:
        raise ValueError(
            f"unknown dataset {dataset!r}: expected one of {', '.join(LARGE_DATASETS)}"
        )
    return dataset


def mean_std(dataset: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel ``(mean, std)`` of ``dataset`` (iNaturalist's, or ImageNet's for the others)."""
    key = _MEAN_STD_OF.get(dataset)
    if key is None:
        raise ValueError(
            f"no mean/std for dataset {dataset!r}: expected one of {', '.join(LARGE_DATASETS)}"
        )
    return MEAN_STD[key]


def prepared_dir(dataset: str, data_dir: PathLike) -> Path:
    """``<data_dir>/classbalanced-<dataset>``: where :func:`prepare` writes its files."""
    return Path(data_dir) / f"classbalanced-{_check_dataset(dataset)}"


def _prepare_hint(dataset: str, data_dir: PathLike) -> str:
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


# --------------------------------------------------------------------------- iNaturalist


def _year(dataset: str) -> str:
    return dataset[len("inat") :]


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(
            f"annotation file not found: expected {path.name} in {path.parent}, got no such file"
        )
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path.name}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path.name}: invalid JSON: expected UTF-8 text, got {exc.reason}"
        ) from exc


def _sections(doc: Any, name: str, keys: Sequence[str]) -> list[list[Any]]:
    if not isinstance(doc, dict):
        raise ValueError(f"{name}: expected a JSON object at the top, got {type(doc).__name__}")
    out = []
    for key in keys:
        if key not in doc:
            raise ValueError(f"{name}: missing key {key!r}")
        if not isinstance(doc[key], list):
            raise ValueError(f"{name}: {key!r}: expected a list, got {type(doc[key]).__name__}")
        out.append(doc[key])
    return out


def _entry_error(name: str, section: str, k: int, entry: Any, exc: Exception) -> ValueError:
    if not isinstance(entry, dict):
        return ValueError(f"{name}: {section}[{k}]: expected an object, got {type(entry).__name__}")
    if isinstance(exc, KeyError):
        return ValueError(f"{name}: {section}[{k}]: missing key {exc.args[0]!r}")
    return ValueError(f"{name}: {section}[{k}]: {exc}")  # pragma: no cover - defensive


def _categories(doc: Any, name: str) -> tuple[list[int], list[str]]:
    """Sorted category ids and their names."""
    (cats,) = _sections(doc, name, ["categories"])
    names: dict[int, str] = {}
    for k, cat in enumerate(cats):
        try:
            cid = cat["id"]
            cname = cat.get("name", str(cid))
        except (KeyError, TypeError, AttributeError) as exc:
            raise _entry_error(name, "categories", k, cat, exc) from None
        if not isinstance(cid, int) or isinstance(cid, bool):
            raise ValueError(
                f"{name}: categories[{k}]: expected an integer id, got {type(cid).__name__}"
            )
        if cid in names:
            raise ValueError(f"{name}: categories[{k}]: expected unique ids, got {cid} twice")
        names[cid] = str(cname)
    if not names:
        raise ValueError(f"{name}: 'categories': expected at least one category, got none")
    ids = sorted(names)
    return ids, [names[c] for c in ids]


def _check_rel(name: str, rel: Any, image_id: Any) -> None:
    if not isinstance(rel, str) or not rel:
        raise ValueError(f"{name}: image id {image_id}: expected a file_name string, got {rel!r}")
    if rel.startswith("/") or "\\" in rel or (len(rel) > 1 and rel[1] == ":"):
        raise ValueError(
            f"{name}: image id {image_id}: expected a file_name relative to the data folder, got {rel!r}"
        )
    if ".." in rel.split("/"):
        raise ValueError(
            f"{name}: image id {image_id}: expected a file_name inside the data folder, got {rel!r}"
        )
    if "\t" in rel or "\n" in rel or "\r" in rel:
        raise ValueError(
            f"{name}: image id {image_id}: expected a file_name without tabs or newlines, got {rel!r}"
        )


def _inat_samples(doc: Any, name: str, cat_index: dict[int, int]) -> list[tuple[str, int]]:
    """``(file_name, class index)`` for every image of one iNat annotation file, in file order."""
    images, annotations = _sections(doc, name, ["images", "annotations"])
    files: dict[Any, str] = {}
    k = 0
    try:
        for k, im in enumerate(images):  # noqa: B007 - k names the bad entry
            files[im["id"]] = im["file_name"]
    except (KeyError, TypeError) as exc:
        raise _entry_error(name, "images", k, images[k], exc) from None
    if len(files) != len(images):
        seen: set = set()
        for k, im in enumerate(images):
            if im["id"] in seen:
                raise ValueError(
                    f"{name}: images[{k}]: expected unique ids, got {im['id']!r} twice"
                )
            seen.add(im["id"])
    label_of: dict[Any, int] = {}
    try:
        for k, ann in enumerate(annotations):
            iid = ann["image_id"]
            cid = ann["category_id"]
            label = cat_index.get(cid)
            if label is None:
                raise ValueError(
                    f"{name}: annotations[{k}]: expected a category_id listed in 'categories', got {cid!r}"
                )
            if iid not in files:
                raise ValueError(
                    f"{name}: annotations[{k}]: expected an image_id listed in 'images', got {iid!r}"
                )
            previous = label_of.setdefault(iid, label)
            if previous != label:
                raise ValueError(
                    f"{name}: annotations[{k}]: expected one category per image, got two for image id {iid!r}"
                )
    except (KeyError, TypeError) as exc:
        raise _entry_error(name, "annotations", k, annotations[k], exc) from None
    samples = []
    image_of: dict[str, Any] = {}  # normalised file name -> the first image id listing it
    for k, (iid, rel) in enumerate(files.items()):  # ids are unique: k indexes ``images``
        label = label_of.get(iid)
        if label is None:
            raise ValueError(
                f"{name}: image id {iid!r} ({rel}): expected an annotation for every image, got none"
            )
        if (
            not isinstance(rel, str)
            or rel[:1] in ("", "/")
            or rel[1:2] == ":"
            or "\\" in rel
            or ".." in rel
            or "\t" in rel
            or "\n" in rel
            or "\r" in rel
        ):
            _check_rel(name, rel, iid)
        first = image_of.setdefault(posixpath.normpath(rel), iid)
        if first != iid:  # one photo twice (perhaps in two classes) would weigh double
            raise ValueError(
                f"{name}: images[{k}]: expected every file listed once, got {rel} again "
                f"(image ids {first!r} and {iid!r})"
            )
        samples.append((rel, label))
    return samples


def _missing(root: Path, rels: Sequence[str]) -> list[int]:
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


def _drop_missing(
    root: Path,
    samples: list[tuple[str, int]],
    name: str,
    skip_missing: bool,
    log: Callable[[str], Any],
) -> tuple[list[tuple[str, int]], int]:
    missing = _missing(root, [rel for rel, _ in samples])
    if not missing:
        return samples, 0
    examples = ", ".join(samples[i][0] for i in missing[:3])
    what = f"{len(missing)} of {len(samples)} images referenced by {name} are missing (e.g. {examples})"
    if not skip_missing:
        raise ValueError(f"{what}; pass --skip-missing to train without them")
    log(f"warning: {what}; skipping them")
    drop = set(missing)
    return [s for i, s in enumerate(samples) if i not in drop], len(missing)


def _source_stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _prepare_inat(dataset: str, root: Path, opts: dict[str, Any]) -> dict[str, Any]:
    year = _year(dataset)
    train_name, val_name = f"train{year}.json", f"val{year}.json"
    train_doc = _load_json(root / train_name)
    val_doc = _load_json(root / val_name)
    ids, names = _categories(train_doc, train_name)
    cat_index = {cid: i for i, cid in enumerate(ids)}
    train = _inat_samples(train_doc, train_name, cat_index)
    del train_doc
    val = _inat_samples(val_doc, val_name, cat_index)
    del val_doc
    from .lists import _check_across_splits  # lists imports this module

    _check_across_splits(
        {"train": train, "val": val}, {"train": train_name, "val": val_name}, opts["log"]
    )
    skipped = 0
    if opts["check_files"]:
        train, n_train = _drop_missing(root, train, train_name, opts["skip_missing"], opts["log"])
        val, n_val = _drop_missing(root, val, val_name, opts["skip_missing"], opts["log"])
        skipped = n_train + n_val
    return {
        "sources": {n: _source_stamp(root / n) for n in (train_name, val_name)},
        "ids": list(ids),
        "names": names,
        "splits": {"train": train, "val": val},
        "skipped": skipped,
    }


# --------------------------------------------------------------------------- ImageNet


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


def _tree_digest(root: Path, split: str) -> dict[str, Any]:
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


def _prepare_imagenet(root: Path, out: Path, skip_missing: bool, log: Callable[[str], Any]) -> dict:
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
    sources: dict[str, Any] = {"train/": _tree_digest(root, "train")}
    skipped = 0
    if val_wnids:
        val = [
            (rel, index[w])
            for w in val_wnids
            for rel in _folder_images(root / "val" / w, f"val/{w}")
        ]
        sources["val/"] = _tree_digest(root, "val")
    else:  # the official flat val/ folder with a ground-truth file
        from .imagenet_val import flat_val_samples

        val, label_source, skipped = flat_val_samples(root, out, index, skip_missing, log)
        sources["val/"] = _flat_digest(root / "val")
        sources[label_source] = _source_stamp(root / label_source)
    return {
        "sources": sources,
        "ids": list(wnids),
        "names": list(wnids),
        "splits": {"train": train, "val": val},
        "skipped": skipped,
    }


def _flat_digest(folder: Path) -> dict[str, Any]:
    """Number of files and mtime of a flat folder (changes when files are added or removed)."""
    with os.scandir(folder) as it:
        n = sum(1 for e in it if not e.is_dir())
    return {"files": n, "mtime_ns": folder.stat().st_mtime_ns}


# --------------------------------------------------------------------------- prepare / load


def _tsv(samples: Sequence[tuple[str, int]]) -> str:
    """``path<TAB>label`` lines ending in ``"\n"`` (paths hold no tab, CR or LF; other
    characters that ``str.splitlines`` breaks at, such as ``\u2028``, may be in them)."""
    if not samples:
        return ""
    return "\n".join(f"{rel}\t{label}" for rel, label in samples) + "\n"


def _scan_imagenet(dataset: str, root: Path, opts: dict[str, Any]) -> dict[str, Any]:
    return _prepare_imagenet(root, prepared_dir(dataset, root), opts["skip_missing"], opts["log"])


def _scan_lists(dataset: str, root: Path, opts: dict[str, Any]) -> dict[str, Any]:
    from . import lists

    return lists.scan(
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
    "inat2017": _prepare_inat,
    "inat2018": _prepare_inat,
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
    _check_dataset(dataset)
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
    _write_prepared(dataset, root, found, counts, eval_split, check_files)
    log(
        f"prepared {dataset}: {len(ids)} classes, "
        + " / ".join(f"{len(v)} {k}" for k, v in splits.items())
        + " images"
        + (f", {skipped} missing images skipped" if skipped else "")
        + f" -> {prepared_dir(dataset, root)}"
    )
    return PreparedLayout(
        dataset,
        root / found["image_root"],
        list(names),
        train,
        splits[eval_split],
        counts,
        list(ids),
        skipped,
        dict(splits),
        eval_split,
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
    from .lists import BENCHMARKS

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
    counts = np.bincount(
        np.fromiter((label for _, label in train), dtype=np.int64, count=len(train)),
        minlength=num_classes,
    ).astype(np.int64)
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
    from .pipeline import resize_images

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


def _write_prepared(
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
    _check_dataset(dataset)
    root = Path(data_dir)
    out = prepared_dir(dataset, root)
    hint = _prepare_hint(dataset, data_dir)
    meta, class_index, counts_json = _read_prepared_meta(dataset, out, hint)
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
    recount = np.bincount(
        np.fromiter((lab for _, lab in train), dtype=np.int64, count=len(train)),
        minlength=num_classes,
    ).astype(np.int64)
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
        dataset,
        image_root,
        names,
        train,
        val,
        recount,
        ids,
        int(meta.get("num_skipped", 0)),
        splits,
        eval_split,
    )


def _read_prepared_meta(dataset: str, out: Path, hint: str) -> tuple[dict, list, list]:
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
            now = _tree_digest(root, name.rstrip("/")) if path.is_dir() else None
        elif "files" in stamp:  # a flat folder of images
            now = _flat_digest(path) if path.is_dir() else None
        else:
            now = _source_stamp(path) if path.is_file() else None
        if now is None:
            raise FileNotFoundError(f"{path} was used by prepare but is gone; run {hint} again")
        if now != stamp:
            raise ValueError(
                f"{name} changed since it was prepared (expected {stamp}, got {now}); run {hint} again"
            )


# --------------------------------------------------------------------------- images and loaders


class BadImageWarning(UserWarning):
    """An image file could not be decoded; it is skipped."""


class ImageFileDataset(Dataset):
    """Decodes ``root / path`` with PIL (RGB, :func:`~classbalanced.data.pipeline.to_rgb`) and
    applies ``transform``.

    ``__getitem__`` returns ``(image, label)``, or ``None`` when the file is
    missing, unreadable or truncated (a full decode is forced with
    ``img.load()``); each such file is warned about once per process
    (:class:`BadImageWarning` + ``logging``). Use :func:`collate_skip_bad` as the
    DataLoader's ``collate_fn`` to drop the ``None`` items and count them.
    """

    def __init__(
        self,
        root: PathLike,
        samples: Sequence[tuple[str, int]],
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        self.root = str(root)
        self.samples = samples
        self.transform = transform
        self._warned: set[str] = set()
        if ImageFile.LOAD_TRUNCATED_IMAGES:
            warnings.warn(
                "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is enabled: truncated images will be "
                "padded with grey instead of being skipped",
                BadImageWarning,
                stacklevel=2,
            )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int] | None:
        rel, label = self.samples[index]
        path = os.path.join(self.root, rel)
        from .pipeline import to_rgb

        decodes = getattr(self.transform, "decodes", False)
        try:
            with Image.open(path) as img:
                if decodes:  # the transform decodes (e.g. at a reduced size) and raises alike
                    return self.transform(img), int(label)
                img.load()  # full decode: a truncated file raises here
                rgb = to_rgb(img)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            if path not in self._warned:
                self._warned.add(path)
                msg = f"skipping unreadable image {path}: {' '.join(str(exc).split()) or type(exc).__name__}"
                logger.warning(msg)
                warnings.warn(msg, BadImageWarning, stacklevel=2)
            return None
        if self.transform is not None:
            rgb = self.transform(rgb)
        return rgb, int(label)


def collate_skip_bad(batch: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Drop ``None`` items; return ``(images, labels, num_skipped)``.

    ``images`` is the stacked tensor of the good items (shape ``(0,)`` when all
    were bad: callers skip an empty batch), ``labels`` int64.

    >>> x, y, skipped = collate_skip_bad([(torch.zeros(3, 2, 2), 1), None, (torch.ones(3, 2, 2), 0)])
    >>> tuple(x.shape), y.tolist(), skipped
    ((2, 3, 2, 2), [1, 0], 1)
    """
    good = [item for item in batch if item is not None]
    skipped = len(batch) - len(good)
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.int64), skipped
    images = torch.stack([torch.as_tensor(img) for img, _ in good])
    labels = torch.tensor([label for _, label in good], dtype=torch.int64)
    return images, labels, skipped


def build_transforms(
    train: bool,
    image_size: int = 224,
    mean: Sequence[float] = MEAN_STD["imagenet"][0],
    std: Sequence[float] = MEAN_STD["imagenet"][1],
    *,
    draft: bool = True,
    output: str = "float",
) -> Callable[[Image.Image], torch.Tensor]:
    """Standard ImageNet preprocessing of a PIL image into a (3, S, S) tensor.

    Train: ``RandomResizedCrop(S)`` + ``RandomHorizontalFlip``. Eval:
    ``Resize(int(S * 256 / 224))`` + ``CenterCrop(S)``. ``output="float"``: scaled to
    [0, 1] and ``Normalize(mean, std)``; ``"uint8"``: raw pixels, to be normalised on the
    device with :func:`classbalanced.data.pipeline.normalize_uint8`.

    ``draft=True`` (default): the transforms of :mod:`classbalanced.data.pipeline`, which
    decode JPEGs at a reduced size where the crop allows (same random draws as torchvision;
    1.3-1.5x the throughput of the full decode at 800x600, docs/benchmarks.md); ``False``: torchvision's v2
    transforms on the fully decoded image.
    """
    from torchvision.transforms import v2

    from .pipeline import DraftRandomResizedCrop, DraftResizeCenterCrop

    if image_size < 1:
        raise ValueError(f"image_size: expected a positive integer, got {image_size}")
    if output not in ("float", "uint8"):
        raise ValueError(f"output: expected 'float' or 'uint8', got {output!r}")
    if draft:
        cls = DraftRandomResizedCrop if train else DraftResizeCenterCrop
        return cls(image_size, output=output, mean=mean, std=std)
    to_tensor: list[Any] = [v2.PILToTensor()]
    if output == "float":
        to_tensor += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if train:
        spatial = [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        spatial = [
            v2.Resize(int(image_size * 256 / 224), antialias=True),
            v2.CenterCrop(image_size),
        ]
    return v2.Compose([*spatial, *to_tensor])


def eval_indices(n: int, rank: int, world_size: int) -> range:
    """The items rank ``rank`` evaluates: ``range(rank, n, world_size)`` (no padding, no overlap).

    >>> [list(eval_indices(5, r, 2)) for r in range(2)]
    [[0, 2, 4], [1, 3]]
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"expected 0 <= rank < world_size, got rank {rank}, world_size {world_size}"
        )
    return range(rank, n, world_size)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    num_workers: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    epoch: int = 0,
) -> DataLoader:
    """A DataLoader yielding ``(images, labels, num_skipped)`` (see :func:`collate_skip_bad`).

    Train: ``DistributedSampler(shuffle=True, seed=seed, drop_last=True)`` for any
    ``world_size`` (call ``loader.sampler.set_epoch(e)`` each epoch; ``epoch`` sets
    the first one). Eval: this rank's ``eval_indices`` in order (a ``Subset`` with a
    ``SequentialSampler``), so no item is padded in or counted twice.
    ``pin_memory`` when CUDA is available; ``persistent_workers`` when ``num_workers > 0``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers: expected >= 0, got {num_workers}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"expected 0 <= rank < world_size, got rank {rank}, world_size {world_size}"
        )
    common: dict[str, Any] = {
        "batch_size": batch_size,
        "num_workers": num_workers,
        "collate_fn": collate_skip_bad,
        "pin_memory": torch.cuda.is_available(),
        "persistent_workers": num_workers > 0,
    }
    if train:
        sampler = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        sampler.set_epoch(epoch)
        # distinct augmentation streams per rank; the workers' seeds derive from this generator
        generator = torch.Generator().manual_seed(seed * 1009 + rank)
        return DataLoader(dataset, sampler=sampler, generator=generator, **common)
    shard = Subset(dataset, eval_indices(len(dataset), rank, world_size))
    return DataLoader(shard, sampler=SequentialSampler(shard), **common)


def make_datasets(
    layout: PreparedLayout, image_size: int = 224
) -> tuple[ImageFileDataset, ImageFileDataset]:
    """``(train, val)`` :class:`ImageFileDataset` with the dataset's mean/std transforms."""
    mean, std = mean_std(layout.dataset)
    return (
        ImageFileDataset(
            layout.root, layout.train_samples, build_transforms(True, image_size, mean, std)
        ),
        ImageFileDataset(
            layout.root, layout.val_samples, build_transforms(False, image_size, mean, std)
        ),
    )
