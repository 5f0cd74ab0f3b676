"""The stage-one run's data for stage two, loaded through the engine's :mod:`run_data`
(:func:`~classbalanced.engine.run_data.prepare_data` in memory; the prepared layout, the
trainer's training pipeline and evaluation transform for image files), checked against
the fingerprints the run recorded."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..config import LARGE_DATASETS
from ..data import loaders, prepared
from ..data.augment import normalize_images
from ..data.registry import is_large_dataset
from ..engine.distributed import DistContext
from ..engine.run_data import eval_pipeline, layout_fingerprints, prepare_data, train_pipeline
from ..engine.run_folder import RunFolder
from ..engine.streams import InMemoryStream, LoaderStream
from .stage_one import StageOne

__all__ = ["StageTwoData", "load_data", "memory_data", "file_data", "check_workers"]


@dataclass
class StageTwoData:
    """The stage-one run's data: augmented training batches and evaluation batches."""

    labels: np.ndarray  # training labels, in training-set order
    # (batch size, sampler or None) -> InMemoryStream / LoaderStream
    stream: Callable[[int, Any], Any]
    batches: Callable[[str], Iterator[tuple[Tensor, Tensor]]]  # split -> normalised batches
    eval_split: str
    tune_split: str | None  # a validation split other than the evaluated one, if any
    record: dict  # the run's data record, with the fingerprints of the data read now
    # the tune split's source and fingerprint, as the record holds the others (stage one
    # does not record it: written into decouple.json and run.json when chosen on it)
    tune_data: dict | None = None


def load_data(
    run: StageOne, device: torch.device, num_workers: int | None, accept_change: bool
) -> StageTwoData:
    """The run's data on ``device``; ``num_workers``: image files' (``None``: the run's)."""
    cfg = run.cfg
    if cfg.dataset in LARGE_DATASETS:
        workers = cfg.num_workers if num_workers is None else num_workers
        return file_data(run, device, cfg.eval_batch_size, workers, accept_change)
    return memory_data(run, device, cfg.eval_batch_size, accept_change)


def check_workers(run: StageOne, num_workers: int | None) -> None:
    """``--num-workers`` for a data set held in memory is refused, not ignored."""
    if num_workers is not None and not is_large_dataset(run.cfg.dataset):
        raise ValueError(
            f"--num-workers applies to image-file data sets, not {run.cfg.dataset} (held in memory)"
        )


def checked_record(run: StageOne, class_names, fingerprints: dict, accept_change: bool) -> dict:
    """The run's data record with the class names and fingerprints of the data as read now;
    refused (one line) when they differ from stage one's, unless ``accept_change``."""
    record = {**run.record, "class_names": list(class_names)}
    for split in ("train", "test"):
        record[split] = {**run.record[split], "fingerprint": fingerprints[split]}
    RunFolder.read(run.folder).check_data(record, accept_change=accept_change)
    return record


def _on_device(images: np.ndarray, device: torch.device) -> Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)


def memory_data(
    run: StageOne, device: torch.device, eval_batch: int, accept_change: bool
) -> StageTwoData:
    """Arrays held on ``device`` (npz, class folders, CIFAR, digits)."""
    cfg = run.cfg
    data = prepare_data(cfg)
    record = checked_record(run, data.train.class_names, data.fingerprints or {}, accept_change)
    if run.subset.get("indices") is not None and data.indices.tolist() != run.subset["indices"]:
        raise ValueError(f"the training subset of {cfg.dataset} differs from the run's subset.json")
    if data.test is None:  # a run trained with --no-evaluate-test: its test set is not read
        raise ValueError(
            f"{run.folder}: decoupling evaluates on the test set, got a run without it"
        )
    x_train, x_test = _on_device(data.train.images, device), _on_device(data.test.images, device)
    y_train = torch.from_numpy(data.train.labels).to(device)
    y_test = torch.from_numpy(data.test.labels).to(device)
    ctx = DistContext(device=device)

    def stream(batch: int, sampler):
        return InMemoryStream(
            x_train, y_train, batch_size=batch, seed=cfg.seed, pad=cfg.pad, flip=cfg.flip, ctx=ctx,
            sampler=sampler,
        )  # fmt: skip

    def batches(split: str):
        for i in range(0, x_test.shape[0], eval_batch):
            yield normalize_images(x_test[i : i + eval_batch]), y_test[i : i + eval_batch]

    return StageTwoData(data.train.labels, stream, batches, "test", None, record)


def file_data(
    run: StageOne, device: torch.device, eval_batch: int, num_workers: int, accept_change: bool
) -> StageTwoData:
    """The stage-one run's image files through the trainer's pipeline: its ``--image-decode``,
    ``--worker-output`` and ``--[no-]persistent-workers`` for training, its evaluation transform."""
    cfg = run.cfg
    layout = prepared.load_prepared(cfg.dataset, cfg.data_dir)
    fingerprints = layout_fingerprints(layout, cfg.data_dir)
    record = checked_record(run, layout.class_names, fingerprints, accept_change)
    indices = run.subset.get("indices")
    samples = (
        layout.train_samples if indices is None else [layout.train_samples[i] for i in indices]
    )
    labels = np.asarray([label for _, label in samples], dtype=np.int64)
    if np.bincount(labels, minlength=len(run.counts)).tolist() != run.counts.tolist():
        raise ValueError(
            f"the prepared {cfg.dataset} training set differs from the run's subset.json"
        )
    ctx = DistContext(device=device)
    transform, collate, on_device = train_pipeline(cfg, ctx)
    train_set = loaders.ImageFileDataset(layout.root, samples, transform)

    def stream(batch: int, sampler):
        return LoaderStream(
            train_set, batch_size=batch, seed=cfg.seed, ctx=ctx, num_workers=num_workers,
            collate=collate, sampler=sampler, persistent=cfg.persistent_workers,
            on_device=on_device,
        )  # fmt: skip

    eval_transform, normalize = eval_pipeline(cfg)

    def batches(split: str):
        dataset = loaders.ImageFileDataset(layout.root, layout.splits[split], eval_transform)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=eval_batch, num_workers=num_workers,
            collate_fn=loaders.collate_skip_bad,
        )  # fmt: skip
        for images, labels_, _ in loader:
            if images.shape[0]:
                images = images.to(device)
                yield (normalize(images) if normalize else images), labels_.to(device)

    tune = layout.tune_split
    tune_data = None
    if tune is not None:
        tune_data = {"source": record["test"]["source"], "fingerprint": fingerprints[tune]}
    return StageTwoData(labels, stream, batches, layout.eval_split, tune, record, tune_data)
