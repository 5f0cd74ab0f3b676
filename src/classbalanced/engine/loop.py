"""One epoch of training (:func:`train_epoch`) and what follows it (:func:`end_epoch`).

:class:`Run` holds what the epochs share, built once by the trainer from named
parts: the :class:`Network` (model and its DDP / compiled forward), the loss, the
:class:`Optimisation` (optimiser, parameter groups, fp16's scaler), the
:class:`Schedules` (learning rate, class weights), the data (batch stream, test
evaluator) and the :class:`~.run_folder.RunFolder` that owns every file. The
:class:`~.state.TrainState` is what changes from step to step.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..config import CUDAGRAPH_MODES, TrainConfig
from ..losses.criterion import Criterion
from ..schedules import ReweightSchedule
from .checkpoint import BackgroundWriter, cpu_copy
from .distributed import DistContext, all_reduce_sum
from .metrics import scalar_metrics, summarize
from .precision import autocast
from .run_data import RunData
from .run_folder import Manifest, RunFolder
from .state import TrainState
from .validation import VAL_METRICS, validation_metrics

__all__ = [
    "TrainingInterrupted",
    "NonFiniteLoss",
    "StopFlag",
    "Network",
    "Optimisation",
    "Schedules",
    "Run",
    "train_epoch",
    "end_epoch",
]


class TrainingInterrupted(RuntimeError):
    """SIGINT / SIGTERM: a checkpoint was written; ``--resume`` continues."""


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite."""


class StopFlag:
    """Set by SIGINT / SIGTERM; the loop finishes its step, checkpoints and stops."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def agreed(self, ctx: DistContext, device, s: int, steps: int, already: bool) -> bool:
        """Whether to stop after step ``s``. One process: at once. Under DDP the ranks agree
        (a summed flag) every 20 steps and at each epoch's end, so all stop at the same step."""
        if already or not ctx.distributed:
            return already or self.signal is not None
        if s % 20 and s != steps - 1:
            return False
        flag = torch.tensor([0.0 if self.signal is None else 1.0], device=device)
        return bool(all_reduce_sum(flag, ctx).item() > 0)


@dataclass
class Network:
    """The model and how the loop calls it."""

    model: nn.Module  # the plain module (checkpoints, evaluation)
    ddp: nn.Module  # DDP-wrapped under torchrun (no_sync, train mode), else ``model``
    forward: Callable[[Tensor], Tensor]  # ``ddp``, compiled with --compile


@dataclass
class Optimisation:
    """The optimiser, its parameter groups (weight decay) and fp16's loss scaler."""

    optimizer: torch.optim.Optimizer
    groups: list[dict]
    scaler: torch.amp.GradScaler | None = None  # fp16: loss scaling (bf16 has fp32's range)


@dataclass
class Schedules:
    """The learning rate of each step, the class weights of each epoch, the epoch's length."""

    lr: Callable[[int], float]
    steps_per_epoch: int
    reweight: ReweightSchedule | None = None  # DRW, ramp; None: constant weights


@dataclass(kw_only=True)
class Run:
    """What every epoch of a run shares (built once by the trainer, from named parts)."""

    cfg: TrainConfig
    ctx: DistContext
    data: RunData
    folder: RunFolder
    network: Network
    loss_fn: Criterion
    optim: Optimisation
    schedules: Schedules
    log: Callable[[str], None]
    stop: StopFlag | None = None
    writer: BackgroundWriter | None = None  # --async-checkpoints
    skipped_before: int = 0  # unreadable images skipped before a resume, by every process

    @property
    def cudagraphs(self) -> bool:
        """Whether the compiled forward replays CUDA graphs (``--compile-mode reduce-overhead``)."""
        return self.cfg.compile and self.cfg.compile_mode in CUDAGRAPH_MODES

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    def set_class_weights(self, epoch: int) -> None:
        """The re-weighting schedule's class weights for ``epoch`` (DRW, ramp)."""
        if self.schedules.reweight is not None:
            weight = self.schedules.reweight.weight_at(epoch)
            self.loss_fn.set_weight(None if weight is None else weight.to(self.device))

    def forward_backward(self, batches, lr: float) -> Tensor:
        """Gradients of one optimiser step (``accumulate`` micro-batches); the loss on the device."""
        optimizer = self.optim.optimizer
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        accumulate = self.cfg.accumulate_steps
        loss_value, scaler = torch.zeros((), device=self.device), self.optim.scaler
        for micro in range(accumulate):
            xb, yb = next(batches)
            if self.cfg.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            sync = micro == accumulate - 1 or not self.ctx.distributed
            if self.cudagraphs:  # a new step: the graphs' previous outputs may be overwritten
                torch.compiler.cudagraph_mark_step_begin()
            ddp = self.network.ddp  # DistributedDataParallel wherever sync is False
            with (
                ddp.no_sync()
                if not sync and isinstance(ddp, nn.parallel.DistributedDataParallel)
                else contextlib.nullcontext()
            ):
                with autocast(self.device, self.cfg.precision):
                    logits = self.network.forward(xb)
                loss = self.loss_fn(logits, yb) / accumulate
                (loss if scaler is None else scaler.scale(loss)).backward()
            loss_value += loss.detach()
        return loss_value

    def optimizer_step(self, loss_value: Tensor, state: TrainState, epoch: int, s: int) -> None:
        """Step, or with ``--skip-nonfinite`` skip (and count) a step whose loss is not finite
        (on any process: all skip it).

        With fp16 the ``GradScaler`` steps: it skips a step whose scaled gradients overflow
        (and lowers the scale) without reading them on the host; such a step has a finite
        loss and is not a non-finite loss."""
        if not self.cfg.skip_nonfinite or self._finite_everywhere(loss_value):
            optimizer, scaler = self.optim.optimizer, self.optim.scaler
            if scaler is None:
                optimizer.step()
            else:
                scaler.step(optimizer)
                scaler.update()
            return
        state.skipped_nonfinite += 1
        if self.ctx.is_main:
            self.log(
                f"skipping a non-finite loss at epoch {epoch + 1}, step {s + 1} ({state.skipped_nonfinite} so far)"
            )
        loss_value.zero_()

    def _finite_everywhere(self, loss_value: Tensor) -> bool:
        """Whether the loss is finite on every process: one process's NaN reaches every
        gradient through DDP's all-reduce, so all processes skip that step together."""
        bad = (~torch.isfinite(loss_value)).to(torch.float32).reshape(1)
        return not bool(all_reduce_sum(bad, self.ctx).item())

    def checkpoint(self, state: TrainState, epoch_loss=(0.0, 0), *, background: bool = False):
        """Write a checkpoint of ``state``; with ``background`` and ``--async-checkpoints`` a
        CPU copy of it is written by the writer thread (returns ``None``), else at once."""
        model, optim = self.network.model, self.optim
        snapshot = state.to_checkpoint(
            model, optim.optimizer, self.cfg, self.data.class_names, epoch_loss, optim.scaler
        )
        step, keep = state.step, self.cfg.keep_checkpoints
        if background and self.writer is not None and self.folder.writer:
            snapshot = cpu_copy(snapshot)
            self.writer.submit(lambda: self.folder.save_checkpoint(step, snapshot, keep))
            return None
        self.settle()
        return self.folder.save_checkpoint(step, snapshot, keep)

    def settle(self) -> None:
        """Wait for the checkpoint written in the background; raise its error, if any."""
        if self.writer is not None:
            self.writer.wait()

    def newest_valid_checkpoint(self):
        """The newest complete checkpoint; a process that does not write (torchrun rank > 0)
        reads rank 0's manifest anew (its own is the one read at the start)."""
        self.settle()
        if self.folder.writer:
            return self.folder.newest_valid_checkpoint()
        try:
            manifest = Manifest.read(self.folder.path)
        except (OSError, ValueError):  # not readable from this node, or damaged: none to name
            return None
        return manifest.newest_valid_checkpoint() if manifest is not None else None

    def count_skipped(self, state: TrainState) -> int:
        """Unreadable images skipped so far by every process, resumes included (every
        process calls this at the same point); kept in ``state`` for the checkpoint."""
        here = torch.tensor(float(self.data.stream.skipped), device=self.device)
        state.skipped_unreadable = self.skipped_before + round(
            float(all_reduce_sum(here, self.ctx))
        )
        return state.skipped_unreadable

    def interrupted(self, state: TrainState, epoch: int, epoch_loss=None) -> TrainingInterrupted:
        """Checkpoint (unless this step's checkpoint exists: ``epoch_loss=None``) and say so."""
        if epoch_loss is not None:
            self.count_skipped(state)
        path = self.checkpoint(state, epoch_loss) if epoch_loss is not None else None
        if self.ctx.is_main:
            path = path or self.newest_valid_checkpoint()
            signum = self.stop.signal if self.stop is not None else None
            self.log(
                f"stopped by signal {signum or 'on another rank'} at epoch {epoch + 1}, "
                f"step {state.step}; checkpoint {path}"
            )
        return TrainingInterrupted(
            f"interrupted at step {state.step}: run again with --resume to continue"
        )


@dataclass
class EpochResult:
    loss_sum: Tensor  # on the device
    loss_count: int
    seconds: float
    images: int
    stopping: bool  # a stop was agreed (mid-epoch: the epoch is unfinished)


class _NonFiniteWatch:
    """The first non-finite step of an epoch, tracked on the device (read every --sync-every
    steps, at the end of the epoch and at a stop)."""

    def __init__(self, device, first: int) -> None:
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.step_no = torch.full((), first, dtype=torch.long, device=device)

    def update(self, loss_value: Tensor) -> None:
        self.step_no += 1
        bad = (self.first_bad < 0) & ~torch.isfinite(loss_value)
        self.first_bad = torch.where(bad, self.step_no, self.first_bad)

    def check(self, epoch: int, run: Run) -> None:
        """Raise :class:`NonFiniteLoss` if a step's loss was not finite, here or (under
        torchrun, where every rank checks at the same step) on any rank: one rank's NaN
        reaches every rank's weights through the shared gradients, so all stop together."""
        first = self.first_bad
        if run.ctx.distributed:  # the first bad step over the ranks (-1: none)
            none = torch.iinfo(torch.long).max
            first = torch.where(first >= 0, first, none)
            torch.distributed.all_reduce(first, op=torch.distributed.ReduceOp.MIN)
            first = torch.where(first == none, -1, first)
        if int(first) >= 0:
            last = run.newest_valid_checkpoint()
            raise NonFiniteLoss(
                f"the loss is not finite at epoch {epoch + 1}, step {int(first)}; last good "
                f"checkpoint: {last if last else 'none'} (lower --lr, or --skip-nonfinite to skip such batches)"
            )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_epoch(run: Run, state: TrainState, epoch: int) -> EpochResult:
    """The optimiser steps of ``epoch`` from ``state.step`` on (a resumed epoch starts midway)."""
    spe, accumulate = run.schedules.steps_per_epoch, run.cfg.accumulate_steps
    first = state.step - epoch * spe
    run.set_class_weights(epoch)
    bar = _progress_bar(run, epoch, first)
    loss_sum, loss_count = torch.zeros((), device=run.device), 0
    if first:  # resumed in the middle of this epoch: its loss so far came with the checkpoint
        loss_sum += state.epoch_loss[0]
        loss_count = state.epoch_loss[1]
    _synchronize(run.device)
    tick, images_before = time.perf_counter(), state.train_images
    batches = run.data.stream.epoch(epoch, first * accumulate)
    watch, stopping = _NonFiniteWatch(run.device, first), False
    for s in range(first, spe):
        lr = run.schedules.lr(state.step)
        loss_value = run.forward_backward(batches, lr)
        run.optimizer_step(loss_value, state, epoch, s)
        state.step += 1
        watch.update(loss_value)
        state.train_images += run.data.stream.batch * accumulate
        loss_sum += loss_value
        loss_count += 1
        if run.stop is not None:  # train() sets it for the whole loop
            stopping = run.stop.agreed(run.ctx, run.device, s, spe, stopping)
        # a stop reads the loss too: a NaN since the last read must not be checkpointed
        if (run.cfg.sync_every and s % run.cfg.sync_every == 0) or s == spe - 1 or stopping:
            watch.check(epoch, run)
            bar.set_postfix(loss=f"{float(loss_value):.4f}", lr=f"{lr:.4g}")
        bar.update(1)
        if stopping and s + 1 < spe:
            break  # mid-epoch stop; after an epoch's last step its end-of-epoch work runs first
    _synchronize(run.device)
    elapsed = time.perf_counter() - tick
    state.train_seconds += elapsed
    bar.close()
    return EpochResult(loss_sum, loss_count, elapsed, state.train_images - images_before, stopping)


def _progress_bar(run: Run, epoch: int, first: int):
    return tqdm(
        total=run.schedules.steps_per_epoch,
        initial=first,
        desc=f"epoch {epoch + 1}/{run.cfg.epochs}",
        unit="img",
        unit_scale=run.data.stream.batch * run.cfg.accumulate_steps,  # counts images: img/s
        disable=not (run.cfg.progress and run.ctx.is_main),
        leave=False,
        dynamic_ncols=True,
    )


def end_epoch(run: Run, state: TrainState, epoch: int, result: EpochResult) -> dict | None:
    """Log the epoch; evaluate, write metrics and checkpoint on evaluation epochs (returns
    the metrics); raise :class:`TrainingInterrupted` after checkpointing when stopping."""
    cfg = run.cfg
    if result.stopping and state.step < (epoch + 1) * run.schedules.steps_per_epoch:
        raise run.interrupted(state, epoch, (float(result.loss_sum), result.loss_count))
    mean_loss = float(result.loss_sum) / max(result.loss_count, 1)
    skipped = run.count_skipped(state)
    _log_training(run, epoch, mean_loss, result, state.step, skipped)
    last_epoch = epoch + 1 == cfg.epochs
    if (epoch + 1) % cfg.eval_every and not last_epoch:
        if result.stopping:  # stopped in the epoch's last step: checkpoint it
            raise run.interrupted(state, epoch, (0.0, 0))
        return None
    run.settle()  # the previous checkpoint is complete (or its failure stops the run here)
    metrics = {}
    if run.data.evaluate is not None:  # the test set (not with --no-evaluate-test)
        metrics = summarize(run.data.evaluate(run.network.model), run.data.counts)
    if run.data.validate is not None:
        metrics.update(validation_metrics(run.data.validate(run.network.model), run.data.counts))
    metrics.update(
        epoch=epoch + 1,
        train_loss=mean_loss,
        train_images_per_second=state.train_images / max(state.train_seconds, 1e-9),
        skipped_unreadable_images=skipped,
        skipped_nonfinite_steps=state.skipped_nonfinite,
    )
    state.history.append(scalar_metrics(metrics))
    if "accuracy" in metrics:
        run.folder.log_evaluation(metrics, epoch + 1)
    run.folder.log_scalars(
        {f"val/{k[4:]}": metrics[k] for k in VAL_METRICS if metrics.get(k) is not None}, epoch + 1
    )
    run.folder.write_json("metrics.json", {**summary_fields(cfg, run.data.counts), **metrics})
    run.folder.write_json("history.json", state.history)
    run.checkpoint(state, background=True)
    if run.ctx.is_main:
        run.log(_eval_line(metrics, cfg.epochs))
    if result.stopping and not last_epoch:  # evaluated and checkpointed: stop here
        raise run.interrupted(state, epoch)
    return metrics


def _log_training(
    run: Run, epoch: int, mean_loss: float, result: EpochResult, step: int, skipped: int
) -> None:
    values = {
        "train/learning_rate": run.schedules.lr(step - 1),
        "train/network_loss": mean_loss,
        "train/regularization_loss": regularization_loss(run.optim.groups),
        "train/epoch": epoch + 1,
        "train/images_per_second": result.images / max(result.seconds, 1e-9),
    }
    if skipped:
        values["train/skipped_unreadable_images"] = skipped
    run.folder.log_scalars(values, epoch + 1)


def regularization_loss(groups: list[dict]) -> float:
    """``0.5 * wd * sum ||w||^2`` over the decayed parameters (TF's l2_loss), one host read."""
    terms = [
        0.5
        * group["weight_decay"]
        * torch.stack([p.detach().float().pow(2).sum() for p in group["params"]]).sum()
        for group in groups
        if group["weight_decay"] and group["params"]
    ]
    return float(torch.stack(terms).sum()) if terms else 0.0


def summary_fields(cfg: TrainConfig, counts: np.ndarray) -> dict[str, Any]:
    """The run's settings at the top of ``metrics.json``."""
    return {
        "dataset": cfg.dataset,
        "imbalance_factor": cfg.imbalance_factor,
        "loss": cfg.loss,
        "beta": cfg.beta,
        "gamma": cfg.gamma,
        "model": cfg.model,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "train_counts": counts.tolist(),
    }


def _pct(value) -> str:
    return "  -  " if value is None else f"{100 * value:5.1f}"


def _eval_line(m: dict, epochs: int) -> str:
    test = val = ""
    if "error_percent" in m:
        test = (
            f"  test error {m['error_percent']:.2f}%  many/medium/few acc "
            f"{_pct(m['many_shot_accuracy'])}/{_pct(m['medium_shot_accuracy'])}/"
            f"{_pct(m['few_shot_accuracy'])}"
        )
    if "val_accuracy" in m:
        val = f"  val acc {_pct(m['val_accuracy'])} balanced {_pct(m['val_balanced_accuracy'])}"
    return (
        f"epoch {m['epoch']:>3}/{epochs}  loss {m['train_loss']:.4f}{test}{val}  "
        f"{m['train_images_per_second']:.0f} img/s"
    )
