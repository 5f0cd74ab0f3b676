"""The settings of stage two (:class:`DecoupleOptions`) and its per-method, per-data-set
defaults as the classifier-balancing release (Kang et al., ICLR 2020) runs them.

Defaults read from the release's configs (``config/<dataset>/cls_crt.yaml``, ``cls_lws.yaml``):

* epochs: cRT 10 (30 on iNaturalist 2018), LWS 5 (:func:`default_epochs`);
* learning rate (start of the cosine schedule): 0.2 on ImageNet-LT and iNaturalist 2018,
  0.1 on Places-LT; the stage-one run's elsewhere (:func:`default_lr`);
* sampler: the release's class-aware sampling, 4 images of a class per turn
  (:class:`classbalanced.sampling.ClassAwareSampler`).

>>> default_epochs("crt", "inat2018"), default_epochs("crt", "places_lt"), default_epochs("lws", "x")
(30, 10, 5)
>>> default_lr("places_lt", run_lr=0.4), default_lr("imagenet_lt", 0.4), default_lr("npz", 0.4)
(0.1, 0.2, 0.4)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, get_args

from ..config import FLOAT32_MAX

__all__ = [
    "METHODS",
    "TRAINED_METHODS",
    "DEFAULT_TAUS",
    "SAMPLERS",
    "CLASS_BALANCED_SAMPLER",
    "BACKBONE_BN_MODES",
    "EPOCHS",
    "STAGE_TWO_LR",
    "DecoupleOptions",
    "default_epochs",
    "default_lr",
]

Method = Literal["crt", "tau_norm", "lws"]
Sampler = Literal["class_aware", "class_uniform", "shuffle"]
BackboneBN = Literal["eval", "train"]
METHODS: tuple[Method, ...] = get_args(Method)
DEFAULT_TAUS = tuple(round(0.1 * i, 1) for i in range(21))
SAMPLERS: tuple[Sampler, ...] = get_args(Sampler)
BACKBONE_BN_MODES: tuple[BackboneBN, ...] = get_args(BackboneBN)
#: Kang et al.'s stage-two sampling (the release's class-aware sampler), the default of
#: ``crt`` and ``lws``
CLASS_BALANCED_SAMPLER: Sampler = "class_aware"
#: the methods that train (the others are post hoc)
TRAINED_METHODS: tuple[Method, ...] = ("crt", "lws")
#: stage-two epochs: method -> (default, {data set: its own})
EPOCHS: dict[str, tuple[int, dict[str, int]]] = {
    "crt": (10, {"inat2018": 30}),
    "lws": (5, {}),
}
#: stage-two learning rate per data set (others: the stage-one run's)
STAGE_TWO_LR: dict[str, float] = {"imagenet_lt": 0.2, "places_lt": 0.1, "inat2018": 0.2}
#: ``--epochs`` help: the per-method defaults, written once
EPOCHS_HELP = "crt 10 (30 on iNaturalist 2018), lws 5"


def default_epochs(method: str, dataset: str) -> int:
    """The release's stage-two epochs of ``method`` (``crt`` or ``lws``) on ``dataset``."""
    default, per_dataset = EPOCHS[method]
    return per_dataset.get(dataset, default)


def default_lr(dataset: str, run_lr: float | None) -> float | None:
    """The release's stage-two learning rate on ``dataset``, else the stage-one ``run_lr``."""
    return STAGE_TWO_LR.get(dataset, run_lr)


@dataclass
class DecoupleOptions:
    """Stage-two settings. ``None`` means: the default of the method and the stage-one run's
    data set (:func:`default_epochs`, :func:`default_lr`), or the stage-one run's value."""

    method: Method
    out: str
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    loss: str = "softmax"
    beta: float = 0.0
    gamma: float = 1.0
    sampler: Sampler = CLASS_BALANCED_SAMPLER
    # the backbone's batch norm while stage two trains: eval (statistics fixed, the backbone
    # bit-identical) or train (the release's: batch statistics, running statistics updated)
    backbone_bn: BackboneBN = "eval"
    taus: list[float] = field(default_factory=lambda: list(DEFAULT_TAUS))
    tau: float | None = None  # tau_norm: use this tau instead of searching
    tau_bias: str = "keep"  # tau_norm: keep the classifier's bias, or drop it as the release does
    device: str = "auto"
    num_workers: int | None = None
    overwrite: bool = False
    accept_data_change: bool = False  # use data that changed since stage one (fingerprints)

    def validate(self) -> None:
        """One-line ValueError for a bad value."""
        for name, allowed in (
            ("method", METHODS),
            ("sampler", SAMPLERS),
            ("backbone_bn", BACKBONE_BN_MODES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"unknown {name} {getattr(self, name)!r}: expected one of {', '.join(allowed)}"
                )
        for name in ("epochs", "batch_size", "num_workers"):
            value = getattr(self, name)
            low = 0 if name == "num_workers" else 1
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < low
            ):
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not 0 <= self.momentum < 1:  # NaN too; 1 and above: stage two diverges
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        for name, strict in (("lr", 1), ("weight_decay", 0), ("gamma", 0)):
            value = getattr(self, name)
            if value is None:
                continue
            if not ((value > 0 if strict else value >= 0) and value <= FLOAT32_MAX):  # NaN too
                bound = "> 0" if strict else ">= 0"
                raise ValueError(
                    f"{name} must be {bound} and at most {FLOAT32_MAX:.4g}, got {value}"
                )
        if self.tau_bias not in ("keep", "drop"):
            raise ValueError(f"tau_bias must be keep or drop, got {self.tau_bias!r}")
        taus = [self.tau] if self.tau is not None else list(self.taus)
        if not taus or any(not math.isfinite(t) or t < 0 for t in taus):
            raise ValueError(f"tau must be finite and >= 0, got {taus}")
        self._check_method_options()

    def _check_method_options(self) -> None:
        """An option of another method is refused (ignored, decouple.json would record it)."""
        changed = [name for name in _TRAINING_OPTIONS + _TAU_OPTIONS if self._given(name)]
        if self.tau is not None and "taus" in changed:
            raise ValueError("--tau and --taus: expected one of them (a tau, or a grid to search)")
        own = _TAU_OPTIONS if self.method == "tau_norm" else _TRAINING_OPTIONS
        users = "tau_norm" if self.method != "tau_norm" else "crt and lws"
        for name in changed:
            if name not in own:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} applies to {users}, not {self.method}")

    def _given(self, name: str) -> bool:
        f = self.__dataclass_fields__[name]
        if callable(f.default_factory):  # the tau grid: any sequence of the same values
            return list(getattr(self, name)) != list(f.default_factory())
        return bool(getattr(self, name) != f.default)


#: the options of the trained methods (crt, lws) and of tau_norm
_TRAINING_OPTIONS = (
    "epochs", "batch_size", "lr", "momentum", "weight_decay", "loss", "beta", "gamma", "sampler",
    "backbone_bn",
)  # fmt: skip
_TAU_OPTIONS = ("taus", "tau", "tau_bias")
