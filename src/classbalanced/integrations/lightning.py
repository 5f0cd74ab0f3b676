"""Re-weighting schedules in PyTorch Lightning.

``ReweightCallback(schedule, loss="loss")`` is a ``lightning.pytorch.Callback`` that, at
the start of fit and of every training epoch, sets the class weights of
``schedule.weight_at(trainer.current_epoch)`` on the LightningModule's loss (the
attribute named ``loss``, or a loss object passed directly): any loss with a
``set_weight`` method, such as :class:`~classbalanced.ClassBalancedLoss`. With deferred
re-weighting (``ReweightSchedule("drw", counts, beta, start_epoch=E)``) the loss is
unweighted until epoch ``E``; with ``"ramp"`` beta grows over the first ``E`` epochs.

Counts are those of the whole training set (:func:`class_counts` of the dataset every
process builds), not of one process's shard: under DDP every process then applies the
same weights. The class is built on first use, so this module imports without
Lightning (``pip install 'classbalanced[lightning]'``).

>>> class_counts([0, 0, 1, 2, 2, 2])
tensor([2, 1, 3])
"""

from __future__ import annotations

import functools
from typing import Any

from ..schedules import ReweightSchedule
from ._common import class_counts, require

__all__ = ["ReweightCallback", "class_counts"]  # noqa: F822 (built by __getattr__)


def _loss_of(pl_module, loss):
    """The loss to re-weight: ``pl_module.<loss>`` for a name, else ``loss`` itself."""
    found = getattr(pl_module, loss, None) if isinstance(loss, str) else loss
    if not callable(getattr(found, "set_weight", None)):
        where = f"{type(pl_module).__name__}.{loss}" if isinstance(loss, str) else "loss"
        raise TypeError(
            f"ReweightCallback expects {where} to be a loss with set_weight "
            f"(e.g. classbalanced.ClassBalancedLoss), got {type(found).__name__}"
        )
    return found


@functools.cache
def _reweight_callback_class() -> type:
    pl: Any = require("lightning.pytorch", "lightning", "ReweightCallback")

    class ReweightCallback(pl.Callback):
        """Applies ``schedule`` to the module's loss from ``trainer.current_epoch``."""

        def __init__(self, schedule: ReweightSchedule, loss="loss") -> None:
            if not isinstance(schedule, ReweightSchedule):
                raise TypeError(
                    f"ReweightCallback expects a classbalanced.ReweightSchedule, got {type(schedule).__name__}"
                )
            if not isinstance(loss, str) and not callable(getattr(loss, "set_weight", None)):
                raise TypeError(
                    "ReweightCallback expects loss to be an attribute name or a loss with "
                    f"set_weight, got {type(loss).__name__}"
                )
            self.schedule = schedule
            self.loss = loss

        def _apply(self, trainer, pl_module) -> None:
            _loss_of(pl_module, self.loss).set_weight(
                self.schedule.weight_at(trainer.current_epoch)
            )

        def on_fit_start(self, trainer, pl_module) -> None:
            self._apply(trainer, pl_module)  # also for the sanity-check validation

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self._apply(trainer, pl_module)

    ReweightCallback.__module__, ReweightCallback.__qualname__ = __name__, "ReweightCallback"
    return ReweightCallback


def __getattr__(name: str):
    if name == "ReweightCallback":  # lazy: a lightning.pytorch.Callback subclass
        return _reweight_callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
