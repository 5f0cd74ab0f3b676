"""Evaluation: a model on test tensors or an image-file loader, and a finished run on its test set.

:func:`evaluate` counts top-1 / top-k hits of a model on uint8 images held on
the device; :class:`LoaderEvaluator` does the same over a ``DataLoader`` of image
files (iNaturalist, ImageNet). :func:`evaluate_run` rebuilds a run's network
from what the run folder recorded (config, class names and order, channels,
training counts, absolute data paths, the checkpoint's SHA-256), so it works
from any directory and without the training files; every mismatch between the
data, the checkpoint and the run is one line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._console import info
from ..config import PRECISIONS, Precision, TrainConfig, run_config
from ..data.augment import normalize_images
from ..losses import LogitAdjustment
from .distributed import DistContext, all_reduce_sum, resolve_device
from .metrics import EvalCounts, summarize
from .network import build_network
from .run_folder import MANIFEST, RunFolder, check_class_names, read_run_json

__all__ = [
    "autocast",
    "warn_fp16_on_cpu",
    "evaluate",
    "TensorEvaluator",
    "LoaderEvaluator",
    "evaluate_run",
    "read_trained_run",
    "TrainedRun",
]


def autocast(device: torch.device, precision: Precision):
    """``torch.autocast`` for ``bf16`` / ``fp16``, nothing for ``fp32`` (anything else is one
    ValueError line)."""
    if precision not in PRECISIONS:
        raise ValueError(f"expected a precision in {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def warn_fp16_on_cpu(
    precision: Precision, device: torch.device, log: Callable[[str], Any], whose: str = ""
) -> None:
    """Give ``log`` one start-up line for fp16 autocast on the CPU (nothing otherwise):
    PyTorch's CPU kernels for float16 are many times slower than float32 (bf16's are fast).
    ``whose``: where the precision comes from, when not ``--precision``.

    >>> warn_fp16_on_cpu("fp16", torch.device("cpu"), print)
    warning: --precision fp16 on the CPU is very slow (float16 autocast runs many times slower there than fp32); use bf16 or fp32 on the CPU
    >>> warn_fp16_on_cpu("bf16", torch.device("cpu"), print)
    >>> warn_fp16_on_cpu("fp16", torch.device("meta"), print)
    """
    if precision == "fp16" and device.type == "cpu":
        log(
            f"warning: {whose or '--precision'} fp16 on the CPU is very slow (float16 autocast "
            "runs many times slower there than fp32); use bf16 or fp32 on the CPU"
        )


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
    unreadable images are skipped (``collate`` drops them).

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
        for images, labels, _ in self._batches():
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


# ---------------------------------------------------------------------------
# a finished run
# ---------------------------------------------------------------------------


@dataclass
class TrainedRun:
    """A finished run read back: its folder, config, training counts, data record (class
    names, channels, image shape, normalisation), the checkpoint loaded and its network
    (on the CPU, in eval mode, the checkpoint's weights)."""

    folder: Path
    cfg: TrainConfig
    counts: list[int]
    record: dict[str, Any]
    checkpoint: Path
    model: nn.Module


def read_trained_run(run: str | Path, *, use: str = "name that file to evaluate it") -> TrainedRun:
    """Read a run's newest valid checkpoint (``run`` a run folder) or a given one (``run`` a
    checkpoint file in its ``checkpoints/``): the checkpoint's SHA-256 is checked against
    ``run.json`` before it is unpickled (weights only), and refused with one line when it
    belongs to another model or other classes. Works from any directory, the training data
    gone."""
    run = Path(run).absolute()
    folder_path, checkpoint = (run.parent.parent, run) if run.is_file() else (run, None)
    if checkpoint is not None and not (
        run.parent.name == "checkpoints" and (folder_path / MANIFEST).is_file()
    ):
        raise ValueError(
            f"expected a run folder or a checkpoint in its checkpoints/ folder, got the file {run}"
        )
    if not run.exists():
        raise FileNotFoundError(f"no run folder or checkpoint at {run}")
    folder = RunFolder.read(folder_path)
    cfg = run_config(read_run_json(folder_path / "config.json"), str(folder_path / "config.json"))
    counts = read_run_json(folder_path / "subset.json", ("counts",))["counts"]
    record = folder.data
    checkpoint, state = folder.load_checkpoint(checkpoint, use=use)
    if state is None:
        raise FileNotFoundError(
            f"no checkpoint in {folder_path / 'checkpoints'}: nothing to evaluate"
        )
    check_checkpoint_fits(state, cfg, record["class_names"], str(checkpoint))
    model = build_network(cfg, counts, record["in_channels"])
    load_weights(model, state["model"], str(checkpoint))
    return TrainedRun(folder_path, cfg, counts, record, checkpoint, model.eval())


def evaluate_run(
    run: str | Path,
    *,
    test_data: str | None = None,
    device: str = "auto",
    accept_data_change: bool = False,
    adjust_tau: float = 0.0,
    log: Callable[[str], Any] = info,
) -> dict[str, Any]:
    """Evaluate a run's newest checkpoint (``run`` a run folder) or a given one (``run`` a
    checkpoint file of that run) on the run's test set, or on ``test_data``.

    The network is rebuilt from the run's ``config.json``; the class names and
    their order, the input channels and the training counts come from the run
    (``run.json``, ``subset.json``), the run's own test data from the absolute
    path it recorded. Refused with one line: a checkpoint the run did not write
    or whose bytes changed, a checkpoint of another model, a test set with other
    classes or channels, and the run's test data changed since training (unless
    ``accept_data_change``). ``adjust_tau``: post-hoc logit adjustment
    (:class:`~classbalanced.losses.LogitAdjustment` with the run's training counts; 0: none).
    ``log`` gets the one warning line of a run in fp16 evaluated on the CPU (very slow there).
    """
    from .run_data import load_test_set

    trained = read_trained_run(run)
    cfg, record, counts = trained.cfg, trained.record, trained.counts
    target = resolve_device(device, 0)
    warn_fp16_on_cpu(cfg.precision, target, log, "the run's precision")
    ctx = DistContext(device=target)
    test = load_test_set(cfg, record, test_data, ctx, accept_change=accept_data_change)
    check_class_names(record["class_names"], test.class_names, "the run", "the test set")
    if test.in_channels != record["in_channels"]:
        raise ValueError(
            f"the test set has {test.in_channels}-channel images, the run's model takes {record['in_channels']}"
        )
    model = trained.model.to(target)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if adjust_tau:
        model = LogitAdjustment(model, counts, adjust_tau)
    metrics = summarize(test.evaluate(model), counts)
    metrics["checkpoint"] = str(trained.checkpoint)
    metrics["adjust_tau"] = float(adjust_tau)
    return metrics


def check_checkpoint_fits(state: dict, cfg: TrainConfig, class_names: list, where: str) -> None:
    """Refuse a checkpoint written for another model, or for other classes or another class
    order (one line)."""
    saved = state.get("config") if isinstance(state.get("config"), dict) else {}
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
