"""The training engine: data on the device, the paper's schedule, evaluation, checkpoints.

The loop receives a loss object and never branches on loss names: the loss is a
:class:`~classbalanced.losses.Criterion` and says what it needs through its members
(``uses_prior_bias``, ``normalized_classifier``, ``set_weight``).

Data order and augmentation are a pure function of ``(seed, epoch)``: each
epoch draws its permutation and all of its crop / flip parameters from one
generator seeded from both, at the start of the epoch. A run resumed from a
checkpoint at any step therefore continues exactly as the uninterrupted run.

:func:`train` sets a run up (:func:`_set_up`: folder checked, data, loss, model,
optimiser and checkpoint loaded, and only then the folder written) and runs the
epochs (:mod:`.loop`); every file goes through the :class:`~.run_folder.RunFolder`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import TrainConfig
from ..losses import build_loss
from ..optim import build_sgd
from ..schedules import ReweightSchedule
from .checkpoint import BackgroundWriter
from .distributed import DistContext, cleanup_distributed, setup_distributed
from .evaluate import evaluate, warn_fp16_on_cpu
from .loop import (
    NonFiniteLoss,
    Run,
    StopFlag,
    TrainingInterrupted,
    end_epoch,
    summary_fields,
    train_epoch,
)
from .network import build_training_model
from .run_data import PreparedData, RunData, load_run_data, prepare_data
from .run_folder import RunFolder, lock_run
from .state import TrainState

__all__ = [
    "TrainingInterrupted",
    "NonFiniteLoss",
    "LRSchedule",
    "PreparedData",
    "prepare_data",
    "evaluate",
    "train",
]


# ---------------------------------------------------------------------------
# schedule
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LRSchedule:
    """Linear warm-up from 0 over ``warmup_epochs``, then step decays at ``decay_epochs``.

    >>> s = LRSchedule(base_lr=0.1, warmup_epochs=5, decay_epochs=(160, 180), decay_factors=(0.01, 0.0001), steps_per_epoch=10)
    >>> round(s(0), 6), round(s(49), 6), s(50), s(1599), s(1600), s(1800)
    (0.002, 0.1, 0.1, 0.1, 0.001, 1e-05)
    """

    base_lr: float
    warmup_epochs: int
    decay_epochs: tuple[int, ...]
    decay_factors: tuple[float, ...]
    steps_per_epoch: int

    def __call__(self, step: int) -> float:
        warmup_steps = self.warmup_epochs * self.steps_per_epoch
        if step < warmup_steps:
            return self.base_lr * (step + 1) / warmup_steps
        epoch = step // self.steps_per_epoch
        factor = 1.0
        for boundary, value in zip(self.decay_epochs, self.decay_factors, strict=True):
            if epoch >= boundary:
                factor = value
        return self.base_lr * factor


def train(
    cfg: TrainConfig,
    *,
    log: Callable[[str], None] = print,
    accept_data_change: bool = False,
    fallback_checkpoint: bool = False,
) -> dict[str, Any]:
    """Train and evaluate as ``cfg`` says; write the run folder; return the final metrics.

    Raises ``TrainingInterrupted`` after SIGINT / SIGTERM (a checkpoint is saved
    first) and ``NonFiniteLoss`` if the loss stops being finite. A resume on data
    whose fingerprint changed is refused unless ``accept_data_change``; one whose
    newest checkpoint is corrupt is refused (naming the newest valid older one)
    unless ``fallback_checkpoint``.
    """
    cfg = cfg.resolved()
    ctx = setup_distributed(cfg.device, cfg.dist_backend)
    benchmark = torch.backends.cudnn.benchmark
    run = state = None
    try:
        if cfg.cudnn_benchmark and ctx.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        command = "train --resume" if cfg.resume else "train"
        with lock_run(cfg.out, command, writer=ctx.is_main, log=log):  # held to the end
            run, state = _set_up(cfg, ctx, log, accept_data_change, fallback_checkpoint)
            return _train(run, state)
    finally:
        torch.backends.cudnn.benchmark = benchmark
        del run, state  # the DDP wrapper in ``run`` holds the process group
        cleanup_distributed(ctx)


def _train(run: Run, state: TrainState) -> dict[str, Any]:
    """The epochs: train, then log / evaluate / checkpoint; the final plots."""
    cfg, spe = run.cfg, run.steps_per_epoch
    metrics: dict[str, Any] = state.history[-1] if state.history else {}
    run.ddp_model.train()
    with StopFlag() as run.stop:
        try:
            for epoch in range(state.step // spe, cfg.epochs):
                result = train_epoch(run, state, epoch)
                metrics = end_epoch(run, state, epoch, result) or metrics
            # the last checkpoint is on disk, or its error is raised here; a SIGTERM meanwhile
            # finds the flag's handler, not the default one that kills the write midway
            run.settle()
        except BaseException:
            _settle_quietly(run)
            raise
    run.folder.close()
    run.folder.plots(run.data.counts, run.data.class_names, metrics, state.history)
    if run.ctx.distributed:  # leave together: no rank tears the process group down under another
        torch.distributed.barrier()
    return {**summary_fields(cfg, run.data.counts), **metrics}


def _settle_quietly(run: Run) -> None:
    """The background checkpoint in flight completes; a failure of it is logged (the
    exception already on its way is the one raised)."""
    try:
        run.settle()
    except Exception as exc:
        run.log(f"the checkpoint written in the background failed too: {exc}")


def _barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        torch.distributed.barrier()


@dataclass
class _Model:
    model: nn.Module
    groups: list[dict]
    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module
    reweight: Any
    scaler: torch.amp.GradScaler | None  # fp16 only (bf16 has fp32's range)


def _set_up(cfg, ctx, log, accept_data_change: bool, fallback_checkpoint: bool):
    """Everything a run needs, loaded and checked before the folder gets its first byte."""
    if cfg.batch_size % (ctx.world_size * cfg.accumulate_steps):
        raise ValueError(
            f"batch_size is the global batch and must divide over {ctx.world_size} process(es) x "
            f"{cfg.accumulate_steps} accumulation step(s), got {cfg.batch_size}"
        )
    folder = RunFolder.open(cfg, writer=ctx.is_main)
    _barrier(ctx)
    data = load_run_data(cfg, ctx)
    if data.stream.steps_per_epoch < cfg.accumulate_steps:  # not one optimiser step per epoch
        raise ValueError(
            f"--accumulate-steps {cfg.accumulate_steps} needs that many batches per epoch, got "
            f"{data.stream.steps_per_epoch} (a batch of {cfg.batch_size} over "
            f"{int(data.counts.sum())} training images): lower --accumulate-steps or --batch-size"
        )
    if folder.resuming and folder.data:
        folder.check_data(data.record, accept_change=accept_data_change)
    parts = _model_and_optimizer(cfg, ctx, data)
    state = _resume_state(cfg, folder, parts, data, log, fallback_checkpoint, ctx)
    folder.start(cfg, data.subset(), data.record)  # everything loaded: now the folder is written
    _barrier(ctx)
    steps_per_epoch = max(1, data.stream.steps_per_epoch // cfg.accumulate_steps)
    schedule = LRSchedule(
        cfg.lr,
        cfg.warmup_epochs,
        tuple(cfg.decay_epochs),
        tuple(cfg.decay_factors),
        steps_per_epoch,
    )
    ddp_model = parts.model
    if ctx.distributed:
        ddp_model = nn.parallel.DistributedDataParallel(
            parts.model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    forward = ddp_model
    if cfg.compile:
        mode = {} if cfg.compile_mode == "default" else {"mode": cfg.compile_mode}
        forward = torch.compile(ddp_model, **mode)
    # events logged after the checkpoint we resume from (a killed run) are purged
    folder.open_tensorboard(state.step // steps_per_epoch + 1 if folder.resuming else None)
    if ctx.is_main:
        log(_start_line(cfg, data, ctx))
        warn_fp16_on_cpu(cfg.precision, ctx.device, log)
    run = Run(
        cfg, ctx, data, folder, parts.model, ddp_model, forward, parts.loss_fn,
        parts.optimizer, parts.groups, schedule, parts.reweight, steps_per_epoch, log,
        scaler=parts.scaler, writer=BackgroundWriter() if cfg.async_checkpoints else None,
        skipped_before=state.skipped_unreadable,
    )  # fmt: skip
    return run, state


def _model_and_optimizer(cfg: TrainConfig, ctx: DistContext, data: RunData) -> _Model:
    loss_fn = build_loss(
        cfg.loss, data.counts, beta=cfg.beta, gamma=cfg.gamma, **cfg.loss_options
    ).to(ctx.device)
    reweight = None
    if cfg.reweight_schedule != "constant":  # every Criterion has set_weight
        reweight = ReweightSchedule(
            cfg.reweight_schedule, data.counts, cfg.beta, start_epoch=cfg.reweight_epoch
        )
    model, groups = build_training_model(cfg, data.counts, data.in_channels, loss_fn, ctx)
    optimizer = build_sgd(
        groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, impl=cfg.sgd_impl
    )
    scaler = torch.amp.GradScaler(ctx.device.type) if cfg.precision == "fp16" else None
    return _Model(model, groups, optimizer, loss_fn, reweight, scaler)


def _resume_state(cfg, folder: RunFolder, parts: _Model, data: RunData, log, fallback, ctx):
    """The counters to start from: fresh, or from the run's newest valid checkpoint."""
    if not folder.resuming:
        return TrainState()
    path, state = folder.load_checkpoint(fallback=fallback)
    if state is None:
        if ctx.is_main:
            log(f"no checkpoint in {folder.path}: starting from the beginning")
        return TrainState()
    where = str(path)
    train_state = TrainState.from_checkpoint(
        state, parts.model, parts.optimizer, cfg, data.class_names, where, parts.scaler
    )
    if ctx.is_main:
        log(f"resuming {folder.path} from {Path(path).name} (step {train_state.step})")
    return train_state


def _start_line(cfg: TrainConfig, data: RunData, ctx: DistContext) -> str:
    from .._console import count
    from ..losses import loss_uses_gamma

    gamma = f", gamma {cfg.gamma}" if loss_uses_gamma(cfg.loss) else ""
    return (
        f"training {cfg.model} on {cfg.dataset} (IF {cfg.imbalance_factor:g}, {int(data.counts.sum())} images, "
        f"{len(data.class_names)} classes) with {cfg.loss} loss (beta {cfg.beta}{gamma}) for "
        f"{count(cfg.epochs, 'epoch')} on {ctx.device}"
        + (f" x{ctx.world_size}" if ctx.distributed else "")
    )
