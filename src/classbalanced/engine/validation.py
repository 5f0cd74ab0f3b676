"""The validation set of a run: its evaluators and its ``val_*`` metrics.

A run with ``--val-fraction``, ``--val-data`` or ``--val-list`` evaluates the
validation set at every evaluation epoch, beside (or, with ``--no-evaluate-test``,
instead of) the test set. Its metrics are written with a ``val_`` prefix:

* ``val_accuracy``: the fraction of validation images right at top-1;
* ``val_balanced_accuracy``: the mean over classes of the per-class recall
  (:func:`~.metrics.summarize`'s mean class accuracy; classes without a
  validation image left out);
* ``val_many_shot_accuracy`` / ``val_medium_shot_accuracy`` / ``val_few_shot_accuracy``:
  the same mean over the classes of each group of the *training* counts;
* ``val_loss``: the mean unweighted softmax cross-entropy of the logits,
  ``-(1/N) sum_i log softmax(z_i)[y_i]`` (the same measure whatever the run's loss,
  so trials with other losses or betas compare on it);
* ``num_val_images``: the images evaluated (every denominator above), and
  ``num_unreadable_val_images`` those skipped because they could not be decoded.

Counts and the loss sum add across batches and ranks (each rank evaluates its
shard: positions ``rank, rank + world, ...``), so DDP gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import TrainConfig
from ..data.augment import normalize_images
from .distributed import DistContext, all_reduce_sum
from .metrics import EvalCounts, summarize
from .precision import autocast

__all__ = [
    "VAL_METRICS",
    "ValidationResult",
    "TensorValidator",
    "LoaderValidator",
    "validation_metrics",
]

#: summarize()'s key -> the key of the validation metric; plus ``val_loss``
_RENAMED = {
    "accuracy": "val_accuracy",
    "balanced_accuracy": "val_balanced_accuracy",
    "many_shot_accuracy": "val_many_shot_accuracy",
    "medium_shot_accuracy": "val_medium_shot_accuracy",
    "few_shot_accuracy": "val_few_shot_accuracy",
}
#: the validation metrics every evaluation epoch writes (``tune --metric`` takes one of them)
VAL_METRICS = (*_RENAMED.values(), "val_loss")


class ValidationResult:
    """Per-class counts and the summed cross-entropy of one validation pass."""

    def __init__(self, counts: EvalCounts, loss_sum: float) -> None:
        self.counts, self.loss_sum = counts, loss_sum


def validation_metrics(result: ValidationResult, train_counts) -> dict:
    """The ``val_*`` metrics (module docstring) of a validation pass.

    >>> c = EvalCounts.zeros(2, k=1)
    >>> c.update(torch.tensor([[2.0, 1.0], [0.0, 1.0], [3.0, 0.0]]), torch.tensor([0, 1, 1]))
    >>> m = validation_metrics(ValidationResult(c, 3.0), [150, 10])
    >>> m["val_accuracy"], m["val_balanced_accuracy"], m["val_loss"]
    (0.6666666666666666, 0.75, 1.0)
    """
    summary = summarize(result.counts, train_counts)
    metrics = {new: summary[old] for old, new in _RENAMED.items()}
    n = summary["num_test_images"]
    metrics["val_loss"] = result.loss_sum / n if n else None
    metrics["num_val_images"] = n
    metrics["num_unreadable_val_images"] = summary["num_unreadable_test_images"]
    return metrics


class _Accumulator:
    def __init__(self, num_classes: int, device) -> None:
        self.counts = EvalCounts.zeros(num_classes, device=device)
        self.loss = torch.zeros((), dtype=torch.float64, device=device)

    def update(self, logits: Tensor, labels: Tensor) -> None:
        logits = logits.float()
        self.counts.update(logits, labels)
        self.loss += F.cross_entropy(logits, labels, reduction="sum").double()

    def result(self, ctx: DistContext) -> ValidationResult:
        stacked = torch.cat([self.counts.stacked(), self.loss.reshape(1)])
        summed = all_reduce_sum(stacked, ctx)
        counts = EvalCounts.from_stacked(summed[:-1], self.counts.k)
        return ValidationResult(counts, float(summed[-1]))


@torch.no_grad()
def _run(model: nn.Module, batches: Iterable, cfg: TrainConfig, ctx, num_classes: int):
    was_training = model.training
    model.eval()
    acc = _Accumulator(num_classes, ctx.device)
    for x, y, skipped in batches:
        acc.counts.unreadable += skipped
        if x.shape[0] == 0:
            continue
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(ctx.device, cfg.precision):
            logits = model(x)
        acc.update(logits, y.to(ctx.device))
    model.train(was_training)
    return acc.result(ctx)


class TensorValidator:
    """``validator(model) -> ValidationResult`` on uint8 NCHW images held on the device."""

    def __init__(self, images: Tensor, labels: Tensor, cfg: TrainConfig, ctx, num_classes: int):
        self.images, self.labels, self.cfg, self.ctx = images, labels, cfg, ctx
        self.num_classes = num_classes

    def _batches(self):
        n, ctx = self.images.shape[0], self.ctx
        positions = torch.arange(ctx.rank, n, ctx.world_size, device=self.images.device)
        for start in range(0, positions.numel(), self.cfg.eval_batch_size):
            idx = positions[start : start + self.cfg.eval_batch_size]
            yield normalize_images(self.images[idx]), self.labels[idx], 0

    def __call__(self, model: nn.Module) -> ValidationResult:
        return _run(model, self._batches(), self.cfg, self.ctx, self.num_classes)


class LoaderValidator:
    """``validator(model) -> ValidationResult`` over this rank's shard of image files
    (``loader`` yields ``(images, labels, skipped)``, ``skipped`` the unreadable images the
    batch left out, counted in ``num_unreadable_val_images``; ``normalize`` applied on the
    device)."""

    def __init__(self, loader, cfg: TrainConfig, ctx, num_classes: int, normalize: Callable | None):
        self.loader, self.cfg, self.ctx, self.num_classes = loader, cfg, ctx, num_classes
        self.normalize = normalize

    def _batches(self):
        for images, labels, skipped in self.loader:
            x = images.to(self.ctx.device, non_blocking=True)
            yield (x if self.normalize is None else self.normalize(x)), labels, int(skipped)

    def __call__(self, model: nn.Module) -> ValidationResult:
        return _run(model, self._batches(), self.cfg, self.ctx, self.num_classes)
