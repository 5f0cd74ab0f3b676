"""iNaturalist 2017 / 2018: the official annotation files parsed into samples (for ``prepare``).

``train2017.json`` / ``val2017.json`` (or ``2018``) in ``data_dir`` (COCO-like ``images`` /
``annotations`` / ``categories``), image ``file_name`` relative to ``data_dir``; the class
index is the sorted category ids -> ``0..C-1``. :func:`scan` reads both files once
(``json.load``; no image is opened) and checks them, each failure a one-line ValueError
naming the file and the entry; :func:`~classbalanced.data.prepare.prepare` writes what it
finds in the prepared format (:mod:`~classbalanced.data.prepared`).

Example:
    >>> _categories({"categories": [{"id": 7, "name": "b"}, {"id": 3, "name": "a"}]}, "x.json")
    ([3, 7], ['a', 'b'])
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .sources import check_across_splits, drop_missing, source_stamp

__all__ = ["scan"]


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


def scan(
    dataset: str, root: Path, *, skip_missing: bool, check_files: bool, log: Callable[[str], Any]
) -> dict[str, Any]:
    """Read and check ``train{year}.json`` / ``val{year}.json`` of ``dataset`` in ``root``; see
    :func:`classbalanced.data.prepare.prepare`.

    Returns ``sources`` (annotation file -> size / mtime), ``ids`` (sorted category ids) and
    ``names`` (one per class), ``splits`` (``train`` / ``val`` -> samples) and ``skipped``
    (missing images left out).
    """
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
    check_across_splits({"train": train, "val": val}, {"train": train_name, "val": val_name}, log)
    skipped = 0
    if check_files:
        train, n_train = drop_missing(root, train, train_name, skip_missing, log)
        val, n_val = drop_missing(root, val, val_name, skip_missing, log)
        skipped = n_train + n_val
    return {
        "sources": {n: source_stamp(root / n) for n in (train_name, val_name)},
        "ids": list(ids),
        "names": names,
        "splits": {"train": train, "val": val},
        "skipped": skipped,
    }
