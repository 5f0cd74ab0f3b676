"""ImageNet's official validation layout: a flat ``val/`` folder and a ground-truth file.

``val/ILSVRC2012_val_00000001.JPEG`` ... ``ILSVRC2012_val_00050000.JPEG`` with the
labels in one of (looked for in the data folder, in this order):

* ``LOC_val_solution.csv`` (the Kaggle ImageNet localisation release): a header
  ``ImageId,PredictionString`` and rows ``ILSVRC2012_val_00008726,n02119789 255 142 454 329 ...``;
  the image's class is the first wnid of its boxes;
* the extracted devkit ``ILSVRC2012_devkit_t12/data/``: ``ILSVRC2012_validation_ground_truth.txt``
  (line ``k`` holds the ILSVRC2012_ID of image ``k``) and ``meta.mat`` (ID -> wnid; read with
  ``scipy.io.loadmat`` the way torchvision reads it);
* ``meta.bin``: what torchvision's ``ImageNet`` dataset writes after parsing the
  devkit (read with ``torchvision.datasets.imagenet.load_meta_file``);
* ``ILSVRC2012_devkit_t12.tar.gz``: parsed by torchvision's ``parse_devkit_archive``
  (which checks the archive's MD5) into the prepared folder.

Example:
    >>> _image_number("ILSVRC2012_val_00000293.JPEG")
    293
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import scipy.io as sio
from torchvision.datasets import imagenet as tv

__all__ = ["LABEL_SOURCES", "flat_val_samples"]

DEVKIT = "ILSVRC2012_devkit_t12"
GROUND_TRUTH = f"{DEVKIT}/data/ILSVRC2012_validation_ground_truth.txt"
LABEL_SOURCES = ("LOC_val_solution.csv", GROUND_TRUTH, "meta.bin", f"{DEVKIT}.tar.gz")
_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})\.JPEG$")


def _image_number(name: str) -> int | None:
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


def _loc_csv(path: Path) -> dict[str, str]:
    """``ImageId -> wnid`` from ``LOC_val_solution.csv`` (UTF-8, with or without a byte-order mark)."""
    labels: dict[str, str] = {}
    first: dict[str, int] = {}
    try:  # -sig: a byte-order mark, as spreadsheets save it, is not text
        rows = csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig")))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path.name}: expected UTF-8 text, got {exc.reason}") from None
    header = next(rows, None)
    if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
        raise ValueError(
            f"{path.name}: expected the header 'ImageId,PredictionString', got {header!r}"
        )
    for n, row in enumerate(rows, 2):
        if not row:
            continue
        boxes = row[1].split() if len(row) > 1 else []
        if len(row) != 2 or not boxes:
            raise ValueError(
                f"{path.name}: line {n}: expected 'ImageId,wnid x y x y ...', got {','.join(row)!r}"
            )
        image_id = row[0].strip()
        if image_id in labels:  # a second row, perhaps with another class: which one is it?
            raise ValueError(
                f"{path.name}: line {n}: duplicated ImageId {image_id} (already listed at line {first[image_id]})"
            )
        labels[image_id], first[image_id] = boxes[0], n
    return labels


def _devkit_wnids(root: Path) -> list[str]:
    """Wnid of validation image ``k`` (position ``k - 1``) from the extracted devkit."""
    meta_path = root / DEVKIT / "data" / "meta.mat"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{GROUND_TRUTH} needs {meta_path}, got no such file")
    try:
        synsets = sio.loadmat(meta_path, squeeze_me=True)["synsets"]
        id_to_wnid = {int(s[0]): str(s[1]) for s in synsets if int(s[4]) == 0}  # leaf synsets
    except Exception as exc:  # a corrupt or foreign .mat file
        raise ValueError(
            f"{meta_path.name}: expected the devkit's 'synsets' table, got {exc}"
        ) from None
    try:
        ids = (root / GROUND_TRUTH).read_text(encoding="utf-8-sig").split()
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{Path(GROUND_TRUTH).name}: expected UTF-8 text, got {exc.reason}"
        ) from None
    try:
        return [id_to_wnid[int(i)] for i in ids]
    except (KeyError, ValueError) as exc:
        raise ValueError(
            f"{Path(GROUND_TRUTH).name}: expected ILSVRC2012_IDs listed in meta.mat, got {exc.args[0]!r}"
        ) from None


def _torchvision_wnids(meta_dir: Path, archive: Path | None) -> list[str]:
    """Wnid of validation image ``k`` (position ``k - 1``) from torchvision's ``meta.bin``."""
    if archive is not None:
        try:
            tv.parse_devkit_archive(str(meta_dir), str(archive.resolve()))
        except RuntimeError as exc:
            raise ValueError(f"{archive.name}: {' '.join(str(exc).split())}") from None
    if not (meta_dir / "meta.bin").is_file():  # torchvision's own message names the devkit
        raise ValueError(f"expected meta.bin in {meta_dir}, got no such file")
    expected = (
        "meta.bin: expected torchvision's ImageNet meta file (wnid -> classes, validation wnids)"
    )
    try:
        _, val_wnids = tv.load_meta_file(str(meta_dir))
    except Exception as exc:  # empty, truncated or foreign: torch.load raises many kinds
        message = " ".join(str(exc).split())[:200]
        raise ValueError(f"{expected}, got {type(exc).__name__}: {message}") from None
    if not isinstance(val_wnids, list | tuple) or not all(isinstance(w, str) for w in val_wnids):
        raise ValueError(f"{expected}, got validation wnids of type {type(val_wnids).__name__}")
    return list(val_wnids)


def _labels_by_name(root: Path, out: Path) -> tuple[dict[str, str], str]:
    """``file name -> wnid`` of the flat val folder and the label file it came from."""
    for source in LABEL_SOURCES:
        if (root / source).is_file():
            break
    else:
        raise ValueError(
            "ImageNet layout: val/ is flat (no class folders): expected a ground-truth file in "
            f"{root}: one of {', '.join(LABEL_SOURCES)}, got none"
        )
    if source == LABEL_SOURCES[0]:
        return {f"{k}.JPEG": w for k, w in _loc_csv(root / source).items()}, source
    if source == GROUND_TRUTH:
        wnids = _devkit_wnids(root)
    else:
        out.mkdir(parents=True, exist_ok=True)
        archive = root / source if source.endswith(".tar.gz") else None
        wnids = _torchvision_wnids(out if archive else root, archive)
    return {f"ILSVRC2012_val_{k:08d}.JPEG": w for k, w in enumerate(wnids, 1)}, source


def flat_val_samples(
    root: Path,
    out: Path,
    index: dict[str, int],
    skip_missing: bool,
    log: Callable[[str], Any],
) -> tuple[list[tuple[str, int]], str, int]:
    """``(val samples, label file, number skipped)`` of a flat ``val/`` (sorted by image number).

    Every image in ``val/`` (hidden files skipped) needs a label and every labelled image must exist
    (``skip_missing`` leaves out the labelled ones that are missing); a label must
    be a training wnid. Each failure is a one-line ValueError.
    """
    labels, source = _labels_by_name(root, out)
    with_label = sorted(labels, key=lambda n: (_image_number(n) or 0, n))
    # hidden files (macOS's ``._<name>`` copies) are skipped, as in class folders
    present = {p.name for p in (root / "val").iterdir() if p.is_file() and p.name[:1] != "."}
    images = {n for n in present if n.lower().endswith((".jpeg", ".jpg", ".png"))}
    unlabelled = sorted(images - labels.keys())
    if unlabelled:
        raise ValueError(
            f"{len(unlabelled)} images in val/ have no label in {source} (e.g. {', '.join(unlabelled[:3])})"
        )
    missing = [n for n in with_label if n not in present]
    if missing:
        what = f"{len(missing)} of {len(labels)} images labelled in {source} are missing from val/ (e.g. {', '.join(missing[:3])})"
        if not skip_missing:
            raise ValueError(f"{what}; pass --skip-missing to go on without them")
        log(f"warning: {what}; skipping them")
    samples = []
    for name in with_label:
        if name not in present:
            continue
        wnid = labels[name]
        if wnid not in index:
            raise ValueError(
                f"{source}: {name}: expected a wnid with a train/ class folder, got {wnid!r}"
            )
        samples.append((f"val/{name}", index[wnid]))
    return samples, source, len(missing)
