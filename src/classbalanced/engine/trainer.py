"""The training engine: data on the device, the paper's schedule, evaluation, checkpoints.

The loop receives a loss object and never branches on loss names: a loss that
wants the classifier-bias prior says so through ``uses_prior_bias``.

Data order and augmentation are a pure function of ``(seed, epoch)``: each
epoch draws its permutation and all of its crop / flip parameters from one
generator seeded from both, at the start of the epoch. A run resumed from a
checkpoint at any step therefore continues exactly as the uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..config import LARGE_DATASETS, TrainConfig, config_differences
from ..data.arrays import ImageArrays
from ..data.augment import normalize_images
from ..data.longtail import longtail_indices
from ..data.registry import load_dataset
from ..data.safe_io import atomic_write_json
from ..losses import build_loss, init_prior_bias_
from ..models.registry import build_model, load_pretrained_, use_normed_classifier_
from ..optim import parameter_groups
from ..schedules import ReweightSchedule
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .distributed import DistContext, all_reduce_sum, cleanup_distributed, setup_distributed
from .metrics import EvalCounts, summarize
from .streams import InMemoryStream, LoaderStream

__all__ = [
    "TrainingInterrupted",
    "NonFiniteLoss",
    "LRSchedule",
    "prepare_data",
    "prepare_run_folder",
    "start_run_folder",
    "evaluate",
    "train",
    "RUN_FILES",
]

#: files and folders a run writes (the only ones --overwrite removes)
RUN_FILES = (
    "config.json",
    "metrics.json",
    "history.json",
    "subset.json",
    "checkpoints",
    "tensorboard",
    "class_distribution.png",
    "per_class_accuracy.png",
    "error_curve.png",
)


class TrainingInterrupted(RuntimeError):
    """SIGINT / SIGTERM: a checkpoint was written; ``--resume`` continues."""


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite."""


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


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------


@dataclass
class PreparedData:
    train: ImageArrays
    test: ImageArrays
    indices: np.ndarray  # kept positions in the full training set
    counts: np.ndarray  # per-class training counts after subsetting


def prepare_data(cfg: TrainConfig) -> PreparedData:
    """Load the dataset named in ``cfg`` and take its seeded long-tailed subset."""
    full_train, test = load_dataset(
        cfg.dataset,
        data_dir=cfg.data_dir,
        download=cfg.download,
        train_data=cfg.train_data,
        test_data=cfg.test_data,
        image_size=cfg.image_size,
        progress=cfg.progress,
        seed=cfg.seed,
    )
    indices, counts = longtail_indices(
        full_train.labels,
        cfg.imbalance_factor,
        seed=cfg.seed,
        profile=cfg.profile,
        num_classes=full_train.num_classes,
    )
    return PreparedData(full_train.subset(indices), test, indices, counts)


# ---------------------------------------------------------------------------
# run folder
# ---------------------------------------------------------------------------


def prepare_run_folder(out: Path, cfg: TrainConfig) -> bool:
    """Check the run folder (nothing is deleted or written). True when resuming a run.

    Refuses a folder that holds a different run unless ``resume`` (same config,
    or ``force``) or ``overwrite``, and a non-empty folder that holds no run.
    :func:`start_run_folder` does the writing once the run is known to start.
    """
    config_path = out / "config.json"
    if cfg.resume:
        if not config_path.is_file():
            raise ValueError(f"nothing to resume in {out}: no config.json there")
        old = json.loads(config_path.read_text(encoding="utf-8"))
        differ = config_differences(old, cfg.to_dict())
        if differ and not cfg.force:
            raise ValueError(
                f"{out} holds a run with a different config (keys: {', '.join(differ)}); "
                "resume with the same settings or add --force"
            )
        if differ:  # --force: the run continues under the new settings; record them
            atomic_write_json(config_path, cfg.to_dict())
        # temporary files of atomic writes interrupted by a kill (never read; removed here)
        for folder in (out, out / "checkpoints"):
            for stale in folder.glob(".*.tmp") if folder.is_dir() else ():
                stale.unlink(missing_ok=True)
        return True
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not config_path.is_file():
            raise ValueError(
                f"--out {out} is not empty and holds no classbalanced run; choose another folder"
            )
        if not cfg.overwrite:
            raise ValueError(
                f"{out} already holds a run: pass --resume to continue it or --overwrite to replace it"
            )
    return False


def start_run_folder(out: Path, cfg: TrainConfig, subset: dict) -> None:
    """Replace an old run's files (``--overwrite``: only the files a run writes), then
    write the resolved config and the training subset."""
    for name in RUN_FILES:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", cfg.to_dict())
    atomic_write_json(out / "subset.json", subset)


# ---------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    batch_size: int = 1000,
    precision: str = "fp32",
    channels_last: bool = False,
    ctx: DistContext | None = None,
    num_classes: int | None = None,
) -> EvalCounts:
    """Top-1 / top-5 counts of ``model`` on uint8 ``images (N, C, H, W)``, summed over ranks.

    Each rank evaluates positions ``rank, rank + world, ...``: no image is
    counted twice and none is padded in.
    """
    ctx = ctx or DistContext(device=images.device)
    was_training = model.training
    model.eval()
    num_classes = num_classes or int(labels.max()) + 1
    counts = EvalCounts.zeros(num_classes, device=images.device)
    positions = torch.arange(ctx.rank, images.shape[0], ctx.world_size, device=images.device)
    for start in range(0, positions.numel(), batch_size):
        idx = positions[start : start + batch_size]
        x = normalize_images(images[idx])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(images.device, precision):
            logits = model(x)
        counts.update(logits.float(), labels[idx])
    stacked = all_reduce_sum(counts.stacked(), ctx)
    model.train(was_training)
    return EvalCounts.from_stacked(stacked, counts.k)


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------


class _StopFlag:
    """Set by SIGINT / SIGTERM; the loop finishes its step, checkpoints and stops."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
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


def _agreed_stop(
    stop: _StopFlag, ctx: DistContext, device, s: int, steps: int, already: bool
) -> bool:
    """Whether to stop after this step. One process: at once. Under DDP the ranks agree
    (a summed flag) every 20 steps and at each epoch's end, so all stop at the same step."""
    if already or not ctx.distributed:
        return already or stop.signal is not None
    if s % 20 and s != steps - 1:
        return False
    flag = torch.tensor([0.0 if stop.signal is None else 1.0], device=device)
    return bool(all_reduce_sum(flag, ctx).item() > 0)


def _regularization_loss(groups: list[dict]) -> float:
    """``0.5 * wd * sum ||w||^2`` over the decayed parameters (TF's l2_loss), one host read."""
    terms = [
        0.5
        * group["weight_decay"]
        * torch.stack([p.detach().float().pow(2).sum() for p in group["params"]]).sum()
        for group in groups
        if group["weight_decay"] and group["params"]
    ]
    return float(torch.stack(terms).sum()) if terms else 0.0


def _log_scalars(writer, metrics: dict, epoch: int) -> None:
    if writer is None:
        return
    for key in (
        "accuracy",
        "error_percent",
        "top5_accuracy",
        "many_shot_accuracy",
        "medium_shot_accuracy",
        "few_shot_accuracy",
    ):
        if metrics.get(key) is not None:
            writer.add_scalar(f"test/{key}", metrics[key], epoch)
    per_class = metrics["per_class_accuracy"]
    if len(per_class) <= 100:
        for i, value in enumerate(per_class):
            if value is not None:
                writer.add_scalar(f"test_per_class_accuracy/class_{i:03d}", value, epoch)
    values = [v for v in per_class if v is not None]
    if values:
        writer.add_histogram("test/per_class_accuracy", np.asarray(values), epoch)
    writer.flush()


@dataclass
class _RunData:
    """What the loop needs from a dataset, whichever kind it is."""

    counts: np.ndarray
    class_names: list[str]
    indices: np.ndarray | None
    in_channels: int
    stream: Any
    evaluate: Callable[[nn.Module], EvalCounts]
    prepared: PreparedData | None = None


def _in_memory_data(cfg: TrainConfig, ctx: DistContext) -> _RunData:
    data = prepare_data(cfg)
    device = ctx.device
    to_device = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).contiguous().to(device)  # noqa: E731
    x_train, x_test = to_device(data.train.images), to_device(data.test.images)
    y_train = torch.from_numpy(data.train.labels).to(device)
    y_test = torch.from_numpy(data.test.labels).to(device)
    stream = InMemoryStream(
        x_train,
        y_train,
        batch_size=cfg.batch_size // cfg.accumulate_steps,  # one micro-batch
        seed=cfg.seed,
        pad=cfg.pad,
        flip=cfg.flip,
        ctx=ctx,
        sampler=_sampler(cfg, data.train.labels, DistContext()),  # a global order for all ranks
    )

    def run_eval(model: nn.Module) -> EvalCounts:
        return evaluate(
            model,
            x_test,
            y_test,
            batch_size=cfg.eval_batch_size,
            precision=cfg.precision,
            channels_last=cfg.channels_last,
            ctx=ctx,
            num_classes=data.train.num_classes,
        )

    return _RunData(
        data.counts, data.train.class_names, data.indices, x_train.shape[1], stream, run_eval, data
    )


def _large_data(cfg: TrainConfig, ctx: DistContext) -> _RunData:
    from ..data import inat

    layout = inat.load_prepared(cfg.dataset, cfg.data_dir)
    samples = layout.train_samples
    labels = np.asarray([label for _, label in samples], dtype=np.int64)
    indices, counts = longtail_indices(
        labels,
        cfg.imbalance_factor,
        seed=cfg.seed,
        profile=cfg.profile,
        num_classes=len(layout.class_names),
    )
    if len(indices) != len(samples):
        samples = [samples[i] for i in indices]
    size = cfg.image_size or 224
    mean, std = inat.mean_std(cfg.dataset)
    train_set = inat.ImageFileDataset(
        layout.root, samples, inat.build_transforms(True, size, mean, std)
    )
    stream = LoaderStream(
        train_set,
        batch_size=cfg.batch_size // cfg.accumulate_steps,
        seed=cfg.seed,
        ctx=ctx,
        num_workers=cfg.num_workers,
        collate=inat.collate_skip_bad,
        sampler=_sampler(cfg, labels[indices], ctx),
    )
    val = inat.ImageFileDataset(
        layout.root, layout.val_samples, inat.build_transforms(False, size, mean, std)
    )
    shard = torch.utils.data.Subset(
        val, list(inat.eval_indices(len(val), ctx.rank, ctx.world_size))
    )

    @torch.no_grad()
    def run_eval(model: nn.Module) -> EvalCounts:
        was_training = model.training
        model.eval()
        counts_ = EvalCounts.zeros(len(layout.class_names), device=ctx.device)
        loader = torch.utils.data.DataLoader(
            shard,
            batch_size=max(1, cfg.eval_batch_size),
            num_workers=cfg.num_workers,
            collate_fn=inat.collate_skip_bad,
            pin_memory=ctx.device.type == "cuda",
        )
        for images, labels_, _ in loader:
            if images.shape[0] == 0:
                continue
            x = images.to(ctx.device, non_blocking=True)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(ctx.device, cfg.precision):
                logits = model(x)
            counts_.update(logits.float(), labels_.to(ctx.device))
        model.train(was_training)
        return EvalCounts.from_stacked(all_reduce_sum(counts_.stacked(), ctx), counts_.k)

    return _RunData(counts, layout.class_names, indices, 3, stream, run_eval)


def _sampler(cfg: TrainConfig, labels, ctx: DistContext):
    """The class-balanced sampler when asked for (``None``: shuffle each epoch)."""
    if cfg.sampler != "class_balanced":
        return None
    from ..sampling import ClassBalancedSampler

    return ClassBalancedSampler(
        labels, cfg.sampler_beta, seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size
    )


def _build_model(cfg: TrainConfig, num_classes: int, in_channels: int, loss_fn, ctx: DistContext):
    # initialisation seeded without touching the global RNG state
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, num_classes, in_channels=in_channels)
        if cfg.pretrained:
            load_pretrained_(model, cfg.model)
        if getattr(loss_fn, "normalized_classifier", False):  # e.g. LDAM: cosine logits
            use_normed_classifier_(model)
    no_decay = []
    if getattr(loss_fn, "uses_prior_bias", False):
        init_prior_bias_(model.fc)
        no_decay.append(model.fc.bias)
    if cfg.sync_bn and ctx.distributed:
        if ctx.device.type != "cuda":
            raise ValueError(
                f"--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm), got {ctx.device}"
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(ctx.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    groups = parameter_groups(
        model, cfg.weight_decay, no_decay=no_decay, bias_and_norm=cfg.no_decay_bias_and_norm
    )
    return model, groups


def train(cfg: TrainConfig, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train and evaluate as ``cfg`` says; write the run folder; return the final metrics.

    Raises ``TrainingInterrupted`` after SIGINT / SIGTERM (a checkpoint is saved
    first) and ``NonFiniteLoss`` if the loss stops being finite.
    """
    cfg = cfg.resolved()
    ctx = setup_distributed(cfg.device)
    try:
        return _train(cfg, ctx, log)
    finally:
        cleanup_distributed(ctx)


def _train(cfg: TrainConfig, ctx: DistContext, log: Callable[[str], None]) -> dict[str, Any]:
    out = Path(cfg.out)
    device = ctx.device
    if cfg.batch_size % (ctx.world_size * cfg.accumulate_steps):
        raise ValueError(
            f"batch_size is the global batch and must divide over {ctx.world_size} process(es) x "
            f"{cfg.accumulate_steps} accumulation step(s), got {cfg.batch_size}"
        )
    resuming = prepare_run_folder(out, cfg) if ctx.is_main else cfg.resume
    if ctx.distributed:
        torch.distributed.barrier()
    large = cfg.dataset in LARGE_DATASETS
    data = _large_data(cfg, ctx) if large else _in_memory_data(cfg, ctx)
    counts, num_classes = data.counts, len(data.class_names)
    loss_fn = build_loss(cfg.loss, counts, beta=cfg.beta, gamma=cfg.gamma).to(device)
    reweight = None
    if cfg.reweight_schedule != "constant":
        if not hasattr(loss_fn, "set_weight"):
            raise ValueError(
                f"loss {cfg.loss!r} has no class weights to schedule: use --reweight-schedule constant"
            )
        reweight = ReweightSchedule(
            cfg.reweight_schedule, counts, cfg.beta, start_epoch=cfg.reweight_epoch
        )
    model, groups = _build_model(cfg, num_classes, data.in_channels, loss_fn, ctx)
    optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if ctx.is_main and not resuming:  # everything is known to work: now the folder is written
        subset = {
            "counts": counts.tolist(),
            "class_names": data.class_names,
            "indices": None if data.indices is None else data.indices.tolist(),
        }
        start_run_folder(out, cfg, subset)
    if ctx.distributed:
        torch.distributed.barrier()
    stream = data.stream
    accumulate = cfg.accumulate_steps
    # optimiser steps per epoch; the stream yields `accumulate` micro-batches per step
    steps_per_epoch = max(1, stream.steps_per_epoch // accumulate)
    schedule = LRSchedule(
        cfg.lr,
        cfg.warmup_epochs,
        tuple(cfg.decay_epochs),
        tuple(cfg.decay_factors),
        steps_per_epoch,
    )

    start_step, resumed_loss, history = 0, None, []
    train_seconds, train_images, skipped_nonfinite = 0.0, 0, 0
    if resuming:
        path = latest_checkpoint(out / "checkpoints")
        if path is not None:
            state = load_checkpoint(path)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start_step = int(state["global_step"])
            history = list(state.get("history", []))
            train_seconds = float(state.get("train_seconds", 0.0))
            train_images = int(state.get("train_images", 0))
            skipped_nonfinite = int(state.get("skipped_nonfinite", 0))
            resumed_loss = (float(state["epoch_loss_sum"]), int(state["epoch_loss_count"]))
            if ctx.is_main:
                log(f"resuming {out} from {path.name} (step {start_step})")
        elif ctx.is_main:
            log(f"no checkpoint in {out}: starting from the beginning")

    ddp_model = model
    if ctx.distributed:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    forward = torch.compile(ddp_model) if cfg.compile else ddp_model

    writer = None
    if ctx.is_main:
        from torch.utils.tensorboard import SummaryWriter

        # events logged after the checkpoint we resume from (a killed run) are purged
        purge = start_step // steps_per_epoch + 1 if resuming else None
        writer = SummaryWriter(str(out / "tensorboard"), purge_step=purge)
        log(
            f"training {cfg.model} on {cfg.dataset} (IF {cfg.imbalance_factor:g}, {int(counts.sum())} images, "
            f"{num_classes} classes) with {cfg.loss} loss (beta {cfg.beta}, gamma {cfg.gamma}) for "
            f"{cfg.epochs} epochs on {device}" + (f" x{ctx.world_size}" if ctx.distributed else "")
        )

    from tqdm.auto import tqdm

    metrics: dict[str, Any] = history[-1] if history else {}
    step = start_step
    ddp_model.train()
    stopping = False
    with _StopFlag() as stop:
        for epoch in range(start_step // steps_per_epoch, cfg.epochs):
            first = step - epoch * steps_per_epoch
            if reweight is not None:
                weight = reweight.weight_at(epoch)
                loss_fn.set_weight(None if weight is None else weight.to(device))
            bar = tqdm(
                total=steps_per_epoch,
                initial=first,
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                unit="img",
                unit_scale=stream.batch * accumulate,  # counts images, shows img/s
                disable=not (cfg.progress and ctx.is_main),
                leave=False,
                dynamic_ncols=True,
            )
            loss_sum, loss_count = torch.zeros((), device=device), 0
            if first and resumed_loss is not None:  # resumed in the middle of this epoch
                loss_sum += resumed_loss[0]
                loss_count = resumed_loss[1]
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            tick = time.perf_counter()
            images_before = train_images
            batches = stream.epoch(epoch, first * accumulate)
            # first non-finite step of the epoch, tracked on the device (read every 20 steps)
            first_bad = torch.full((), -1, dtype=torch.long, device=device)
            step_no = torch.full((), first, dtype=torch.long, device=device)
            for s in range(first, steps_per_epoch):
                lr = schedule(step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                loss_value = torch.zeros((), device=device)
                for micro in range(accumulate):
                    xb, yb = next(batches)
                    if cfg.channels_last:
                        xb = xb.contiguous(memory_format=torch.channels_last)
                    sync = micro == accumulate - 1 or not ctx.distributed
                    with contextlib.nullcontext() if sync else ddp_model.no_sync():
                        with _autocast(device, cfg.precision):
                            logits = forward(xb)
                        loss = loss_fn(logits, yb) / accumulate
                        loss.backward()
                    loss_value += loss.detach()
                finite = cfg.skip_nonfinite and bool(torch.isfinite(loss_value))
                if not cfg.skip_nonfinite or finite:
                    optimizer.step()
                else:
                    skipped_nonfinite += 1
                    log(
                        f"skipping a non-finite loss at epoch {epoch + 1}, step {s + 1} ({skipped_nonfinite} so far)"
                    )
                    loss_value.zero_()
                step += 1
                step_no += 1
                bad = (first_bad < 0) & ~torch.isfinite(loss_value)
                first_bad = torch.where(bad, step_no, first_bad)
                train_images += stream.batch * accumulate
                loss_sum += loss_value
                loss_count += 1
                if s % 20 == 0 or s == steps_per_epoch - 1:
                    if int(first_bad) >= 0:
                        last = latest_checkpoint(out / "checkpoints")
                        raise NonFiniteLoss(
                            f"the loss is not finite at epoch {epoch + 1}, step {int(first_bad)}; last good "
                            f"checkpoint: {last if last else 'none'} (lower --lr, or --skip-nonfinite to skip such batches)"
                        )
                    bar.set_postfix(loss=f"{float(loss_value):.4f}", lr=f"{lr:.4g}")
                bar.update(1)
                stopping = _agreed_stop(stop, ctx, device, s, steps_per_epoch, stopping)
                if stopping and s + 1 < steps_per_epoch:
                    break  # mid-epoch stop; after an epoch's last step its end-of-epoch work runs first
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - tick
            train_seconds += elapsed
            bar.close()

            def snapshot(epoch_loss=(0.0, 0)):
                return {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "history": list(history),
                    "train_seconds": train_seconds,  # noqa: B023 (called at once)
                    "train_images": train_images,  # noqa: B023 (called at once)
                    "skipped_nonfinite": skipped_nonfinite,  # noqa: B023 (called at once)
                    "epoch_loss_sum": float(epoch_loss[0]),
                    "epoch_loss_count": int(epoch_loss[1]),
                    "config": cfg.to_dict(),
                }

            def interrupted(epoch_loss=(0.0, 0), saved=False, epoch=epoch, step=step):
                if ctx.is_main:
                    path = latest_checkpoint(out / "checkpoints")
                    if not saved:
                        path = save_checkpoint(
                            out / "checkpoints",
                            step,
                            snapshot(epoch_loss),
                            keep=cfg.keep_checkpoints,
                        )
                    log(
                        f"stopped by signal {stop.signal or 'on another rank'} at epoch {epoch + 1}, "
                        f"step {step}; checkpoint {path}"
                    )
                return TrainingInterrupted(
                    f"interrupted at step {step}: run again with --resume to continue"
                )

            if stopping and step < (epoch + 1) * steps_per_epoch:
                raise interrupted((float(loss_sum), loss_count))
            mean_loss = float(loss_sum) / max(loss_count, 1)
            images_per_second = (train_images - images_before) / max(elapsed, 1e-9)
            if writer is not None:
                writer.add_scalar("train/learning_rate", schedule(step - 1), epoch + 1)
                writer.add_scalar("train/network_loss", mean_loss, epoch + 1)
                writer.add_scalar(
                    "train/regularization_loss", _regularization_loss(groups), epoch + 1
                )
                writer.add_scalar("train/epoch", epoch + 1, epoch + 1)
                writer.add_scalar("train/images_per_second", images_per_second, epoch + 1)
                if stream.skipped:
                    writer.add_scalar("train/skipped_unreadable_images", stream.skipped, epoch + 1)
            last_epoch = epoch + 1 == cfg.epochs
            if (epoch + 1) % cfg.eval_every and not last_epoch:
                if stopping:  # stopped in the epoch's last step: checkpoint it
                    raise interrupted()
                continue
            metrics = summarize(data.evaluate(model), counts)
            metrics.update(
                epoch=epoch + 1,
                train_loss=mean_loss,
                train_images_per_second=train_images / max(train_seconds, 1e-9),
                skipped_unreadable_images=stream.skipped,
                skipped_nonfinite_steps=skipped_nonfinite,
            )
            history.append({k: v for k, v in metrics.items() if k != "per_class_accuracy"})
            if ctx.is_main:
                _log_scalars(writer, metrics, epoch + 1)
                atomic_write_json(out / "metrics.json", {**_summary_fields(cfg, counts), **metrics})
                atomic_write_json(out / "history.json", history)
                save_checkpoint(out / "checkpoints", step, snapshot(), keep=cfg.keep_checkpoints)
                log(_eval_line(metrics, cfg.epochs))
            if stopping and not last_epoch:  # evaluated and checkpointed: stop here
                raise interrupted(saved=True)
    if writer is not None:
        writer.close()
    if ctx.is_main:
        _final_plots(out, counts, data.class_names, metrics, history)
    if ctx.distributed:  # leave together: no rank tears the process group down under another
        torch.distributed.barrier()
    return {**_summary_fields(cfg, counts), **metrics}


def _summary_fields(cfg: TrainConfig, counts: np.ndarray) -> dict[str, Any]:
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
    return (
        f"epoch {m['epoch']:>3}/{epochs}  loss {m['train_loss']:.4f}  test error {m['error_percent']:.2f}%  "
        f"many/medium/few acc {_pct(m['many_shot_accuracy'])}/{_pct(m['medium_shot_accuracy'])}/"
        f"{_pct(m['few_shot_accuracy'])}  {m['train_images_per_second']:.0f} img/s"
    )


def _final_plots(out: Path, counts, class_names, metrics: dict, history: list[dict]) -> None:
    from .. import plots

    if len(counts) > 200:  # bar charts of thousands of classes are not readable
        return
    plots.plot_class_distribution(out / "class_distribution.png", counts, class_names=class_names)
    if metrics.get("per_class_accuracy"):
        acc = [0.0 if v is None else v for v in metrics["per_class_accuracy"]]
        plots.plot_per_class_accuracy(
            out / "per_class_accuracy.png", {"test": acc}, counts=counts, class_names=class_names
        )
    if len(history) >= 2:
        epochs = [h["epoch"] for h in history]
        errors = [h["error_percent"] for h in history]
        plots.plot_error_curves(out / "error_curve.png", {"test error": (epochs, errors)})
