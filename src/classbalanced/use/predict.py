"""``classbalanced predict``: a trained classifier over image files, folders and .npz files.

Inputs: image files; folders, searched recursively (non-images counted and skipped); a
folder whose sub-folders are named after the run's classes is a labelled test set and
must hold exactly the run's classes (as ``evaluate`` requires); an ``.npz`` with ``x``
(uint8 ``(N, H, W[, C])``) and optionally ``y`` (labels; ``class_names`` if present
must be the run's). Rows go to a CSV (``path,label_1,prob_1,...,label_k,prob_k
[,true_label]``; an npz row's path is ``FILE.npz:INDEX``) or a JSONL file of the same
fields, one per readable image, in input order; unreadable images are skipped, counted
and listed. With true labels the metrics of
:func:`~classbalanced.engine.metrics.summarize` are returned and written to
``FILE.metrics.json`` (never into the rows). Images are decoded by DataLoader workers and
batched; nothing is written into the run folder.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .._console import info
from ..data.arrays import list_images, load_npz
from ..engine.metrics import EvalCounts, summarize
from ..engine.run_folder import check_class_names
from ..files import atomic_save, atomic_write_json
from .inputs import ImageItems, collate_items, is_image_file
from .trained import TrainedClassifier

__all__ = ["Inputs", "gather_inputs", "predict_files", "OUTPUT_SUFFIXES"]

OUTPUT_SUFFIXES = (".csv", ".jsonl")
_WORKERS_FROM = 512  # fewer images than this: decoded in the main process (no worker start-up)
_MAX_WORKERS = 4


@dataclass
class Inputs:
    """What to predict: ``items`` (paths or arrays), the ``paths`` shown for them, their
    ``labels`` (``None`` where unknown) and the non-image files skipped."""

    items: list = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    labels: list[int | None] = field(default_factory=list)
    non_images: int = 0

    def add(self, item: Any, path: str, label: int | None) -> None:
        self.items.append(item)
        self.paths.append(path)
        self.labels.append(label)

    @property
    def labelled(self) -> bool:
        return bool(self.labels) and all(label is not None for label in self.labels)


def _folder(root: Path, class_names: list[str], found: Inputs) -> None:
    """A labelled test folder when a sub-folder is named after one of the run's classes
    (then it must hold exactly the run's classes), else every image below ``root``."""
    with os.scandir(root) as it:
        subs = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    if set(subs) & set(class_names):
        check_class_names(class_names, subs, "the run", f"the test folder {root}")
        per_class, _ = list_images(root, subs)
        for label, files in enumerate(per_class):
            for f in files:
                found.add(f, str(f), label)
        found.non_images += sum(1 for f in root.rglob("*") if f.is_file() and not is_image_file(f))
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.startswith("."):
                continue
            if is_image_file(path):
                found.add(path, str(path), None)
            else:
                found.non_images += 1


def _npz(path: Path, class_names: list[str], found: Inputs) -> None:
    """The images of an .npz (``x``, optional ``y`` and ``class_names``)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.keys())
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, AttributeError) as exc:
        raise ValueError(f"not a valid .npz file {path}: {' '.join(str(exc).split())}") from None
    if "y" in keys:  # checked like a test set
        arrays = load_npz(path)
        if "class_names" in keys:
            check_class_names(class_names, arrays.class_names, "the run", f"the npz {path}")
        elif arrays.num_classes > len(class_names):
            raise ValueError(
                f"labels of {path} reach {arrays.num_classes - 1}: expected labels below the "
                f"run's {len(class_names)} classes"
            )
        x, y = arrays.images, arrays.labels.tolist()
    else:
        if "x" not in keys:
            raise ValueError(
                f"missing key 'x' in {path}: expected images x (and optional y), got {keys}"
            )
        with np.load(path, allow_pickle=False) as npz:
            x = npz["x"]
        if x.dtype != np.uint8:
            raise ValueError(f"wrong dtype for x in {path}: expected uint8 images, got {x.dtype}")
        if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3, 4)) or not len(x):
            raise ValueError(
                f"wrong shape for x in {path}: expected (N, H, W) or (N, H, W, C) with C in "
                f"1/3/4 and N >= 1, got {x.shape}"
            )
        y = [None] * len(x)
    for i, label in enumerate(y):
        found.add(x[i], f"{path}:{i}", label)


def gather_inputs(inputs: Sequence[str | os.PathLike], class_names: list[str]) -> Inputs:
    """Every image the inputs name (files, folders, .npz), in order."""
    found = Inputs()
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            _folder(path, class_names, found)
        elif not path.exists():
            raise FileNotFoundError(f"input not found: {path}")
        elif path.suffix.lower() == ".npz":
            _npz(path, class_names, found)
        elif is_image_file(path):
            found.add(path, str(path), None)
        else:
            raise ValueError(
                f"input {path}: expected an image file, a folder or an .npz, got a {path.suffix or 'file'} file"
            )
    if not found.items:
        raise ValueError(
            f"no images in {', '.join(map(str, inputs))} (skipped {found.non_images} non-image files)"
        )
    return found


def check_outputs(output: str | None, run_dir: Path | None, overwrite: bool) -> list[Path]:
    """The rows file and its metrics file; refused with one line before anything is read:
    another suffix, a folder, a path inside the run folder, an existing file without
    ``overwrite``."""
    if output is None:
        return []
    out = Path(output)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ValueError(
            f"--output {out}: expected a .csv or .jsonl file, got {out.suffix or 'no suffix'}"
        )
    targets = [out, out.with_suffix(".metrics.json")]
    run_real = None if run_dir is None else os.path.realpath(run_dir)
    for target in targets:
        if target.is_dir():
            raise ValueError(f"--output {target} is a folder: expected a file path")
        if run_real and os.path.realpath(target).startswith(run_real.rstrip(os.sep) + os.sep):
            raise ValueError(
                f"--output {target} is inside the run folder {run_dir}: predict never writes there"
            )
        if target.exists() and not overwrite:
            raise ValueError(f"{target} exists: pass --overwrite to replace it")
    return targets


def _rows(found: Inputs, classifier: TrainedClassifier, k: int) -> list[str]:
    header = ["path"] + [f"{w}_{i}" for i in range(1, k + 1) for w in ("label", "prob")]
    return header + (["true_label"] if found.labelled else [])


def _loader(found: Inputs, classifier: TrainedClassifier, batch_size: int, workers: int | None):
    if workers is None:  # half the cores decode, the rest run the network (none on 2 cores)
        cores = os.cpu_count() or 1
        few = len(found.items) < _WORKERS_FROM or cores <= 2
        workers = 0 if few else min(_MAX_WORKERS, cores // 2)
    return torch.utils.data.DataLoader(
        ImageItems(found.items, classifier.preprocessor),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_items,
        pin_memory=classifier.device.type == "cuda",
    )


def run_predictions(
    classifier: TrainedClassifier,
    found: Inputs,
    *,
    top_k: int | None,
    adjust_tau: float,
    batch_size: int | None,
    num_workers: int | None = None,
    progress: bool = True,
    emit: Callable[[dict], None],
) -> tuple[EvalCounts | None, list[tuple[str, str]]]:
    """Predict every item batch by batch, ``emit`` one row dict per readable image; return
    the counts (labelled inputs) and ``(path, reason)`` of the images skipped."""
    k = classifier.check_top_k(top_k)
    size = batch_size or classifier.config.eval_batch_size
    counts = EvalCounts.zeros(classifier.num_classes) if found.labelled else None
    skipped: list[tuple[str, str]] = []
    loader = _loader(found, classifier, size, num_workers)
    if progress and len(found.items) > size:
        loader = tqdm(loader, total=len(loader), unit="batch", desc="predict", leave=False)
    for images, indices, bad in loader:
        skipped.extend((found.paths[i], reason) for i, reason in bad)
        if counts is not None:
            counts.unreadable += len(bad)
        if images.shape[0] == 0:
            continue
        logits = classifier.forward(classifier.preprocessor.finish(images), adjust_tau)
        pred = classifier.top_k(logits, k)
        positions = indices.tolist()
        if counts is not None:
            counts.update(logits, torch.tensor([found.labels[i] for i in positions]))
        for row, i in enumerate(positions):
            entry: dict[str, Any] = {"path": found.paths[i]}
            for j in range(k):
                entry[f"label_{j + 1}"] = pred.names[row][j]
                entry[f"prob_{j + 1}"] = round(float(pred.probabilities[row, j]), 6)
            if counts is not None:
                entry["true_label"] = classifier.class_names[found.labels[i]]
            emit(entry)
    return counts, skipped


def predict_files(
    classifier: TrainedClassifier,
    inputs: Sequence[str | os.PathLike],
    *,
    output: str | None = None,
    top_k: int | None = None,
    adjust_tau: float = 0.0,
    batch_size: int | None = None,
    overwrite: bool = False,
    num_workers: int | None = None,
    progress: bool = True,
    stdout=None,
    log: Callable[[str], Any] = info,
) -> dict[str, Any]:
    """Predict ``inputs`` with ``classifier``; write the rows to ``output`` (CSV / JSONL,
    atomically; ``None``: CSV on ``stdout``) and, with true labels, the metrics to
    ``FILE.metrics.json``. Returns ``{"images", "skipped", "metrics"}``."""
    targets = check_outputs(output, classifier.run_folder, overwrite)
    k = classifier.check_top_k(top_k)
    found = gather_inputs(inputs, classifier.class_names)
    fields = _rows(found, classifier, k)
    jsonl = bool(targets) and targets[0].suffix.lower() == ".jsonl"

    def write(handle) -> tuple:
        writer = csv.DictWriter(handle, fieldnames=fields, lineterminator="\n")
        if not jsonl:
            writer.writeheader()
        emit = (lambda row: handle.write(json.dumps(row) + "\n")) if jsonl else writer.writerow
        return run_predictions(
            classifier,
            found,
            top_k=k,
            adjust_tau=adjust_tau,
            batch_size=batch_size,
            num_workers=num_workers,
            progress=progress,
            emit=emit,
        )

    result: list[tuple] = []
    if targets:

        def to_file(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8", newline="") as handle:
                result.append(write(handle))

        atomic_save(targets[0], to_file)
    else:
        result.append(write(stdout if stdout is not None else sys.stdout))
    counts, skipped = result[0]
    if found.non_images:
        log(f"skipped {found.non_images} non-image files")
    if skipped:
        listed = "; ".join(f"{p} ({reason})" for p, reason in skipped[:10])
        more = f"; and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        log(f"skipped {len(skipped)} unreadable images: {listed}{more}")
    metrics = None
    if counts is not None and int(counts.total.sum()):
        metrics = summarize(counts, classifier.train_counts)
        metrics.update(
            checkpoint=str(classifier.source),
            adjust_tau=float(adjust_tau),
            skipped_unreadable_images=len(skipped),
            skipped=[{"path": p, "reason": r} for p, r in skipped],
        )
        if targets:
            atomic_write_json(targets[1], metrics)
    return {"images": len(found.items) - len(skipped), "skipped": skipped, "metrics": metrics}
