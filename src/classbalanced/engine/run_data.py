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
from ..data.arrays import ImageArrays, list_image_folder, load_digits, load_image_folder, load_npz
from ..data.encoded import decode_batch
from ..data.longtail import longtail_indices
from ..data.pipeline import DraftResizeCenterCrop, normalize_uint8
from ..data.registry import load_dataset
from ..data.validation import validation_split
from ..sampling import ClassBalancedSampler
from .distributed import DistContext
from .evaluate import LoaderEvaluator, TensorEvaluator
from .metrics import EvalCounts
from .run_folder import check_class_names, describe_fingerprint
from .streams import InMemoryStream, LoaderStream
from .validation import LoaderValidator, TensorValidator, ValidationResult

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
    "load_arrays",
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
    test: ImageArrays | None  # None: the run does not evaluate its test set (never read)
    indices: np.ndarray  # kept positions in the full training set (the validation split's out)
    counts: np.ndarray  # per-class training counts after subsetting (and the split)
    fingerprints: dict[str, dict | None] | None = None  # of the full training set and the test set
    val: ImageArrays | None = None  # the validation set (--val-fraction / --val-data)
    validation: dict[str, Any] | None = None  # its record in subset.json


def prepare_data(cfg: TrainConfig, log: Callable[[str], Any] = info) -> PreparedData:
    """Load the dataset named in ``cfg``, take its seeded long-tailed subset and, with
    ``val_fraction``, the validation split of that subset (``val_data``: a validation set
    from a file); the train, test and validation sets must name the same classes in the
    same order. Without ``evaluate_test`` the test set is not loaded."""
    full_train, test = load_dataset(
        cfg.dataset,
        data_dir=cfg.data_dir,
        download=cfg.download,
        train_data=cfg.train_data,
        test_data=cfg.test_data,
        image_size=cfg.image_size,
        progress=cfg.progress,
        seed=cfg.seed,
        with_test=cfg.evaluate_test,
    )
    if test is not None:
        check_class_names(
            full_train.class_names, test.class_names, "the training set", "the test set"
        )
    indices, counts = longtail_indices(
        full_train.labels,
        check_resolved("imbalance_factor", cfg.imbalance_factor),
        seed=cfg.seed,
        profile=cfg.profile,
        num_classes=full_train.num_classes,
    )
    fingerprints = {
        "train": fingerprint_arrays(full_train),
        "test": None if test is None else fingerprint_arrays(test),
    }
    val = validation = None
    if cfg.val_fraction is not None:
        split = split_for_validation(
            counts, full_train.labels[indices], cfg, full_train.class_names, log
        )
        val, validation = full_train.subset(indices[split.val]), split_record(cfg, indices, split)
        indices, counts = indices[split.train], split.train_counts
    elif cfg.val_data is not None:
        val = load_arrays(cfg.val_data, full_train.image_shape)
        check_class_names(full_train.class_names, val.class_names, "the training set", "--val-data")
        if val.image_shape != full_train.image_shape:
            raise ValueError(
                f"--val-data {cfg.val_data}: expected images of shape {full_train.image_shape} "
                f"as the training set's, got {val.image_shape}"
            )
        validation = {"source": os.path.abspath(cfg.val_data), "counts": val.counts().tolist()}
    if val is not None:
        fingerprints["val"] = fingerprint_arrays(val)
    train = full_train.subset(indices)
    return PreparedData(train, test, indices, counts, fingerprints, val, validation)


def split_for_validation(counts, labels, cfg: TrainConfig, class_names, log):
    """The seeded validation split (:func:`~classbalanced.data.validation.validation_split`)
    of the long-tailed subset's ``labels``; a warning names the classes of one image."""
    if cfg.val_fraction is None:  # the callers split only with a fraction
        raise ValueError("split_for_validation: expected a val_fraction, got None")
    split = validation_split(labels, cfg.val_fraction, seed=cfg.seed, num_classes=len(counts))
    if split.singletons:
        names = ", ".join(str(class_names[c]) for c in split.singletons[:5])
        more = f" and {len(split.singletons) - 5} more" if len(split.singletons) > 5 else ""
        log(
            f"warning: {len(split.singletons)} class(es) with a single training image keep it "
            f"for training and have none in the validation split: {names}{more}"
        )
    return split


def split_record(cfg: TrainConfig, indices: np.ndarray, split) -> dict[str, Any]:
    """The validation split in ``subset.json``: its fraction and seed, the positions (in the
    full training set) it holds and its per-class counts."""
    return {
        "fraction": cfg.val_fraction,
        "seed": cfg.seed,
        "indices": indices[split.val].tolist(),
        "counts": split.val_counts.tolist(),
        "classes_without_validation_images": split.singletons,
    }


@dataclass
class RunData:
    """What the loop needs from a dataset, whichever kind it is."""

    counts: np.ndarray
    class_names: list[str]
    indices: np.ndarray | None
    in_channels: int
    stream: Any
    evaluate: Callable[[torch.nn.Module], EvalCounts] | None  # None: --no-evaluate-test
    record: dict[str, Any]  # the data record of run.json
    validate: Callable[[torch.nn.Module], ValidationResult] | None = None
    validation: dict[str, Any] | None = None  # the validation set's record in subset.json

    def subset(self) -> dict[str, Any]:
        """The content of ``subset.json`` (``validation``: only when the run has one)."""
        content = {
            "counts": self.counts.tolist(),
            "class_names": self.class_names,
            "indices": None if self.indices is None else self.indices.tolist(),
        }
        if self.validation is not None:
            content["validation"] = self.validation
        return content


def _record(cfg, class_names, in_channels, image_shape, normalization, fingerprints) -> dict:
    """The data record; the test split's fingerprint is ``None`` in a run that never read it
    (``--no-evaluate-test``); ``val``: a validation set, when there is one."""
    train_source, test_source = _sources(cfg)
    record = {
        "class_names": list(class_names),
        "in_channels": int(in_channels),
        "image_shape": None if image_shape is None else list(image_shape),
        "normalization": normalization,
        "train": {"source": train_source, "fingerprint": fingerprints["train"]},
        "test": {"source": test_source, "fingerprint": fingerprints.get("test")},
    }
    if fingerprints.get("val") is not None:
        source = os.path.abspath(cfg.val_data) if cfg.val_data else train_source
        record["val"] = {"source": source, "fingerprint": fingerprints["val"]}
    return record


def load_run_data(cfg: TrainConfig, ctx: DistContext) -> RunData:
    """The run's data: image files through loaders (large data sets) or arrays on the device."""
    return _large_data(cfg, ctx) if cfg.dataset in LARGE_DATASETS else _in_memory_data(cfg, ctx)


def _on_device(images: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)


def _in_memory_data(cfg: TrainConfig, ctx: DistContext) -> RunData:
    data = prepare_data(cfg, log=info if ctx.is_main else lambda line: None)
    x_train = _on_device(data.train.images, ctx.device)
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
    evaluator = validator = None
    if data.test is not None:
        x_test, y_test = (
            _on_device(data.test.images, ctx.device),
            torch.from_numpy(data.test.labels),
        )
        evaluator = TensorEvaluator(x_test, y_test.to(ctx.device), cfg, ctx, data.train.num_classes)
    if data.val is not None:
        x_val, y_val = _on_device(data.val.images, ctx.device), torch.from_numpy(data.val.labels)
        validator = TensorValidator(x_val, y_val.to(ctx.device), cfg, ctx, data.train.num_classes)
    record = _record(
        cfg,
        data.train.class_names,
        x_train.shape[1],
        data.train.image_shape,
        IN_MEMORY_NORMALIZATION,
        data.fingerprints,
    )
    names, channels = data.train.class_names, x_train.shape[1]
    return RunData(
        data.counts, names, data.indices, channels, stream, evaluator, record, validator,
        data.validation,
    )  # fmt: skip


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
    val_samples, validation = _large_validation(cfg, ctx, layout, samples, labels, indices, counts)
    if validation is None:  # the record names a val split only where the run evaluates one
        fingerprints.pop("val", None)
    elif "indices" in validation:  # --val-fraction: held out of the training samples
        kept = np.setdiff1d(indices, np.asarray(validation["indices"], dtype=np.int64))
        indices, counts = kept, counts - np.asarray(validation["counts"], dtype=np.int64)
        fingerprints["val"] = _fingerprint_samples(val_samples)
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
    evaluator = _large_evaluator(cfg, ctx, layout) if cfg.evaluate_test else None
    validator = None
    if val_samples is not None:
        validator = _large_validator(cfg, ctx, layout, val_samples)
    normalization = {"mean": list(mean), "std": list(std)}
    record = _record(cfg, layout.class_names, 3, None, normalization, fingerprints)
    return RunData(
        counts, layout.class_names, indices, 3, stream, evaluator, record, validator, validation
    )


def _large_validation(cfg, ctx, layout, samples, labels, indices, counts):
    """``(validation samples, subset.json record)`` of an image-file data set: the held-out
    part of the long-tailed subset (``--val-fraction``), the prepared val list
    (``--val-list``), or ``(None, None)``."""
    if cfg.val_fraction is not None:
        log = info if ctx.is_main else lambda line: None
        split = split_for_validation(counts, labels[indices], cfg, layout.class_names, log)
        return [samples[i] for i in indices[split.val]], split_record(cfg, indices, split)
    if cfg.val_list is None:
        return None, None
    if layout.tune_split is None:
        raise ValueError(
            f"--val-list {cfg.val_list}: {cfg.dataset} in {cfg.data_dir} evaluates on its val "
            "split (prepared without a test list): expected a test list beside it, got none; "
            "prepare it with --test-list, or use --val-fraction"
        )
    val = layout.splits[layout.tune_split]
    counts_val = np.bincount([label for _, label in val], minlength=len(layout.class_names))
    return val, {"source": os.path.abspath(cfg.val_list), "counts": counts_val.tolist()}


def _large_validator(cfg: TrainConfig, ctx: DistContext, layout, samples):
    transform, normalize = eval_pipeline(cfg)
    dataset = loaders.ImageFileDataset(layout.root, samples, transform)
    shard = torch.utils.data.Subset(
        dataset, list(loaders.eval_indices(len(dataset), ctx.rank, ctx.world_size))
    )
    loader = torch.utils.data.DataLoader(
        shard,
        batch_size=max(1, cfg.eval_batch_size),
        num_workers=cfg.num_workers,
        collate_fn=loaders.collate_skip_bad,
        generator=torch.Generator().manual_seed(0),  # not the global RNG
    )
    return LoaderValidator(loader, cfg, ctx, len(layout.class_names), normalize)


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
    return _file_evaluator(cfg, ctx, layout.root, layout.val_samples, len(layout.class_names))


def _file_evaluator(
    cfg: TrainConfig, ctx: DistContext, root, samples: list[tuple[str, int]], num_classes: int
) -> LoaderEvaluator:
    """Image files ``root / path`` decoded and transformed by the run's evaluation
    pipeline, this rank's shard of them."""
    transform, normalize = eval_pipeline(cfg)
    files = loaders.ImageFileDataset(root, samples, transform)
    shard = torch.utils.data.Subset(
        files, list(loaders.eval_indices(len(files), ctx.rank, ctx.world_size))
    )
    return LoaderEvaluator(
        shard,
        loaders.collate_skip_bad,
        cfg,
        ctx,
        num_classes,
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


def _image_folder_test_set(cfg: TrainConfig, folder: Path, ctx: DistContext) -> TestSet:
    """A class folder evaluated as a run of image files evaluates its own test files:
    each decoded and transformed by the run's evaluation pipeline (resize and centre
    crop), not resized into memory as an array run's folder is."""
    classes, files, labels = list_image_folder(folder, empty_classes=True)  # a test set
    samples = [(str(path), label) for path, label in zip(files, labels, strict=True)]
    return TestSet(classes, 3, _file_evaluator(cfg, ctx, "", samples, len(classes)))


def load_arrays(path: str, image_shape) -> ImageArrays:
    """An evaluation set from an ``.npz`` or a class folder (its images resized to the run's
    ``image_shape`` (H, W, C); classes without images kept)."""
    if Path(path).suffix == ".npz":
        return load_npz(path)
    size = None if image_shape is None else tuple(image_shape[:2])
    return load_image_folder(path, image_size=size, empty_classes=True)  # a test set


def _runs_own_arrays(cfg: TrainConfig, record: dict) -> ImageArrays:
    source = record["test"]["source"]
    if cfg.dataset in ("npz", "folder"):
        return load_arrays(source, record.get("image_shape"))
    if cfg.dataset == "digits":
        return load_digits()[1]
    test = load_dataset(cfg.dataset, data_dir=source, download=False, progress=False)[1]
    if test is None:  # with_test (the default): never
        raise ValueError(f"{cfg.dataset} in {source}: expected a test set, got none")
    return test


def load_test_set(
    cfg: TrainConfig, record: dict, test_data: str | None, ctx: DistContext, *, accept_change: bool
) -> TestSet:
    """``test_data`` (an .npz or class folder), or the run's own test set from the absolute
    path it recorded, refused if its fingerprint changed (unless ``accept_change``)."""
    if test_data and cfg.dataset in LARGE_DATASETS and Path(test_data).is_dir():
        return _image_folder_test_set(cfg, Path(test_data), ctx)
    if test_data:
        return _arrays_test_set(load_arrays(test_data, record.get("image_shape")), cfg, ctx)
    if cfg.dataset in LARGE_DATASETS:
        layout = prepared.load_prepared(cfg.dataset, record["test"]["source"])
        fingerprint = layout_fingerprints(layout, record["test"]["source"])["test"]
        test = TestSet(layout.class_names, 3, _large_evaluator(cfg, ctx, layout))
    else:
        arrays = _runs_own_arrays(cfg, record)
        fingerprint = fingerprint_arrays(arrays)
        test = _arrays_test_set(arrays, cfg, ctx)
    expected = record["test"]["fingerprint"]  # None: the run never read it (nothing to compare)
    if expected is not None and fingerprint != expected and not accept_change:
        raise ValueError(
            f"the run's test data changed since training ({record['test']['source']}: "
            f"{describe_fingerprint(expected)} then, {describe_fingerprint(fingerprint)} now, "
            "or other content); "
            "pass --accept-data-change to evaluate on it anyway"
        )
    return test
