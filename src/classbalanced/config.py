"""Training configuration: the one source of truth for every setting of a run.

A run is fully described by a :class:`TrainConfig`. Values come, in increasing
priority, from the dataclass defaults, a TOML or YAML file (``--config``), and
command-line flags. Each field carries its help text and group in its metadata;
the ``train`` command's flags are generated from these fields (one flag per key,
``--dashed-name``), so a setting is declared once, here. Closed choices are
``Literal`` types; data set, model and loss names are checked against their
registries, so registering one makes it a valid value with no other edit.

:meth:`TrainConfig.resolved` fills the values that depend on others (learning
rate scaled by batch size, warm-up and decay epochs scaled with ``epochs``,
decay factors for balanced vs long-tailed data); the resolved config is what
every run folder records.

The module is over 600 lines because :class:`TrainConfig` lists every setting once,
with its type, default, help text and group (about 290 lines), and the checks of those
settings belong beside them; the flags generated from it live in
:mod:`classbalanced.cli_flags`.

>>> cfg = TrainConfig(dataset="digits", epochs=20).resolved()
>>> cfg.imbalance_factor, cfg.warmup_epochs, cfg.decay_epochs, cfg.lr
(1.0, 1, [16, 18], 0.1)
>>> TrainConfig.from_dict({"flip": "false"}, source="run.toml")
Traceback (most recent call last):
...
classbalanced.config.ConfigTypeError: config key flip in run.toml: expected true or false, got 'false'
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import sys
import types
import typing
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from ._validation import check_record, shown
from .data.cifar import CifarName
from .data.longtail import Profile
from .data.prepared import LARGE_DATASETS, LIST_DATASETS  # noqa: F401  (re-exported)
from .data.registry import DATASET_OPTIONS, DATASET_REGISTRY, dataset_options
from .data.validation import check_val_fraction
from .losses import available_losses, loss_options, loss_uses_gamma
from .models.registry import check_model_name, check_pretrained
from .presets import find_config
from .schedules import LRScheduleKind, ScheduleKind

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "GROUPS",
    "PATH_KEYS",
    "ConfigTypeError",
    "TrainConfig",
    "check_resolved",
    "config_differences",
    "recorded_value",
    "config_from_sources",
    "load_config_file",
    "run_config",
    "warn_test_is_train",
]

Precision = Literal["fp32", "bf16", "fp16"]
SamplerName = Literal["shuffle", "class_balanced"]
ImageDecode = Literal["fast", "draft", "device"]
WorkerOutput = Literal["uint8", "float"]

#: Datasets whose default imbalance factor is the paper's headline setting (100).
CIFAR_DATASETS: tuple[str, ...] = typing.get_args(CifarName)
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
PROFILES: tuple[str, ...] = typing.get_args(Profile)
#: the largest --pad (a crop offset beyond the image is all padding; larger values only
#: allocate memory: --pad 100000 asked for hundreds of GB)
MAX_PAD = 128
#: the largest --image-size (a side of 4096 pixels is already 50 MB per RGB image)
MAX_IMAGE_SIZE = 4096
#: the keys of a run's config.json that have no default worth guessing
RUN_REQUIRED_KEYS = ("dataset", "model", "loss")
#: the largest magnitude of a real-valued setting: float32's (the training dtype; PyTorch
#: cannot convert a larger learning rate, weight decay or gamma, a bug-like overflow)
FLOAT32_MAX = 3.4028234663852886e38
#: the largest --seed (seeds reach torch.Generator().manual_seed(seed * 1_000_003 + epoch),
#: which takes 64 bits; numpy's convention of 32-bit seeds leaves ample room)
MAX_SEED = 2**32 - 1

#: field groups, in the order of ``--help``
GROUPS = {
    "data": "data",
    "model": "model",
    "loss": "loss and re-weighting",
    "optimisation": "optimisation (defaults: the paper's CIFAR recipe)",
    "run": "run",
}

#: the ``compile_mode`` values that replay CUDA graphs
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")
#: keys that may differ between an interrupted run and its resumption (the new value is
#: used and recorded in config.json): how the run is driven (the device, and with it the
#: process-group backend: NCCL needs CUDA), and options that change no result: loader
#: workers kept or rebuilt, and how many, give the same batches (each batch is seeded by its
#: position, ``engine.streams.LoaderStream``); how checkpoints are written and how many are
#: kept, how often the host reads the loss, progress bars, the evaluation batch size (the
#: network is in evaluation mode: each image's logits alone), cuDNN's algorithm search
#: (CUDA only) and whether missing CIFAR archives may be downloaded (resume checks the
#: data's fingerprint). Every other key changes results and is refused without --force.
RESUME_FREE_KEYS = (
    "resume",
    "overwrite",
    "device",
    "dist_backend",
    "progress",
    "force",
    "out",
    "persistent_workers",
    "num_workers",
    "async_checkpoints",
    "sync_every",
    "keep_checkpoints",
    "eval_batch_size",
    "cudnn_benchmark",
    "download",
)
#: keys added later -> the value that reproduces runs written before them (image-file data
#: sets: crops decoded at a reduced size, normalised in the loader workers)
LEGACY_VALUES = {"image_decode": "draft", "worker_output": "float"}
#: keys of older config files that are read and dropped
LEGACY_KEYS = ("extra",)


class ConfigTypeError(TypeError, ValueError):
    """A config value of the wrong type (a ValueError too: it is a bad input, not a bug)."""


def option(default: Any = None, help: str = "", *, group: str, **cli: Any) -> Any:
    """A :class:`TrainConfig` field with its ``--help`` text and group.

    ``cli`` overrides how the flag is generated: ``flag=False`` (no flag),
    ``action="store_true"``, ``metavar``, ``default_factory``.
    """
    if group not in GROUPS:
        raise ValueError(f"expected a group in {', '.join(GROUPS)}, got {group!r}")
    factory = cli.pop("default_factory", None)
    metadata = {"help": help, "group": group, **cli}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


#: The config keys that name files or folders (a leading ``~`` is expanded).
PATH_KEYS = (
    "data_dir",
    "train_data",
    "test_data",
    "val_data",
    "train_list",
    "val_list",
    "test_list",
    "out",
)


@dataclass
class TrainConfig:
    """Everything a training run depends on (the defaults: the paper's CIFAR recipe).

    Longer than 150 lines on purpose: it is the list of every setting, each declared
    once with its type, default, help and group, and reads best as one list.
    """

    # data
    dataset: str = option(
        "cifar10", "data set: {datasets} (default cifar10)", group="data", registry="dataset"
    )
    data_dir: str = option(
        "data", "folder holding (or receiving) the data set's files (default: data)", group="data"
    )
    train_data: str | None = option(
        None, "training .npz file (x uint8, y int) or class folder", group="data"
    )
    test_data: str | None = option(None, "test .npz file or class folder", group="data")
    val_fraction: float | None = option(
        None,
        "hold out this stratified part, in (0, 0.5], of the (long-tailed) training set for the "
        "val_* metrics (class-balanced weights from what remains)",
        group="data",
    )
    val_data: str | None = option(
        None, "a separate validation .npz file or class folder for the val_* metrics", group="data"
    )
    imbalance_factor: float | None = option(
        None, "n_max / n_min >= 1 (default 100 for CIFAR, 1 otherwise)", group="data"
    )
    profile: Profile = option("exp", "long-tail profile (default exp)", group="data")
    image_size: int | None = option(
        None,
        "class folders: resize images to this size; large data sets: crop size (default 224)",
        group="data",
    )
    download: bool = option(True, "download missing CIFAR archives (default: yes)", group="data")
    num_workers: int = option(
        4, "large data sets: loader workers per process (default 4)", group="data"
    )
    skip_missing: bool = option(
        False, "large data sets: train without images that are listed but absent", group="data"
    )
    train_list: str | None = option(
        None,
        "list data sets: the train list prepared (one 'relative/path label' per line)",
        group="data",
    )
    val_list: str | None = option(None, "list data sets: the val list prepared", group="data")
    test_list: str | None = option(None, "list data sets: the test list prepared", group="data")
    # the input pipeline of the image-file data sets (data.pipeline, data.encoded, engine.streams)
    image_decode: ImageDecode = option(
        "fast",
        "image-file data sets, training crops: fast (default: only the crop's region of a "
        "JPEG decoded, or without the libjpeg extension its rows down to the last, at a reduced "
        "size where it allows, resized on uint8), draft (reduced size, "
        "torchvision's pixels otherwise), device (decoded in batches on the training device: "
        "nvJPEG on CUDA)",
        group="data",
    )
    worker_output: WorkerOutput = option(
        "uint8",
        "image-file data sets: uint8 (default: normalised on the device) or float batches "
        "(normalised in the loader workers; refused with --image-decode device, which "
        "normalises on the device)",
        group="data",
    )
    persistent_workers: bool = option(
        True,
        "image-file data sets: keep the loader workers for the whole run (reseeded each "
        "epoch: the same batches as new workers; default: yes)",
        group="data",
    )
    # model
    model: str = option(
        "resnet32", "model: {models} (default resnet32)", group="model", registry="model"
    )
    pretrained: bool = option(
        False,
        "start from torchvision's ImageNet weights in the local cache (resnet50/101/152, resnext50; not resnet10)",
        group="model",
    )
    # loss and re-weighting
    loss: str = option("softmax", "loss: {losses} (default softmax)", group="loss", registry="loss")
    beta: float = option(0.0, "class-balanced beta in [0, 1) (default 0: unweighted)", group="loss")
    gamma: float = option(1.0, "focal-loss gamma >= 0 (default 1)", group="loss")
    loss_options: dict[str, float] = option(
        help="the loss's own options as KEY=VALUE (repeatable): {loss_options}",
        group="loss",
        default_factory=dict,
        metavar="KEY=VALUE",
        flag="--loss-option",
    )
    reweight_schedule: ScheduleKind = option(
        "constant",
        "constant (default: class-balanced weights throughout), drw (unweighted until "
        "--reweight-epoch, then class-balanced), ramp (beta grows to --beta by --reweight-epoch)",
        group="loss",
    )
    reweight_epoch: int | None = option(
        None, "drw switch / ramp end (default 160 x epochs / 200)", group="loss"
    )
    sampler: SamplerName = option(
        "shuffle",
        "shuffle (default: every image once per epoch) or class_balanced "
        "(P(class) ~ n / E_n(--sampler-beta); pair it with --beta 0)",
        group="loss",
    )
    sampler_beta: float = option(
        0.9999, "beta of the class-balanced sampler (default 0.9999)", group="loss"
    )
    # optimisation
    epochs: int = option(
        200, "default 200; warm-up and decay epochs scale with it", group="optimisation"
    )
    batch_size: int = option(128, "global batch size (default 128)", group="optimisation")
    lr: float | None = option(
        None, "base learning rate (default 0.1 x batch / 128)", group="optimisation"
    )
    momentum: float = option(0.9, "SGD momentum (default 0.9)", group="optimisation")
    nesterov: bool = option(False, "Nesterov momentum", group="optimisation")
    weight_decay: float = option(2e-4, "default 2e-4", group="optimisation")
    no_decay_bias_and_norm: bool = option(
        False,
        "no weight decay on biases and norm layers (large-scale recipe)",
        group="optimisation",
    )
    accumulate_steps: int = option(
        1, "micro-batches per optimiser step (default 1)", group="optimisation"
    )
    warmup_epochs: int | None = option(
        None,
        "linear warm-up epochs (default 5 x epochs / 200, at least 1; none in a 1-epoch run)",
        group="optimisation",
    )
    decay_epochs: list[int] | None = option(
        None, "epochs of the step decays (default 160 180, scaled)", group="optimisation"
    )
    decay_factors: list[float] | None = option(
        None,
        "learning-rate factors from each decay epoch on (default 0.01 0.0001 long-tailed, "
        "0.1 0.01 balanced)",
        group="optimisation",
    )
    lr_schedule: LRScheduleKind = option(
        "step",
        "step (default: warm-up, then --decay-epochs) or cosine (warm-up, then a cosine to 0 "
        "at the last step)",
        group="optimisation",
    )
    pad: int = option(
        4, f"random-crop padding, 0 to {MAX_PAD} pixels (default 4)", group="optimisation"
    )
    flip: bool = option(True, "random horizontal flips (default: yes)", group="optimisation")
    # run
    eval_every: int = option(2, "evaluate every N epochs (default 2)", group="run")
    eval_batch_size: int = option(1000, "evaluation batch size (default 1000)", group="run")
    evaluate_test: bool = option(
        True,
        "evaluate on the test set (default: yes; --no-evaluate-test with a validation set: the "
        "test set is never read, as in tune's trials)",
        group="run",
    )
    seed: int = option(
        0,
        f"seeds the subset, initialisation, order and augmentation, 0 to {MAX_SEED} (default 0)",
        group="run",
    )
    device: str = option("auto", "auto (default), cpu, cuda, cuda:N", group="run")
    precision: Precision = option("fp32", "autocast precision (default fp32)", group="run")
    channels_last: bool = option(
        True, "channels-last memory format (default: yes; --no-channels-last for NCHW)", group="run"
    )
    compile: bool = option(False, "torch.compile the model", group="run")
    sync_bn: bool = option(
        False,
        "synchronised batch norm across processes (torchrun; a model without batch norm is refused)",
        group="run",
    )
    skip_nonfinite: bool = option(
        False, "skip and count steps whose loss is NaN/inf instead of stopping", group="run"
    )
    # speed: the launch-overhead options (all off by default until the GPU check has measured
    # them; each gives the same results as the plain path, see docs/training.md)
    sgd_impl: Literal["default", "foreach", "fused"] = option(
        "default",
        "SGD implementation: default (PyTorch's choice: foreach on CUDA, a loop over the "
        "parameters on the CPU), foreach, fused (one kernel per step); the same updates",
        group="optimisation",
    )
    cudnn_benchmark: bool = option(
        False,
        "CUDA only (no effect on the CPU): cuDNN times its convolution algorithms for the batch shape",
        group="run",
    )
    compile_mode: Literal[
        "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"
    ] = option(
        "default",
        "torch.compile mode with --compile (reduce-overhead: CUDA graphs; every training step "
        "has a full batch, so the shapes are static)",
        group="run",
    )
    async_checkpoints: bool = option(
        False,
        "write checkpoints in a background thread from a CPU copy (a failed write stops the "
        "run at the next evaluation or at the end; the last one is waited for)",
        group="run",
    )
    sync_every: int = option(
        20,
        "steps between host reads of the loss (progress bar, non-finite check); 0: once per "
        "epoch (default 20)",
        group="run",
    )
    dist_backend: Literal["auto", "nccl", "gloo"] = option(
        "auto",
        "torchrun's process-group backend: auto (default: nccl on CUDA, gloo on the CPU), "
        "nccl, gloo (e.g. several processes on one GPU)",
        group="run",
    )
    out: str = option("runs/latest", "run folder (default runs/latest)", group="run")
    keep_checkpoints: int = option(2, "how many checkpoints to keep (default 2)", group="run")
    progress: bool = option(True, "progress bars (default: yes)", group="run")
    resume: bool = option(False, "continue the run in --out", group="run", action="store_true")
    overwrite: bool = option(False, "replace the run in --out", group="run", action="store_true")
    force: bool = option(
        False,
        "resume even if an option that changes results differs (the others, e.g. "
        "--keep-checkpoints, --eval-batch-size, --num-workers, may change without it)",
        group="run",
        action="store_true",
    )

    def __post_init__(self) -> None:
        # a leading ~ is the user's home in a config file (or --out=~/x) as on a shell's
        # command line; kept as typed, `data_dir = "~/data"` downloaded into a folder "~"
        for key in PATH_KEYS:
            value = getattr(self, key)
            if isinstance(value, str) and value.startswith("~"):
                setattr(self, key, os.path.expanduser(value))
        # model names are case-insensitive (models.registry): one spelling is saved, so that
        # report groups --model ResNet32 with resnet32 runs and finds their published numbers
        if isinstance(self.model, str):
            self.model = self.model.lower()

    # ------------------------------------------------------------------
    def resolved(self) -> TrainConfig:
        """Return a copy with every derived value filled in and every value checked."""
        cfg = dataclasses.replace(self, loss_options=dict(self.loss_options))
        cfg.validate()
        if cfg.decay_epochs is not None:  # given: kept as they are, maybe beyond a shorter run
            _warn_unreached_decays(cfg)
        if cfg.imbalance_factor is None:
            cfg.imbalance_factor = 100.0 if cfg.dataset in CIFAR_DATASETS else 1.0
        cfg.imbalance_factor = float(cfg.imbalance_factor)
        if cfg.lr is None:
            cfg.lr = 0.1 * cfg.batch_size / 128
        scale = cfg.epochs / 200
        if cfg.warmup_epochs is None:
            cfg.warmup_epochs = max(1, round(5 * scale)) if cfg.epochs > 1 else 0
        if cfg.lr_schedule == "cosine":  # no step decays: the cosine sets every step's lr
            _refuse_decays_with_cosine(cfg)
            cfg.decay_epochs, cfg.decay_factors = [], []
        if cfg.decay_epochs is None:
            cfg.decay_epochs = default_decay_epochs(cfg.epochs)
        if cfg.reweight_epoch is None:
            cfg.reweight_epoch = round(160 * scale)
        if cfg.decay_factors is None:
            cfg.decay_factors = [0.1, 0.01] if cfg.imbalance_factor == 1.0 else [0.01, 0.0001]
        cfg.validate()
        _check_schedule_fits(cfg)
        _warn_unused_gamma(cfg)
        return cfg

    def validate(self, source: str | None = None) -> None:
        """Raise a one-line ValueError (or :class:`ConfigTypeError`) for a bad value.

        ``source`` (a file name) is named in the message of a value of the wrong type.
        """
        check_types(self, source)
        _check_loss_options(self, f" in {source}" if source else "")
        _check_data(self)
        if self.pretrained:  # before the data load, not after it
            check_pretrained(self.model)
        _check_ranges(self)
        _check_lr_schedule(self)
        _check_speed_options(self)
        _check_permissions(self)
        _check_validation(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "config") -> TrainConfig:
        """A config from ``values`` (a file's keys); unknown keys and wrong types name ``source``."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in values.items() if k not in LEGACY_KEYS or v}
        unknown = sorted(k if len(k) <= 80 else shown(k) for k in set(values) - known)
        if unknown:
            hint = ""
            if {"base", "grid"} & set(unknown):
                hint = f"; {source} looks like a sweep file: run it with classbalanced sweep --config {source}"
            raise ValueError(
                f"unknown key(s) in {source}: {', '.join(unknown)}{hint}; valid keys: {', '.join(sorted(known))}"
            )
        cfg = cls(**values)
        check_types(cfg, source, keys=values)
        return cfg


# ---------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------


@functools.cache
def field_types() -> dict[str, Any]:
    """Field name -> its resolved type annotation."""
    return typing.get_type_hints(TrainConfig)


def describe_type(tp: Any) -> str:
    """How a type reads in a message: ``an integer``, ``true or false``, ``one of exp, step``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return " or ".join(describe_type(a) for a in inner) + " (or unset)"
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is list:
        return f"a list of {describe_type(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a table of numbers"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[tp]


def _matches(value: Any, tp: Any) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if tp is type(None):
        return value is None
    if origin is Literal:
        return isinstance(value, str) and value in args
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            isinstance(k, str) and _matches(v, args[1]) for k, v in value.items()
        )
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp)


def check_types(cfg: TrainConfig, source: str | None = None, *, keys=None) -> None:
    """Check every field (or only ``keys``) against its declared type and its registry.

    (Whether ``loss_options`` suit ``loss`` is checked by :meth:`TrainConfig.validate`,
    once a file's keys and the flags are merged: the loss may come from either.)
    """
    where = f" in {source}" if source else ""
    types = field_types()
    for f in fields(cfg):
        if keys is not None and f.name not in keys:
            continue
        value = getattr(cfg, f.name)
        if not _matches(value, types[f.name]):
            raise ConfigTypeError(
                f"config key {f.name}{where}: expected {describe_type(types[f.name])}, got {shown(value)}"
            )
        registry = f.metadata.get("registry")
        if registry is not None:
            try:
                check_name(registry, value)
            except ValueError as exc:
                raise ValueError(f"config key {f.name}{where}: {exc}") from None


def check_name(registry: str, name: str) -> None:
    """ValueError unless ``name`` is registered in the ``registry`` (dataset, model, loss)."""
    if registry == "dataset":
        DATASET_REGISTRY.lookup(name)
    elif registry == "model":
        check_model_name(name)
    else:
        if name not in available_losses():
            raise ValueError(
                f"unknown loss {shown(name)}: expected one of {', '.join(available_losses())}"
            )


def _check_loss_options(cfg: TrainConfig, where: str) -> None:
    valid = loss_options(cfg.loss)
    for key, value in cfg.loss_options.items():
        if key not in valid:
            names = ", ".join(valid) or "none"
            raise ValueError(
                f"config key loss_options{where}: loss {cfg.loss!r} has no option {key!r} "
                f"(its options: {names})"
            )
        _number(f"loss_options.{key}", value)


def _check_data(cfg: TrainConfig) -> None:
    """Refuse a data option (:data:`~classbalanced.data.registry.DATASET_OPTIONS`) set to other
    than its default for a data set that does not read it (a data set that ignores
    --train-data must not silently train on something else)."""
    reads = dataset_options(cfg.dataset)
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    ignored = [k for k in DATASET_OPTIONS if k not in reads and getattr(cfg, k) != defaults[k]]
    if ignored:
        hint = ""
        if "train_data" in ignored:
            hint = f"; for {cfg.train_data} pass --dataset " + (
                "npz" if str(cfg.train_data).endswith(".npz") else "folder"
            )
        raise ValueError(
            f"dataset {cfg.dataset} does not read {', '.join(ignored)} (it reads: "
            f"{', '.join(reads) or 'none of the data options'}){hint}"
        )
    if "train_data" in reads and not cfg.train_data:
        raise ValueError(f"--dataset {cfg.dataset} needs --train-data PATH (and --test-data PATH)")
    if "test_data" in reads and not cfg.test_data and cfg.evaluate_test:
        raise ValueError(f"--dataset {cfg.dataset} needs --test-data PATH for evaluation")


def _check_ranges(cfg: TrainConfig) -> None:
    sampler_beta = _number("sampler_beta", cfg.sampler_beta)
    if not 0 <= sampler_beta < 1:
        raise ValueError(f"sampler_beta must be in [0, 1), got {sampler_beta}")
    for name, minimum in (
        ("epochs", 1),
        ("batch_size", 1),
        ("eval_every", 1),
        ("eval_batch_size", 1),
        ("keep_checkpoints", 1),
        ("pad", 0),
        ("num_workers", 0),
        ("accumulate_steps", 1),
        ("image_size", 1),
        ("reweight_epoch", 0),
        ("warmup_epochs", 0),
        ("sync_every", 0),
    ):
        if getattr(cfg, name) is not None:
            _int_at_least(name, getattr(cfg, name), minimum)
    for name in ("out", "data_dir"):  # "" would mean the working folder
        if not getattr(cfg, name).strip():
            raise ValueError(f"{name} must be a folder path, got {getattr(cfg, name)!r}")
    if cfg.pad > MAX_PAD:
        raise ValueError(f"pad must be an integer in [0, {MAX_PAD}], got {cfg.pad}")
    if cfg.image_size is not None and cfg.image_size > MAX_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be an integer in [1, {MAX_IMAGE_SIZE}], got {shown(cfg.image_size)}"
        )
    _int_at_least("seed", cfg.seed, 0)
    if cfg.seed > MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], got {cfg.seed}")
    if cfg.imbalance_factor is not None:
        factor = _number("imbalance_factor", cfg.imbalance_factor)
        if factor < 1:
            hint = (
                f" (old scripts passed the inverse: {factor} means --imbalance-factor {1 / factor:g})"
                if factor > 0
                else ""
            )
            raise ValueError(f"imbalance_factor must be >= 1 (n_max / n_min), got {factor}{hint}")
    beta = _number("beta", cfg.beta)
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    gamma = _number("gamma", cfg.gamma)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if cfg.lr is not None and not _number("lr", cfg.lr) > 0:
        raise ValueError(f"lr must be > 0, got {cfg.lr}")
    if _number("weight_decay", cfg.weight_decay) < 0:
        raise ValueError(f"weight_decay must be >= 0, got {cfg.weight_decay}")
    if not 0 <= _number("momentum", cfg.momentum) < 1:  # 1 and above: the run diverges
        raise ValueError(f"momentum must be in [0, 1), got {cfg.momentum}")


def _check_validation(cfg: TrainConfig) -> None:
    """One validation source at most (a fraction of the training set, a file, or a list data
    set's val list), a fraction in (0, 0.5], and a validation set when the test set is not
    evaluated."""
    given = [k for k in ("val_fraction", "val_data", "val_list") if getattr(cfg, k) is not None]
    if len(given) > 1:
        raise ValueError(f"{' and '.join(given)}: expected one validation source, got {len(given)}")
    if cfg.val_fraction is not None:
        check_val_fraction(cfg.val_fraction)
    if cfg.val_data is not None and cfg.dataset in LARGE_DATASETS:
        raise ValueError(
            f"val_data is for data held in memory; dataset {cfg.dataset} takes a prepared "
            "--val-list (list data sets) or --val-fraction"
        )
    if not cfg.evaluate_test and not given:
        raise ValueError(
            "evaluate_test false needs a validation set: expected --val-fraction, --val-data or "
            "--val-list, got none (the run would evaluate nothing)"
        )


def _check_lr_schedule(cfg: TrainConfig) -> None:
    if cfg.decay_epochs is not None:
        if not all(e >= 0 for e in cfg.decay_epochs):
            raise ValueError(
                f"decay_epochs must be a list of epoch numbers, got {cfg.decay_epochs!r}"
            )
        if cfg.decay_epochs != sorted(cfg.decay_epochs):
            raise ValueError(f"decay_epochs must be increasing, got {cfg.decay_epochs}")
    if cfg.decay_factors is not None:
        for f in cfg.decay_factors:
            if not (math.isfinite(f) and 0 < f <= FLOAT32_MAX):
                raise ValueError(
                    f"decay_factors must be a list of positive numbers, got {cfg.decay_factors!r}"
                )
            if cfg.lr is not None:
                _number(f"lr x decay factor ({cfg.lr:g} x {f:g})", cfg.lr * f)
    if cfg.decay_epochs is not None and cfg.decay_factors is not None:
        if len(cfg.decay_epochs) != len(cfg.decay_factors):
            raise ValueError(
                f"decay_epochs and decay_factors must have the same length, got {len(cfg.decay_epochs)} and {len(cfg.decay_factors)}"
            )


def _check_speed_options(cfg: TrainConfig) -> None:
    """Refused: options that would be silently ignored (a sampler beta without the
    class-balanced sampler, a compile mode without ``--compile``, float worker output with
    device decoding) and CUDA graphs with gradient accumulation
    (a replay may overwrite the previous micro-batch's gradients, which live in the graphs'
    memory; untested on a GPU, so not offered)."""
    if cfg.sampler != "class_balanced" and cfg.sampler_beta != _DEFAULTS["sampler_beta"]:
        raise ValueError(
            f"sampler_beta {cfg.sampler_beta} needs sampler = class_balanced (--sampler "
            f"class_balanced), got sampler = {cfg.sampler}"
        )
    if cfg.compile_mode != "default" and not cfg.compile:
        raise ValueError(
            f"compile_mode {cfg.compile_mode} needs --compile (compile = true), got compile = false"
        )
    if cfg.compile_mode in CUDAGRAPH_MODES and cfg.accumulate_steps > 1:
        raise ValueError(
            f"compile_mode {cfg.compile_mode} (CUDA graphs) cannot accumulate gradients: expected "
            f"accumulate_steps = 1 or compile_mode default / max-autotune-no-cudagraphs, got "
            f"accumulate_steps = {cfg.accumulate_steps}"
        )
    if cfg.image_decode == "device" and cfg.worker_output == "float":
        raise ValueError(
            "worker_output float does not apply to image_decode device (decoded and normalised on "
            "the device): expected worker_output = uint8, got float"
        )


def _check_permissions(cfg: TrainConfig) -> None:
    """``resume`` with ``overwrite`` contradict each other; ``force`` acts on a resume only."""
    if cfg.resume and cfg.overwrite:
        raise ValueError(
            "resume and overwrite: expected one of them (--resume continues the run in --out, "
            "--overwrite replaces it), got both"
        )
    if cfg.force and not cfg.resume:
        raise ValueError(
            "force (resume even if the config differs) needs resume: got --force alone"
        )


def _warn_unused_gamma(cfg: TrainConfig) -> None:
    """Warn about a gamma the loss does not read (a sweep may cross gamma with such losses)."""
    if cfg.gamma != _DEFAULTS["gamma"] and not loss_uses_gamma(cfg.loss):
        warnings.warn(
            f"gamma {cfg.gamma:g} is ignored by the {cfg.loss} loss (only focal losses read it)",
            stacklevel=3,
        )


def _check_schedule_fits(cfg: TrainConfig) -> None:
    """Refuse a re-weighting schedule without a beta or with an epoch the run never reaches
    (silent no-ops); warn about a warm-up that does not end within the run (the learning rate
    never reaches ``lr``; refused under a cosine, which has no step left to run)."""
    warmup = check_resolved("warmup_epochs", cfg.warmup_epochs)
    if cfg.lr_schedule == "cosine" and warmup >= cfg.epochs:
        raise ValueError(
            f"lr_schedule cosine needs warmup_epochs < epochs, got warmup_epochs "
            f"{cfg.warmup_epochs} and epochs {cfg.epochs}"
        )
    if warmup and warmup >= cfg.epochs:
        warnings.warn(
            f"a warm-up of {cfg.warmup_epochs} epochs does not end within a run of {cfg.epochs}: "
            f"the learning rate never reaches {cfg.lr:g}",
            stacklevel=3,
        )
    start = cfg.reweight_epoch  # None only before resolved(): nothing to check then
    if cfg.reweight_schedule == "drw" and start is not None and start >= cfg.epochs:
        raise ValueError(
            f"reweight_epoch must be < epochs for drw: re-weighting from epoch {cfg.reweight_epoch} "
            f"would never switch on in a run of {cfg.epochs} epochs"
        )
    if cfg.reweight_schedule == "ramp" and start is not None and start > cfg.epochs:
        raise ValueError(
            f"reweight_epoch must be <= epochs for ramp: beta would not reach {cfg.beta} "
            f"(ramp ends at epoch {cfg.reweight_epoch}, the run at {cfg.epochs})"
        )
    if cfg.reweight_schedule != "constant" and cfg.beta == 0:
        raise ValueError(
            f"reweight_schedule {cfg.reweight_schedule} needs beta > 0: beta 0 weights every "
            "class 1 before and after the switch, got beta = 0"
        )


def _refuse_decays_with_cosine(cfg: TrainConfig) -> None:
    for key in ("decay_epochs", "decay_factors"):
        if getattr(cfg, key):
            raise ValueError(
                f"{key} applies to lr_schedule step only, got {key} {getattr(cfg, key)} with "
                "lr_schedule cosine: drop one of them"
            )


def default_decay_epochs(epochs: int) -> list[int]:
    """The paper's decays at epochs 160 and 180 of 200, scaled to ``epochs`` (at least 1).

    >>> default_decay_epochs(200), default_decay_epochs(4)
    ([160, 180], [3, 4])
    """
    return [max(1, round(160 * epochs / 200)), max(1, round(180 * epochs / 200))]


_Value = TypeVar("_Value")


def check_resolved(name: str, value: _Value | None) -> _Value:
    """``value`` of the derived key ``name`` of a resolved config (:meth:`TrainConfig.resolved`
    fills every one in); ValueError where it is still ``None``.

    >>> check_resolved("lr", TrainConfig(epochs=4).resolved().lr)
    0.1
    >>> check_resolved("lr", TrainConfig().lr)
    Traceback (most recent call last):
    ...
    ValueError: lr: expected a resolved config (TrainConfig.resolved()), got None
    """
    if value is None:
        raise ValueError(f"{name}: expected a resolved config (TrainConfig.resolved()), got None")
    return value


def warn_test_is_train(cfg: TrainConfig) -> None:
    """Warn when ``train``'s --test-data names the training data (as lists warn about shared
    images): the test error then measures memorisation. Paths are compared resolved."""
    if cfg.train_data and cfg.test_data:
        train, test = Path(cfg.train_data).resolve(), Path(cfg.test_data).resolve()
        if train == test:
            warnings.warn(
                f"--test-data {shown(cfg.test_data)} is the training data: the test error "
                "will measure images the model trained on",
                stacklevel=2,
            )


def _warn_unreached_decays(cfg: TrainConfig) -> None:
    """Warn about given decay epochs at or beyond the run's end (a decay at epoch ``e`` acts
    from the ``e``-th epoch, counted from 0): the learning rate never takes their factors.
    The defaults of a short run (a saved config resolved again) are not warned about."""
    given = cfg.decay_epochs or []  # None: not given, nothing to warn about
    beyond = [e for e in given if e >= cfg.epochs]
    if beyond and list(given) != default_decay_epochs(cfg.epochs):
        warnings.warn(
            f"decay_epochs {', '.join(map(str, beyond))} lie beyond a run of {cfg.epochs} "
            f"epochs: the learning rate never decays there (decay_epochs are kept as given "
            f"when epochs change)",
            stacklevel=3,
        )


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigTypeError(f"{name} must be a number, got {shown(value)}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if abs(value) > FLOAT32_MAX:
        raise ValueError(
            f"{name} must be at most {FLOAT32_MAX:.4g} in magnitude (float32), got {value!r}"
        )
    return float(value)


def _int_at_least(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigTypeError(f"{name} must be an integer >= {minimum}, got {shown(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {shown(value)}")


# ---------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml`` / ``.yml``) file of config keys, or the
    bundled preset of that name (:func:`classbalanced.presets.find_config`).

    Keys may use dashes or underscores (``imbalance-factor`` or ``imbalance_factor``); a key
    given twice (in both spellings, or twice in YAML) is refused. YAML numbers follow
    YAML 1.2 (``2e-4`` is a number, as in TOML, not the string PyYAML makes of it).
    """
    path = find_config(path)  # the file, else the bundled preset of that name
    if path.is_dir():
        raise ValueError(f"config file {path} is a folder: expected a file")
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"config file {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
            f"{exc.start}): expected a TOML or YAML file"
        ) from None
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise ValueError(f"config file must end in .toml, .yaml or .yml, got {path.name}")
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        else:
            _refuse_yaml_aliases(text)
            data = yaml.load(text, Loader=_yaml_loader()) or {}
    except (tomllib.TOMLDecodeError, ImportError) as exc:
        raise ValueError(f"cannot parse config file {path}: {exc}") from None
    except Exception as exc:  # yaml.YAMLError and friends
        if isinstance(exc, ValueError):
            raise ValueError(f"config file {path}: {exc}") from None
        raise ValueError(f"cannot parse config file {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a table of keys, got {type(data).__name__}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name in values:
            raise ValueError(f"config file {path}: key {name} given twice (expected it once)")
        values[name] = value
    return values


def _refuse_yaml_aliases(text: str) -> None:
    """A YAML alias (``*name``) is refused before anything is built: nested aliases expand
    exponentially (a "billion laughs" file of a few hundred bytes fills the memory), and
    no config key needs one. The events are read in one linear pass."""
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            mark, anchor = event.start_mark, event.anchor or ""  # the parser sets both
            raise ValueError(
                f"line {mark.line + 1 if mark else '?'}: YAML alias *{anchor[:40]} "
                "refused (aliases can expand without bound): write the value out"
            )


@functools.cache
def _yaml_loader() -> type:
    """PyYAML's safe loader, refusing duplicate keys and reading YAML 1.2 exponent floats."""

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
            twice = sorted({str(k) for k in keys if keys.count(k) > 1})
            if twice:
                raise ValueError(f"key {', '.join(twice)} given twice (expected it once)")
            return super().construct_mapping(node, deep=deep)

    exponent = re.compile(r"^[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)[eE][-+]?[0-9]+$")
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", exponent, list("-+.0123456789"))
    return Loader


def run_config(values: Any, source: str) -> TrainConfig:
    """The config of a run from its ``config.json`` (``values``, read from ``source``):
    every key checked with the command line's types and bounds, and a missing
    required key (:data:`RUN_REQUIRED_KEYS`) named, never filled with its default."""
    check_record(values, source, RUN_REQUIRED_KEYS, what="object")
    cfg = TrainConfig.from_dict(values, source=source)
    try:
        _check_ranges(cfg)
    except ValueError as exc:  # (ConfigTypeError too)
        raise type(exc)(f"{source}: {exc}") from None
    return cfg


def config_from_sources(
    file: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Defaults, then the file's keys, then ``overrides`` (flags the user gave)."""
    values: dict[str, Any] = {}
    source = "config"
    if file is not None:
        values.update(load_config_file(file))
        source = str(file)
    cfg = TrainConfig.from_dict(values, source=source)
    if overrides:
        overrides = dict(overrides)
        if "loss_options" in overrides:  # flags add to (or change) the file's options
            overrides["loss_options"] = {**cfg.loss_options, **overrides["loss_options"]}
        cfg = dataclasses.replace(cfg, **overrides)
        check_types(cfg, "the command line", keys=overrides)
        _warn_kept_lr(values, overrides, source)
    return cfg


def _warn_kept_lr(file_values: dict[str, Any], overrides: dict[str, Any], source: str) -> None:
    """Warn when a flag changes the batch size but the file's learning rate, chosen for the
    file's batch, is kept (the default lr scales with the batch; a given one does not)."""
    batch, lr = overrides.get("batch_size"), file_values.get("lr")
    if batch is None or lr is None or "lr" in overrides:
        return
    if batch != file_values.get("batch_size", _DEFAULTS["batch_size"]):
        warnings.warn(
            f"lr {lr} of {source} is kept with --batch-size {batch} (the file's batch: "
            f"{file_values.get('batch_size', _DEFAULTS['batch_size'])}): pass --lr to scale it",
            stacklevel=3,
        )


def recorded_value(config: dict[str, Any], key: str) -> Any:
    """``config[key]`` of a saved config; for a key it lacks (written before the key existed),
    the value that reproduces what such runs did (:data:`LEGACY_VALUES`, image-file data sets
    only), else the key's default.

    >>> recorded_value({"dataset": "inat2018"}, "image_decode")
    'draft'
    >>> recorded_value({"dataset": "cifar10"}, "image_decode")
    'fast'
    """
    if key in config:
        return config[key]
    if key in LEGACY_VALUES and config.get("dataset") in LARGE_DATASETS:
        return LEGACY_VALUES[key]
    return _DEFAULTS.get(key)


def config_differences(
    old: dict[str, Any], new: dict[str, Any], ignore=RESUME_FREE_KEYS
) -> list[str]:
    """Keys whose values differ between two resolved configs (for refusing a resume).

    A key missing on one side counts as :func:`recorded_value` gives it (configs written
    before the key existed).
    """
    keys = (set(old) | set(new)) - set(ignore) - set(LEGACY_KEYS)
    return sorted(k for k in keys if recorded_value(old, k) != recorded_value(new, k))


_DEFAULTS = TrainConfig().to_dict()
