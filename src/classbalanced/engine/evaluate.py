"""Evaluation: a model on test tensors or on an image-file loader.

:func:`evaluate` counts top-1 / top-k hits of a model on uint8 images held on
the device; :class:`LoaderEvaluator` does the same over a ``DataLoader`` of image
files (iNaturalist, ImageNet). A finished run's evaluation on its test set is
:func:`~.evaluate_run.evaluate_run`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import Precision, TrainConfig
from ..data.augment import normalize_images
from .distributed import DistContext, all_reduce_sum
from .metrics import EvalCounts
from .precision import autocast

__all__ = ["evaluate", "TensorEvaluator", "LoaderEvaluator"]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    batch_size: int = 1000,
    precision: Precision = "fp32",
    channels_last: bool = False,
    ctx: DistContext | None = None,
    num_classes: int | None = None,
) -> EvalCounts:
    """Top-1 / top-5 counts of ``model`` on uint8 ``images (N, C, H, W)``, summed over ranks.

    Each rank evaluates positions ``rank, rank + world, ...``: no image is
    counted twice and none is padded in. ``num_classes`` (default: the width of
    the model's logits) is the length of the counts, so classes without a test
    image are counted too (as zeros).
    """
    ctx = ctx or DistContext(device=images.device)
    was_training = model.training
    model.eval()
    counts = None if num_classes is None else EvalCounts.zeros(num_classes, device=images.device)
    positions = torch.arange(ctx.rank, images.shape[0], ctx.world_size, device=images.device)
    for start in range(0, positions.numel(), batch_size):
        idx = positions[start : start + batch_size]
        x = normalize_images(images[idx])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(images.device, precision):
            logits = model(x)
        if counts is None:
            counts = EvalCounts.zeros(logits.shape[1], device=images.device)
        counts.update(logits.float(), labels[idx])
    if counts is None:
        raise ValueError(
            f"expected num_classes to evaluate on no image (rank {ctx.rank} of {ctx.world_size}, "
            f"{images.shape[0]} test images)"
        )
    stacked = all_reduce_sum(counts.stacked(), ctx)
    model.train(was_training)
    return EvalCounts.from_stacked(stacked, counts.k)


class TensorEvaluator:
    """``evaluator(model) -> EvalCounts`` on a test set held on the device (uint8, NCHW)."""

    def __init__(self, images: Tensor, labels: Tensor, cfg: TrainConfig, ctx, num_classes: int):
        self.images, self.labels, self.cfg, self.ctx = images, labels, cfg, ctx
        self.num_classes = num_classes

    def __call__(self, model: nn.Module) -> EvalCounts:
        return evaluate(
            model,
            self.images,
            self.labels,
            batch_size=self.cfg.eval_batch_size,
            precision=self.cfg.precision,
            channels_last=self.cfg.channels_last,
            ctx=self.ctx,
            num_classes=self.num_classes,
        )


class LoaderEvaluator:
    """``evaluator(model) -> EvalCounts`` over this rank's shard of an image-file dataset;
    unreadable images are skipped (``collate`` drops them and says how many) and counted in
    ``EvalCounts.unreadable``, summed over ranks like the other counts.

    The ``DataLoader`` is built once; with ``persistent`` (and workers) its workers live
    between evaluations. It draws nothing from the global RNG. ``normalize``:
    applied to each batch on the device (uint8 batches); default: batches come normalised.
    """

    def __init__(
        self,
        shard,
        collate,
        cfg: TrainConfig,
        ctx: DistContext,
        num_classes: int,
        *,
        normalize=None,
        persistent: bool = False,
    ):
        self.shard, self.collate, self.cfg, self.ctx = shard, collate, cfg, ctx
        self.num_classes, self.normalize = num_classes, normalize
        self.persistent = persistent and cfg.num_workers > 0
        self._loader = None

    def _batches(self):
        if self._loader is None:
            extra = {"persistent_workers": True} if self.persistent else {}
            self._loader = torch.utils.data.DataLoader(
                self.shard,
                batch_size=max(1, self.cfg.eval_batch_size),
                num_workers=self.cfg.num_workers,
                collate_fn=self.collate,
                pin_memory=self.ctx.device.type == "cuda",
                generator=torch.Generator().manual_seed(0),  # not the global RNG
                **extra,
            )
        return self._loader

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> EvalCounts:
        device, cfg = self.ctx.device, self.cfg
        was_training = model.training
        model.eval()
        counts = EvalCounts.zeros(self.num_classes, device=device)
        for images, labels, skipped in self._batches():
            counts.unreadable += int(skipped)
            if images.shape[0] == 0:
                continue
            x = images.to(device, non_blocking=True)
            if self.normalize is not None:
                x = self.normalize(x)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, cfg.precision):
                logits = model(x)
            counts.update(logits.float(), labels.to(device))
        model.train(was_training)
        return EvalCounts.from_stacked(all_reduce_sum(counts.stacked(), self.ctx), counts.k)
