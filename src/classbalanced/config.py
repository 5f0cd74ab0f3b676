"""Training configuration: defaults of the paper's CIFAR recipe, files, and flag overrides.

A run is fully described by a :class:`TrainConfig`. Values come, in increasing
priority, from the dataclass defaults, a TOML or YAML file (``--config``), and
command-line flags. :meth:`TrainConfig.resolved` fills the values that depend on
others (learning rate scaled by batch size, warm-up and decay epochs scaled with
``epochs``, decay factors for balanced vs long-tailed data); the resolved config
is what every run folder records.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["TrainConfig", "load_config_file", "config_from_sources", "config_differences"]

#: Datasets whose default imbalance factor is the paper's headline setting (100).
CIFAR_DATASETS = ("cifar10", "cifar100", "cifar20")
LIST_DATASETS = ("list", "imagenet_lt", "places_lt")  # data/lists.py
LARGE_DATASETS = ("inat2017", "inat2018", "imagenet", *LIST_DATASETS)
DATASETS = (*CIFAR_DATASETS, "digits", "npz", "folder", *LARGE_DATASETS)
PRECISIONS = ("fp32", "bf16", "fp16")
PROFILES = ("exp", "step")

#: keys that may differ between an interrupted run and its resumption
RESUME_FREE_KEYS = ("resume", "overwrite", "device", "progress", "force", "out")


@dataclass
class TrainConfig:
    """Everything a training run depends on (REFERENCE section 5 defaults)."""

    # data
    dataset: str = "cifar10"
    data_dir: str = "data"
    train_data: str | None = None
    test_data: str | None = None
    imbalance_factor: float | None = None  # None: 100 for CIFAR, 1 (as given) otherwise
    profile: str = "exp"
    image_size: int | None = (
        None  # class folders: resize to this size; large datasets: crop size (224)
    )
    download: bool = True
    num_workers: int = 4  # large datasets: DataLoader worker processes per rank
    skip_missing: bool = False
    # list datasets (list, imagenet_lt, places_lt): `relative/path label` files, as given to prepare
    train_list: str | None = None
    val_list: str | None = None
    test_list: str | None = None
    # model and loss
    model: str = "resnet32"
    pretrained: bool = (
        False  # torchvision's ImageNet weights from the local cache (resnet50/101/152)
    )
    loss: str = "softmax"
    beta: float = 0.0
    gamma: float = 1.0
    reweight_schedule: str = "constant"  # constant | drw (deferred re-weighting) | ramp
    reweight_epoch: int | None = None  # drw switch / ramp end; None: 160 scaled by epochs / 200
    sampler: str = "shuffle"  # shuffle (each image once per epoch) | class_balanced
    sampler_beta: float = (
        0.9999  # class_balanced: P(class i) ~ n_i / E_{n_i}(beta); -> 1: uniform over classes
    )
    # optimisation
    epochs: int = 200
    batch_size: int = 128
    lr: float | None = None  # None: 0.1 * batch_size / 128
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 2e-4
    no_decay_bias_and_norm: bool = False  # large-scale recipe: no decay on biases and norm layers
    accumulate_steps: int = 1  # micro-batches per optimiser step (global batch stays batch_size)
    warmup_epochs: int | None = None  # None: 5 epochs scaled by epochs / 200 (at least 1)
    decay_epochs: list[int] | None = None  # None: [160, 180] scaled by epochs / 200
    decay_factors: list[float] | None = (
        None  # None: [0.01, 0.0001] long-tailed, [0.1, 0.01] balanced
    )
    # augmentation
    pad: int = 4
    flip: bool = True
    # evaluation, output, execution
    eval_every: int = 2
    eval_batch_size: int = 1000
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = True  # 1.4-1.6x faster than NCHW convolutions (docs/benchmarks.md)
    compile: bool = False
    sync_bn: bool = False
    skip_nonfinite: bool = (
        False  # skip (and count) batches whose loss is NaN / inf instead of stopping
    )
    out: str = "runs/latest"
    keep_checkpoints: int = 2
    progress: bool = True
    resume: bool = False
    overwrite: bool = False
    force: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------
    def resolved(self) -> TrainConfig:
        """Return a copy with every derived value filled in and every value checked."""
        cfg = dataclasses.replace(self, extra=dict(self.extra))
        cfg.validate()
        if cfg.imbalance_factor is None:
            cfg.imbalance_factor = 100.0 if cfg.dataset in CIFAR_DATASETS else 1.0
        cfg.imbalance_factor = float(cfg.imbalance_factor)
        if cfg.lr is None:
            cfg.lr = 0.1 * cfg.batch_size / 128
        scale = cfg.epochs / 200
        if cfg.warmup_epochs is None:
            cfg.warmup_epochs = max(1, round(5 * scale)) if cfg.epochs > 1 else 0
        if cfg.decay_epochs is None:
            cfg.decay_epochs = [max(1, round(160 * scale)), max(1, round(180 * scale))]
        if cfg.reweight_epoch is None:
            cfg.reweight_epoch = round(160 * scale)
        if cfg.decay_factors is None:
            cfg.decay_factors = [0.1, 0.01] if cfg.imbalance_factor == 1.0 else [0.01, 0.0001]
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ValueError / TypeError with a one-line message for a bad value."""
        _choice("dataset", self.dataset, DATASETS)
        _choice("profile", self.profile, PROFILES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("reweight_schedule", self.reweight_schedule, ("constant", "drw", "ramp"))
        _choice("sampler", self.sampler, ("shuffle", "class_balanced"))
        sampler_beta = _number("sampler_beta", self.sampler_beta)
        if not 0 <= sampler_beta < 1:
            raise ValueError(f"sampler_beta must be in [0, 1), got {sampler_beta}")
        if self.reweight_epoch is not None:
            _int_at_least("reweight_epoch", self.reweight_epoch, 0)
        if self.dataset in ("npz", "folder") and not self.train_data:
            raise ValueError(
                f"--dataset {self.dataset} needs --train-data PATH (and --test-data PATH)"
            )
        lists = [k for k in ("train_list", "val_list", "test_list") if getattr(self, k)]
        if lists and self.dataset not in LIST_DATASETS:
            raise ValueError(
                f"--{lists[0].replace('_', '-')} is for --dataset {', '.join(LIST_DATASETS)}, got --dataset {self.dataset}"
            )
        if self.dataset in ("npz", "folder") and not self.test_data:
            raise ValueError(f"--dataset {self.dataset} needs --test-data PATH for evaluation")
        _int_at_least("epochs", self.epochs, 1)
        _int_at_least("batch_size", self.batch_size, 1)
        _int_at_least("eval_every", self.eval_every, 1)
        _int_at_least("eval_batch_size", self.eval_batch_size, 1)
        _int_at_least("keep_checkpoints", self.keep_checkpoints, 1)
        _int_at_least("pad", self.pad, 0)
        _int_at_least("num_workers", self.num_workers, 0)
        _int_at_least("accumulate_steps", self.accumulate_steps, 1)
        _int_at_least("seed", self.seed, 0)
        if self.image_size is not None:
            _int_at_least("image_size", self.image_size, 1)
        if self.imbalance_factor is not None:
            factor = _number("imbalance_factor", self.imbalance_factor)
            if factor < 1:
                hint = (
                    f" (old scripts passed the inverse: {factor} means --imbalance-factor {1 / factor:g})"
                    if factor > 0
                    else ""
                )
                raise ValueError(
                    f"imbalance_factor must be >= 1 (n_max / n_min), got {factor}{hint}"
                )
        beta = _number("beta", self.beta)
        if not 0 <= beta < 1:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        gamma = _number("gamma", self.gamma)
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if self.lr is not None and not _number("lr", self.lr) > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("momentum", "weight_decay"):
            if _number(name, getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.warmup_epochs is not None:
            _int_at_least("warmup_epochs", self.warmup_epochs, 0)
        if self.decay_epochs is not None:
            if not isinstance(self.decay_epochs, list) or not all(
                isinstance(e, int) and e >= 0 for e in self.decay_epochs
            ):
                raise ValueError(
                    f"decay_epochs must be a list of epoch numbers, got {self.decay_epochs!r}"
                )
            if self.decay_epochs != sorted(self.decay_epochs):
                raise ValueError(f"decay_epochs must be increasing, got {self.decay_epochs}")
        if self.decay_factors is not None:
            if not isinstance(self.decay_factors, list) or not all(
                isinstance(f, (int, float)) and not isinstance(f, bool) and f > 0
                for f in self.decay_factors
            ):
                raise ValueError(
                    f"decay_factors must be a list of positive numbers, got {self.decay_factors!r}"
                )
        if self.decay_epochs is not None and self.decay_factors is not None:
            if len(self.decay_epochs) != len(self.decay_factors):
                raise ValueError(
                    f"decay_epochs and decay_factors must have the same length, got {len(self.decay_epochs)} and {len(self.decay_factors)}"
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "config") -> TrainConfig:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(
                f"unknown key(s) in {source}: {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}"
            )
        return cls(**values)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}: expected one of {', '.join(choices)}")


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def _int_at_least(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml`` / ``.yml``) file of config keys.

    Keys may use dashes or underscores (``imbalance-factor`` or ``imbalance_factor``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise ValueError(f"config file must end in .toml, .yaml or .yml, got {path.name}")
    except (tomllib.TOMLDecodeError, ImportError) as exc:
        raise ValueError(f"cannot parse config file {path}: {exc}") from None
    except Exception as exc:  # yaml.YAMLError and friends
        if isinstance(exc, ValueError):
            raise
        raise ValueError(f"cannot parse config file {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a table of keys, got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


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
        cfg = dataclasses.replace(cfg, **overrides)
    return cfg


def config_differences(
    old: dict[str, Any], new: dict[str, Any], ignore=RESUME_FREE_KEYS
) -> list[str]:
    """Keys whose values differ between two resolved configs (for refusing a resume)."""
    keys = (set(old) | set(new)) - set(ignore)
    return sorted(k for k in keys if old.get(k) != new.get(k))
