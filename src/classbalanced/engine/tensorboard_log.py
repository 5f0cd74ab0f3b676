"""A run's TensorBoard event file: scalars, an evaluation's metrics, and quiet writer threads.

:class:`~classbalanced.engine.run_folder.RunFolder` owns one :class:`TensorBoardLog` and
lists the event files it creates in the run's manifest; a failed write surfaces at the
run's next TensorBoard call as one line.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from torch.utils.tensorboard import SummaryWriter

__all__ = ["TensorBoardLog"]

#: the test metrics logged as scalars at every evaluation
_LOGGED_METRICS = (
    "accuracy",
    "error_percent",
    "top5_accuracy",
    "balanced_accuracy",
    "macro_f1",
    "ece",
    "many_shot_accuracy",
    "medium_shot_accuracy",
    "few_shot_accuracy",
)


def _quiet_tensorboard_threads() -> None:
    """Keep a write error of TensorBoard's writer thread (a full disk) from printing a
    traceback: the thread keeps the error, and the run's next TensorBoard call raises it
    as one line (:func:`~classbalanced.engine.run_folder.writing`). Other threads' exceptions go to the hook
    installed before."""
    previous = threading.excepthook
    if getattr(previous, "quiet_tensorboard", False):
        return

    def hook(args) -> None:
        if not (
            type(args.thread).__module__.startswith("tensorboard.")
            and isinstance(args.exc_value, OSError)
        ):
            previous(args)

    hook.quiet_tensorboard = True  # type: ignore[attr-defined]  # a function attribute
    threading.excepthook = hook


class TensorBoardLog:
    """The run's TensorBoard event file (nothing happens before :meth:`open`)."""

    def __init__(self) -> None:
        self.writer: SummaryWriter | None = None

    def open(self, folder: Path, purge_step: int | None) -> list[str]:
        """Start an event file in ``folder``; return the names of the files it created."""
        _quiet_tensorboard_threads()
        before = set(folder.iterdir()) if folder.is_dir() else set()
        self.writer = SummaryWriter(str(folder), purge_step=purge_step)
        return [p.name for p in sorted(set(folder.iterdir()) - before)]

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def evaluation(self, metrics: dict, epoch: int) -> None:
        """The test metrics of an evaluation (per-class ones for up to 100 classes)."""
        if self.writer is None:
            return
        self.scalars(
            {f"test/{k}": metrics[k] for k in _LOGGED_METRICS if metrics.get(k) is not None}, epoch
        )
        per_class = metrics["per_class_accuracy"]
        if len(per_class) <= 100:
            for i, value in enumerate(per_class):
                if value is not None:
                    self.writer.add_scalar(f"test_per_class_accuracy/class_{i:03d}", value, epoch)
        values = [v for v in per_class if v is not None]
        if values:
            self.writer.add_histogram("test/per_class_accuracy", np.asarray(values), epoch)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
