"""What a run trains and evaluates on: the data set, its long-tailed subset, the batch
stream, the test evaluator and the *data record* kept in the run's ``run.json``.

The data record holds what evaluation needs once the training files are gone
and what a resume must find unchanged: class names in label order, input
channels, image shape, the normalisation, the absolute path of each split and a
fingerprint of each (image count + SHA-256 of the decoded images and labels for
data held in memory; of the ``(file, label)`` list for image-file data sets,
which stays cheap for ImageNet-sized folders).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._console import info
from ..config import LARGE_DATASETS, TrainConfig, check_resolved
from ..data import encoded, loaders, pipeline, prepared
from ..data.arrays import ImageArrays, load_digits, load_image_folder, load_npz
from ..data.encoded import decode_batch
from ..data.longtail import longtail_indices
from ..data.pipeline import DraftResizeCenterCrop, normalize_uint8
from ..data.registry import load_dataset
from ..sampling import ClassBalancedSampler
from .distributed import DistContext
from .evaluate import LoaderEvaluator, TensorEvaluator
from .metrics import EvalCounts
from .run_folder import check_class_names, describe_fingerprint
from .streams import InMemoryStream, LoaderStream

__all__ = [
    "PreparedData",
    "prepare_data",
    "RunData",
    "load_run_data",
    "train_pipeline",
    "eval_pipeline",
    "TestSet",
    "load_test_set",
    "fingerprint_arrays",
]

#: how in-memory images become network inputs (``data.augment.normalize_images``)
IN_MEMORY_NORMALIZATION = "x / 128 - 1"


def fingerprint_arrays(data: ImageArrays) -> dict[str, Any]:
    """``{"images": N, "sha256": ...}`` of the images, labels and shape of ``data``.

    >>> a = ImageArrays(np.zeros((2, 4, 4, 1), np.uint8), np.array([0, 1]), ["a", "b"])
    >>> fingerprint_arrays(a)["images"], fingerprint_arrays(a) == fingerprint_arrays(a.subset([0, 1]))
    (2, True)
    """
    digest = hashlib.sha256(repr(data.images.shape).encode())
    digest.update(np.ascontiguousarray(data.labels, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(data.images).data)
    return {"images": len(data), "sha256": digest.hexdigest()}


def _fingerprint_samples(samples, images_from: str = ".") -> dict[str, Any]:
    """Count + SHA-256 of ``(relative path, label)`` lines; ``images_from``: the folder the
    paths are read in, relative to the data folder (``.``: the original files, left out)."""
    digest = hashlib.sha256()
    for path, label in samples:
        digest.update(f"{path}\t{label}\n".encode())
    fingerprint: dict[str, Any] = {"images": len(samples), "sha256": digest.hexdigest()}
    if images_from != ".":  # copies written by ``prepare --resize``
        fingerprint["images_from"] = images_from
    return fingerprint


def layout_fingerprints(layout, data_dir) -> dict[str, dict[str, Any]]:
    """The fingerprints of a prepared data set's training (``train``) and evaluated (``test``)
    splits, and (``val``) of the split post-hoc settings are chosen on when there is one
    apart from the evaluated split, naming the resized copies (``prepare --resize``) when
    the images are read from them."""
    images_from = Path(os.path.relpath(layout.root, data_dir)).as_posix()
    found = {
        "train": _fingerprint_samples(layout.train_samples, images_from),
        "test": _fingerprint_samples(layout.val_samples, images_from),
    }
    if layout.tune_split is not None:
        found["val"] = _fingerprint_samples(layout.splits[layout.tune_split], images_from)
    return found


def _sources(cfg: TrainConfig) -> tuple[str, str]:
    """Absolute locations of the training and test data."""
    if cfg.dataset in ("npz", "folder"):
        return os.path.abspath(str(cfg.train_data)), os.path.abspath(str(cfg.test_data))
    if cfg.dataset == "digits":
        return "scikit-learn digits", "scikit-learn digits"
    return os.path.abspath(cfg.data_dir), os.path.abspath(cfg.data_dir)


@dataclass
class PreparedData:
    train: ImageArrays
    test: ImageArrays
    indices: np.ndarray  # kept positions in the full training set
    counts: np.ndarray  # per-class training counts after subsetting
    fingerprints: dict[str, dict]  # of the full training set and the test set


def prepare_data(cfg: TrainConfig) -> PreparedData:
    """Load the dataset named in ``cfg`` and take its seeded long-tailed subset; the train and
    test sets must name the same classes in the same order."""
    full_train, test = load_dataset(
        cfg.dataset,
        data_dir=cfg.data_dir,
        download=cfg.download,
        train_data=cfg.train_data,
        test_data=cfg.test_data,
        image_size=cfg.image_size,
        progress=cfg.progress,
        seed=cfg.seed,
    )
    check_class_names(full_train.class_names, test.class_names, "the training set", "the test set")
    indices, counts = longtail_indices(
        full_train.labels,
        check_resolved("imbalance_factor", cfg.imbalance_factor),
        seed=cfg.seed,
        profile=cfg.profile,
        num_classes=full_train.num_classes,
    )
    fingerprints = {"train": fingerprint_arrays(full_train), "test": fingerprint_arrays(test)}
    return PreparedData(full_train.subset(indices), test, indices, counts, fingerprints)


@dataclass
class RunData:
    """What the loop needs from a dataset, whichever kind it is."""

    counts: np.ndarray
    class_names: list[str]
    indices: np.ndarray | None
    in_channels: int
    stream: Any
    evaluate: Callable[[torch.nn.Module], EvalCounts]
    record: dict[str, Any]  # the data record of run.json

    def subset(self) -> dict[str, Any]:
        """The content of ``subset.json``."""
        return {
            "counts": self.counts.tolist(),
            "class_names": self.class_names,
            "indices": None if self.indices is None else self.indices.tolist(),
        }


def _record(cfg, class_names, in_channels, image_shape, normalization, fingerprints) -> dict:
    train_source, test_source = _sources(cfg)
    return {
        "class_names": list(class_names),
        "in_channels": int(in_channels),
        "image_shape": None if image_shape is None else list(image_shape),
        "normalization": normalization,
        "train": {"source": train_source, "fingerprint": fingerprints["train"]},
        "test": {"source": test_source, "fingerprint": fingerprints["test"]},
    }


def load_run_data(cfg: TrainConfig, ctx: DistContext) -> RunData:
    """The run's data: image files through loaders (large data sets) or arrays on the device."""
    return _large_data(cfg, ctx) if cfg.dataset in LARGE_DATASETS else _in_memory_data(cfg, ctx)


def _on_device(images: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)


def _in_memory_data(cfg: TrainConfig, ctx: DistContext) -> RunData:
    data = prepare_data(cfg)
    x_train, x_test = (
        _on_device(data.train.images, ctx.device),
        _on_device(data.test.images, ctx.device),
    )
    stream = InMemoryStream(
        x_train,
        torch.from_numpy(data.train.labels).to(ctx.device),
        batch_size=cfg.batch_size // cfg.accumulate_steps,  # one micro-batch
        seed=cfg.seed,
        pad=cfg.pad,
        flip=cfg.flip,
        ctx=ctx,
        sampler=_sampler(cfg, data.train.labels, DistContext()),  # a global order for all ranks
    )
    y_test = torch.from_numpy(data.test.labels).to(ctx.device)
    evaluator = TensorEvaluator(x_test, y_test, cfg, ctx, data.train.num_classes)
    record = _record(
        cfg,
        data.train.class_names,
        x_train.shape[1],
        data.train.image_shape,
        IN_MEMORY_NORMALIZATION,
        data.fingerprints,
    )
    names, channels = data.train.class_names, x_train.shape[1]
    return RunData(data.counts, names, data.indices, channels, stream, evaluator, record)


def _large_data(cfg: TrainConfig, ctx: DistContext) -> RunData:
    layout = prepared.load_prepared(cfg.dataset, cfg.data_dir)
    samples = layout.train_samples
    labels = np.asarray([label for _, label in samples], dtype=np.int64)
    indices, counts = longtail_indices(
        labels,
        check_resolved("imbalance_factor", cfg.imbalance_factor),
        seed=cfg.seed,
        profile=cfg.profile,
        num_classes=len(layout.class_names),
    )
    fingerprints = layout_fingerprints(layout, cfg.data_dir)
    if len(indices) != len(samples):
        samples = [samples[i] for i in indices]
    mean, std = loaders.mean_std(cfg.dataset)
    transform, collate, on_device = train_pipeline(cfg, ctx)
    stream = LoaderStream(
        loaders.ImageFileDataset(layout.root, samples, transform),
        batch_size=cfg.batch_size // cfg.accumulate_steps,
        seed=cfg.seed,
        ctx=ctx,
        num_workers=cfg.num_workers,
        collate=collate,
        sampler=_sampler(cfg, labels[indices], ctx),
        persistent=cfg.persistent_workers,
        on_device=on_device,
    )
    evaluator = _large_evaluator(cfg, ctx, layout)
    normalization = {"mean": list(mean), "std": list(std)}
    record = _record(cfg, layout.class_names, 3, None, normalization, fingerprints)
    return RunData(counts, layout.class_names, indices, 3, stream, evaluator, record)


def _crops() -> dict[str, tuple[type, Callable]]:
    """``--image-decode`` -> (training crop transform, collate)."""
    return {
        "fast": (pipeline.FastRandomResizedCrop, pipeline.collate_channels_last),
        "draft": (pipeline.DraftRandomResizedCrop, loaders.collate_skip_bad),
        "device": (encoded.EncodedRandomResizedCrop, encoded.collate_encoded),
    }


def _worker_output(cfg: TrainConfig) -> str:
    """What the loader workers return: uint8 with ``--image-decode device``, else ``--worker-output``."""
    return "uint8" if cfg.image_decode == "device" else cfg.worker_output


def train_pipeline(cfg: TrainConfig, ctx: DistContext) -> tuple[Any, Callable, Callable | None]:
    """The training crop transform, its collate and what the stream does on the device:
    decode (``--image-decode device``: also which images it kept, see :class:`LoaderStream`)
    and normalise (uint8 batches), or nothing."""
    size = cfg.image_size or 224
    mean, std = loaders.mean_std(cfg.dataset)
    crop, collate = _crops()[cfg.image_decode]
    output = _worker_output(cfg)
    transform = crop(size, output=output, mean=mean, std=std)
    if cfg.image_decode == "fast" and not pipeline.PARTIAL_JPEG_DECODING and ctx.is_main:
        info(
            "note: the fast path decodes JPEGs through PIL (the same pixels, ~20 % fewer images "
            "per CPU-second): its C extension was not built; install a C compiler and "
            "libjpeg-dev (libjpeg-turbo's headers), then reinstall (pip install -e .)"
        )
    if cfg.image_decode == "device":

        def on_device(batch):
            images, kept = decode_batch(batch, size, ctx.device, drop_bad=True)
            return normalize_uint8(images, mean, std), kept

        return transform, collate, on_device
    if output == "uint8":
        return transform, collate, lambda x: normalize_uint8(x, mean, std)
    return transform, collate, None


def eval_pipeline(cfg: TrainConfig) -> tuple[Any, Callable | None]:
    """The evaluation transform (resize + centre crop, reduced JPEG decoding) and the
    normalisation of its batches on the device (uint8 batches), or ``None``."""
    mean, std = loaders.mean_std(cfg.dataset)
    output = _worker_output(cfg)
    transform = DraftResizeCenterCrop(cfg.image_size or 224, output=output, mean=mean, std=std)
    if output == "uint8":
        return transform, lambda x: normalize_uint8(x, mean, std)
    return transform, None


def _large_evaluator(cfg: TrainConfig, ctx: DistContext, layout) -> LoaderEvaluator:
    transform, normalize = eval_pipeline(cfg)
    val = loaders.ImageFileDataset(layout.root, layout.val_samples, transform)
    shard = torch.utils.data.Subset(
        val, list(loaders.eval_indices(len(val), ctx.rank, ctx.world_size))
    )
    return LoaderEvaluator(
        shard,
        loaders.collate_skip_bad,
        cfg,
        ctx,
        len(layout.class_names),
        normalize=normalize,
        persistent=cfg.persistent_workers,
    )


def _sampler(cfg: TrainConfig, labels, ctx: DistContext):
    """The class-balanced sampler when asked for (``None``: shuffle each epoch)."""
    if cfg.sampler != "class_balanced":
        return None
    return ClassBalancedSampler(
        labels, cfg.sampler_beta, seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size
    )


# ---------------------------------------------------------------------------
# the test set of a finished run (evaluation)
# ---------------------------------------------------------------------------


@dataclass
class TestSet:
    """A test set ready to evaluate a model on."""

    class_names: list[str]
    in_channels: int
    evaluate: Callable[[torch.nn.Module], EvalCounts]


def _arrays_test_set(arrays: ImageArrays, cfg: TrainConfig, ctx: DistContext) -> TestSet:
    x = _on_device(arrays.images, ctx.device)
    y = torch.from_numpy(arrays.labels).to(ctx.device)
    evaluator = TensorEvaluator(x, y, cfg, ctx, arrays.num_classes)
    return TestSet(arrays.class_names, arrays.image_shape[2], evaluator)


def _load_arrays(path: str, image_shape) -> ImageArrays:
    if Path(path).suffix == ".npz":
        return load_npz(path)
    size = None if image_shape is None else tuple(image_shape[:2])
    return load_image_folder(path, image_size=size, empty_classes=True)  # a test set


def _runs_own_arrays(cfg: TrainConfig, record: dict) -> ImageArrays:
    source = record["test"]["source"]
    if cfg.dataset in ("npz", "folder"):
        return _load_arrays(source, record.get("image_shape"))
    if cfg.dataset == "digits":
        return load_digits()[1]
    return load_dataset(cfg.dataset, data_dir=source, download=False, progress=False)[1]


def load_test_set(
    cfg: TrainConfig, record: dict, test_data: str | None, ctx: DistContext, *, accept_change: bool
) -> TestSet:
    """``test_data`` (an .npz or class folder), or the run's own test set from the absolute
    path it recorded, refused if its fingerprint changed (unless ``accept_change``)."""
    if test_data:
        return _arrays_test_set(_load_arrays(test_data, record.get("image_shape")), cfg, ctx)
    if cfg.dataset in LARGE_DATASETS:
        layout = prepared.load_prepared(cfg.dataset, record["test"]["source"])
        fingerprint = layout_fingerprints(layout, record["test"]["source"])["test"]
        test = TestSet(layout.class_names, 3, _large_evaluator(cfg, ctx, layout))
    else:
        arrays = _runs_own_arrays(cfg, record)
        fingerprint = fingerprint_arrays(arrays)
        test = _arrays_test_set(arrays, cfg, ctx)
    expected = record["test"]["fingerprint"]
    if fingerprint != expected and not accept_change:
        raise ValueError(
            f"the run's test data changed since training ({record['test']['source']}: "
            f"{describe_fingerprint(expected)} then, {describe_fingerprint(fingerprint)} now, "
            "or other content); "
            "pass --accept-data-change to evaluate on it anyway"
        )
    return test
