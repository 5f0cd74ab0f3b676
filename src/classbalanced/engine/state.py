"""The state of a training run between two steps, and its round trip through a checkpoint.

Model and optimiser live in their own objects; :class:`TrainState` is the rest
(step, evaluation history, time and image counters, and the loss sum of an
unfinished epoch), and knows how to become a checkpoint dict and come back.
:func:`check_checkpoint_fits` and :func:`load_weights` are the checks a loaded
checkpoint passes before its weights are used (resume, evaluation, ``decouple``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..config import TrainConfig
from .run_folder import check_class_names

__all__ = ["TrainState", "check_checkpoint_fits", "load_weights"]


@dataclass
class TrainState:
    """Counters of a run; ``epoch_loss`` is ``(sum, count)`` of the epoch a mid-epoch
    checkpoint interrupted (added back when that epoch is resumed)."""

    step: int = 0
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    train_images: int = 0
    skipped_nonfinite: int = 0
    skipped_unreadable: int = 0  # images skipped as unreadable, by every process
    epoch_loss: tuple[float, int] = (0.0, 0)

    def to_checkpoint(
        self,
        model: nn.Module,
        optimizer,
        cfg: TrainConfig,
        class_names: list[str],
        epoch_loss: tuple[float, int] = (0.0, 0),
        scaler=None,
    ) -> dict[str, Any]:
        """The checkpoint dict (``epoch_loss``: the partial epoch's loss at a mid-epoch stop;
        ``scaler``: fp16's ``GradScaler``, whose scale a resume continues from)."""
        extra = {} if scaler is None else {"scaler": scaler.state_dict()}
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": list(self.history),
            "train_seconds": self.train_seconds,
            "train_images": self.train_images,
            "skipped_nonfinite": self.skipped_nonfinite,
            "skipped_unreadable_images": self.skipped_unreadable,
            "epoch_loss_sum": float(epoch_loss[0]),
            "epoch_loss_count": int(epoch_loss[1]),
            "config": cfg.to_dict(),
            "class_names": list(class_names),
        } | extra

    @classmethod
    def from_checkpoint(
        cls,
        state: dict[str, Any],
        model: nn.Module,
        optimizer,
        cfg: TrainConfig,
        class_names: list[str],
        where: str,
        scaler=None,
    ) -> TrainState:
        """Load weights, optimiser (and ``scaler``) state from ``state`` (a loaded checkpoint)
        and return the counters; a checkpoint of another model or class count is one
        ValueError line. The optimiser keeps the settings it was built with (those of ``cfg``)
        and takes its state (momentum buffers) from the checkpoint."""
        check_checkpoint_fits(state, cfg, class_names, where)
        load_weights(model, state["model"], where)
        if scaler is not None and isinstance(state.get("scaler"), dict):
            scaler.load_state_dict(state["scaler"])
        # the config's settings (weight decay, momentum, ...: a --force'd resume may change
        # them), the checkpoint's momentum buffers: load_state_dict takes both from the file
        settings = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ValueError(
                f"checkpoint {where} does not fit the optimiser the config builds: "
                f"{' '.join(str(exc).split())}"
            ) from None
        for group, own in zip(optimizer.param_groups, settings, strict=True):
            group.update(own)
        try:
            return cls(
                step=int(state["global_step"]),
                history=list(state.get("history", [])),
                train_seconds=float(state.get("train_seconds", 0.0)),
                train_images=int(state.get("train_images", 0)),
                skipped_nonfinite=int(state.get("skipped_nonfinite", 0)),
                skipped_unreadable=int(state.get("skipped_unreadable_images", 0)),
                epoch_loss=(float(state["epoch_loss_sum"]), int(state["epoch_loss_count"])),
            )
        except KeyError as exc:
            raise ValueError(f"checkpoint {where} lacks the key {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"checkpoint {where} holds a malformed counter: {exc}") from None


def check_checkpoint_fits(state: dict, cfg: TrainConfig, class_names: list, where: str) -> None:
    """Refuse a checkpoint written for another model, or for other classes or another class
    order (one line)."""
    saved = state.get("config")
    if not isinstance(saved, dict):
        saved = {}
    if saved.get("model", cfg.model) != cfg.model:
        raise ValueError(
            f"checkpoint holds {saved['model']}, config asks for {cfg.model} ({where})"
        )
    names = state.get("class_names")
    if isinstance(names, list):
        check_class_names(names, class_names, f"the checkpoint {where}", "the data")


def load_weights(model: nn.Module, weights: dict, where: str) -> None:
    """``model.load_state_dict`` with a one-line error naming the first mismatch."""
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError) as exc:
        detail = " ".join(str(exc).split())
        raise ValueError(
            f"checkpoint {where} does not fit the model the config builds: {detail[:300]}"
        ) from None
