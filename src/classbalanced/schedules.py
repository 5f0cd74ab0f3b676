"""Schedules: which class weights a loss uses at each epoch, and the learning rate at each step.

Class weights are computed apart from the loss, so any loss with a
``set_weight`` method can be re-weighted on a schedule:

* ``constant``: the class-balanced weights for ``beta`` from the first epoch
  (the paper's method).
* ``drw``, deferred re-weighting (Cao et al., 2019): unweighted until
  ``start_epoch``, then the class-balanced weights for ``beta`` (Cao et al.'s
  CIFAR setting: beta 0.9999 switched on at epoch 160 of 200).
* ``ramp``: a gradual beta ramp. The "volume" ``N = 1 / (1 - beta)`` of the
  paper grows geometrically from 1 (beta 0, unweighted) to ``1 / (1 - beta)``
  over the epochs ``[0, start_epoch]``: ``1 - beta_e = (1 - beta) ** t`` with
  ``t = min(1, epoch / start_epoch)``.

:class:`LRSchedule` is the learning rate of each optimiser step: a linear warm-up,
then either step decays (``step``, the class-balanced paper's) or a cosine to 0 over
the remaining steps (``cosine``, the decoupling release's ImageNet-LT / Places-LT
recipe).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from ._validation import check_beta, check_choice, check_int
from .weights import as_counts, class_balanced_weights

__all__ = [
    "LR_SCHEDULES",
    "SCHEDULES",
    "LRSchedule",
    "LRScheduleKind",
    "ReweightSchedule",
    "ScheduleKind",
]

ScheduleKind = Literal["constant", "drw", "ramp"]
SCHEDULES: tuple[str, ...] = get_args(ScheduleKind)
LRScheduleKind = Literal["step", "cosine"]
LR_SCHEDULES: tuple[str, ...] = get_args(LRScheduleKind)


class ReweightSchedule:
    """Per-epoch class weights for ``counts`` and a target ``beta``.

    >>> s = ReweightSchedule("drw", [100, 10], beta=0.999, start_epoch=3)
    >>> s.weight_at(2) is None, s.weight_at(3)
    (True, tensor([0.1893, 1.8107]))
    >>> r = ReweightSchedule("ramp", [100, 10], beta=0.999, start_epoch=4)
    >>> r.beta_at(0), round(r.beta_at(2), 6), r.beta_at(4)
    (0.0, 0.968377, 0.999)
    """

    def __init__(
        self, kind: ScheduleKind, samples_per_class, beta: float, *, start_epoch: int = 0
    ) -> None:
        self.kind = check_choice("reweight schedule", kind, SCHEDULES)
        self.counts = as_counts(samples_per_class)
        self.beta = check_beta(beta)
        self.start_epoch = check_int("start_epoch", start_epoch)

    def beta_at(self, epoch: int) -> float | None:
        """The beta in force at ``epoch`` (0-based, an integer ``>= 0``); ``None`` means unweighted."""
        epoch = check_int("epoch", epoch)
        if self.kind == "constant" or epoch >= self.start_epoch:  # the ramp ends at beta itself
            return self.beta
        if self.kind == "drw":
            return None
        return 1.0 - (1.0 - self.beta) ** (epoch / self.start_epoch)

    def weight_at(self, epoch: int) -> torch.Tensor | None:
        """Class weights (``(C,)`` float32, summing to C) at ``epoch``, or ``None`` (unweighted)."""
        beta = self.beta_at(epoch)
        return None if beta is None else class_balanced_weights(self.counts, beta)


@dataclass(frozen=True)
class LRSchedule:
    """Linear warm-up from 0 over ``warmup_epochs``, then step decays or a cosine to 0.

    Warm-up (``W = warmup_epochs x steps_per_epoch`` steps): ``lr(s) = base_lr (s + 1) / W``.
    ``step``: ``base_lr x`` the factor of the last decay epoch reached (1 before the first).
    ``cosine`` (``T = epochs x steps_per_epoch``): ``lr(s) = base_lr (1 + cos(pi (s - W) /
    (T - W))) / 2``, ``base_lr`` at the end of the warm-up, 0 after the last step.

    >>> s = LRSchedule(base_lr=0.1, warmup_epochs=5, decay_epochs=(160, 180), decay_factors=(0.01, 0.0001), steps_per_epoch=10)
    >>> round(s(0), 6), round(s(49), 6), s(50), s(1599), s(1600), s(1800)
    (0.002, 0.1, 0.1, 0.1, 0.001, 1e-05)
    >>> c = LRSchedule(0.2, 0, (), (), steps_per_epoch=10, kind="cosine", epochs=90)
    >>> c(0), round(c(450), 6), c(900)
    (0.2, 0.1, 0.0)
    """

    base_lr: float
    warmup_epochs: int
    decay_epochs: tuple[int, ...]
    decay_factors: tuple[float, ...]
    steps_per_epoch: int
    kind: LRScheduleKind = "step"
    #: the run's length (read by ``cosine`` only)
    epochs: int = 0

    def __post_init__(self) -> None:
        check_choice("lr schedule", self.kind, LR_SCHEDULES)
        if self.kind == "cosine" and self.epochs <= self.warmup_epochs:
            raise ValueError(
                f"a cosine schedule needs epochs > warmup_epochs, got {self.epochs} and "
                f"{self.warmup_epochs}"
            )

    def __call__(self, step: int) -> float:
        warmup_steps = self.warmup_epochs * self.steps_per_epoch
        if step < warmup_steps:
            return self.base_lr * (step + 1) / warmup_steps
        if self.kind == "cosine":
            total = self.epochs * self.steps_per_epoch - warmup_steps
            progress = min(1.0, (step - warmup_steps) / total)
            return self.base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
        epoch = step // self.steps_per_epoch
        factor = 1.0
        for boundary, value in zip(self.decay_epochs, self.decay_factors, strict=True):
            if epoch >= boundary:
                factor = value
        return self.base_lr * factor
