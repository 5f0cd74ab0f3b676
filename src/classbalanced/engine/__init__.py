"""Training engine: loop and schedule, evaluation metrics, checkpoints, distributed setup."""

from ..schedules import LRSchedule
from .checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from .evaluate import evaluate
from .metrics import EvalCounts, shot_groups, summarize
from .trainer import NonFiniteLoss, TrainingInterrupted, prepare_data, train

__all__ = [
    "EvalCounts",
    "LRSchedule",
    "NonFiniteLoss",
    "TrainingInterrupted",
    "evaluate",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "prepare_data",
    "save_checkpoint",
    "shot_groups",
    "summarize",
    "train",
]
