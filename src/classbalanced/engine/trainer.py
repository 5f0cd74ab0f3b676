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
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._console import count
from ..config import TrainConfig, check_resolved
from ..losses import Criterion, build_loss, loss_uses_gamma
from ..optim import build_sgd
from ..schedules import LRSchedule, ReweightSchedule
from .checkpoint import BackgroundWriter
from .distributed import DistContext, cleanup_distributed, setup_distributed
from .evaluate import evaluate
from .loop import (
    Network,
    NonFiniteLoss,
    Optimisation,
    Run,
    Schedules,
    StopFlag,
    TrainingInterrupted,
    end_epoch,
    summary_fields,
    train_epoch,
)
from .network import build_training_model
from .precision import warn_fp16_on_cpu
from .run_data import PreparedData, RunData, load_run_data, prepare_data
from .run_folder import RunFolder, lock_run
from .state import TrainState

__all__ = [
    "TrainingInterrupted",
    "NonFiniteLoss",
    "PreparedData",
    "prepare_data",
    "evaluate",
    "train",
]


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
    cfg, spe = run.cfg, run.schedules.steps_per_epoch
    metrics: dict[str, Any] = state.history[-1] if state.history else {}
    run.network.ddp.train()
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
    loss_fn, reweight = _loss(cfg, ctx, data)
    model, optim = _model_and_optimizer(cfg, ctx, data, loss_fn)
    state = _resume_state(cfg, folder, model, optim, data, log, fallback_checkpoint, ctx)
    folder.start(cfg, data.subset(), data.record)  # everything loaded: now the folder is written
    _barrier(ctx)
    steps_per_epoch = max(1, data.stream.steps_per_epoch // cfg.accumulate_steps)
    lr = LRSchedule(
        cfg.lr,
        cfg.warmup_epochs,
        tuple(cfg.decay_epochs),
        tuple(cfg.decay_factors),
        steps_per_epoch,
        kind=cfg.lr_schedule,
        epochs=cfg.epochs,
    )
    network = _network(cfg, ctx, model)
    # events logged after the checkpoint we resume from (a killed run) are purged
    folder.open_tensorboard(state.step // steps_per_epoch + 1 if folder.resuming else None)
    if ctx.is_main:
        log(_start_line(cfg, data, ctx))
        warn_fp16_on_cpu(cfg.precision, ctx.device, log)
    run = Run(
        cfg=cfg,
        ctx=ctx,
        data=data,
        folder=folder,
        network=network,
        loss_fn=loss_fn,
        optim=optim,
        schedules=Schedules(lr, steps_per_epoch, reweight),
        log=log,
        writer=BackgroundWriter() if cfg.async_checkpoints else None,
        skipped_before=state.skipped_unreadable,
    )
    return run, state


def _loss(cfg: TrainConfig, ctx: DistContext, data: RunData):
    """The loss on the device and its re-weighting schedule (``None``: constant weights)."""
    # ignored: loss_options never names "reduction" (validate refuses it)
    loss_fn = build_loss(
        cfg.loss,
        data.counts,
        beta=cfg.beta,
        gamma=cfg.gamma,
        **cfg.loss_options,  # type: ignore[arg-type]
    ).to(ctx.device)
    reweight = None
    if cfg.reweight_schedule != "constant":  # every Criterion has set_weight
        reweight = ReweightSchedule(
            cfg.reweight_schedule,
            data.counts,
            cfg.beta,
            start_epoch=check_resolved("reweight_epoch", cfg.reweight_epoch),
        )
    return loss_fn, reweight


def _model_and_optimizer(
    cfg: TrainConfig, ctx: DistContext, data: RunData, loss_fn: Criterion
) -> tuple[nn.Module, Optimisation]:
    model, groups = build_training_model(cfg, data.counts, data.in_channels, loss_fn, ctx)
    optimizer = build_sgd(
        groups,
        lr=check_resolved("lr", cfg.lr),
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        impl=cfg.sgd_impl,
    )
    scaler = torch.amp.GradScaler(ctx.device.type) if cfg.precision == "fp16" else None
    return model, Optimisation(optimizer, groups, scaler)


def _network(cfg: TrainConfig, ctx: DistContext, model: nn.Module) -> Network:
    """``model``, DDP-wrapped under torchrun, and its forward (compiled with ``--compile``)."""
    ddp = model
    if ctx.distributed:
        ddp = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    forward: Callable[[Tensor], Tensor] = ddp
    if cfg.compile:  # mode None: torch.compile's default
        forward = torch.compile(
            ddp, mode=None if cfg.compile_mode == "default" else cfg.compile_mode
        )
    return Network(model, ddp, forward)


def _resume_state(
    cfg, folder: RunFolder, model, optim: Optimisation, data: RunData, log, fallback, ctx
):
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
        state, model, optim.optimizer, cfg, data.class_names, where, optim.scaler
    )
    if ctx.is_main:
        log(f"resuming {folder.path} from {Path(path).name} (step {train_state.step})")
    return train_state


def _start_line(cfg: TrainConfig, data: RunData, ctx: DistContext) -> str:
    gamma = f", gamma {cfg.gamma}" if loss_uses_gamma(cfg.loss) else ""
    return (
        f"training {cfg.model} on {cfg.dataset} (IF {cfg.imbalance_factor:g}, {int(data.counts.sum())} images, "
        f"{len(data.class_names)} classes) with {cfg.loss} loss (beta {cfg.beta}{gamma}) for "
        f"{count(cfg.epochs, 'epoch')} on {ctx.device}"
        + (f" x{ctx.world_size}" if ctx.distributed else "")
    )
