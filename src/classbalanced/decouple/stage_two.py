"""``decouple``: stage two on a finished run, from reading it to writing the new run folder
(the pieces: :mod:`.stage_one`, :mod:`.data`, :mod:`.fitting`, :mod:`.write`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..engine.distributed import resolve_device
from ..engine.loop import summary_fields
from ..engine.metrics import EvalCounts, summarize
from ..engine.precision import autocast, warn_fp16_on_cpu
from ..engine.run_folder import lock_run
from ..models.registry import classifier, set_classifier_
from .data import StageTwoData, check_workers, load_data
from .fitting import STAGE_TWO_METHODS, stage_two_loss
from .options import TRAINED_METHODS, DecoupleOptions, default_epochs, default_lr
from .stage_one import StageOne, load_stage_one
from .write import open_out, result_line, settings_of, write_run

__all__ = ["decouple"]


def decouple(
    run: str | Path, options: DecoupleOptions, *, log: Callable[[str], Any] = print
) -> dict[str, Any]:
    """Stage two (``options.method``) on the finished run in folder ``run``; write ``options.out``.

    Returns the metrics written to ``<out>/metrics.json``: those of
    :func:`classbalanced.engine.metrics.summarize` on the run's evaluation split, the run's
    summary fields, and ``decouple`` (method, settings, stage-one run, chosen ``tau``, ...).

    Raises:
        FileNotFoundError / ValueError: not a finished run, a classifier that is not linear,
            a bad option, ``out`` holding something else (see :class:`DecoupleOptions`),
            or written by another process right now.
    """
    options.validate()
    check_one_process()
    r = load_stage_one(run)
    check_workers(r, options.num_workers)
    out = Path(options.out)
    if out.resolve() == r.folder.resolve():  # also through a symbolic link or ".."
        raise ValueError(f"--out {out} is the stage-one run: expected another folder")
    with lock_run(out, f"decouple --method {options.method}", log=log):  # held to the end
        return _stage_two(r, options, out, log)


def _stage_two(r: StageOne, options: DecoupleOptions, out: Path, log) -> dict[str, Any]:
    """:func:`decouple` with the lock of ``out`` held."""
    out_folder, out_cfg = open_out(r, out, options.overwrite)
    device = resolve_device(options.device, 0)
    warn_fp16_on_cpu(r.cfg.precision, device, log, "the run's precision")
    cast = autocast(device, r.cfg.precision)  # before the data load (minutes at scale)
    model = r.model.to(device)
    trained = options.method in TRAINED_METHODS  # checked before the data load (minutes at scale)
    loss_fn = stage_two_loss(r, options, device) if trained else None
    data = load_data(r, device, options.num_workers, options.accept_data_change)
    fc = freeze_backbone(model)
    ctx = context(r, options, data, device=device, cast=cast, log=log, loss_fn=loss_fn)
    head, info = STAGE_TWO_METHODS[options.method](r, model, fc, data, ctx)
    set_classifier_(model, head.requires_grad_(False))
    metrics = evaluate(model, data, r.counts, cast)
    settings = settings_of(r, options, ctx, data.eval_split, info)
    summary = {**summary_fields(r.cfg, np.asarray(r.counts)), "method": options.method}
    metrics = {**summary, **metrics, "epoch": r.cfg.epochs, "decouple": settings}
    write_run(out_folder, out_cfg, r, data.record, model, metrics, settings)
    log(result_line(r, options, data.eval_split, metrics))
    return metrics


def check_one_process() -> None:
    """Refuse torchrun: every one of its processes would run it all and write ``out``."""
    world = os.environ.get("WORLD_SIZE", "1")
    if world.strip() != "1":
        raise ValueError(
            f"decouple runs in one process: expected no torchrun (or one process), "
            f"got WORLD_SIZE={world}"
        )


def freeze_backbone(model: nn.Module) -> nn.Module:
    """Take the classifier out of ``model`` (``fc`` becomes the identity: ``model`` gives
    features) and freeze the rest: no gradients, batch-norm statistics fixed (evaluation
    mode; ``--backbone-bn train`` puts it in train mode while stage two trains)."""
    fc = classifier(model)
    set_classifier_(model, nn.Identity())
    model.eval().requires_grad_(False)
    return fc


def context(r: StageOne, options: DecoupleOptions, data: StageTwoData, **given) -> dict[str, Any]:
    """What a method reads (``given``: device, cast, log, loss_fn), with the stage-two
    ``lr`` and ``epochs`` (the method's and data set's defaults where ``options`` has none),
    ``weight_decay`` and ``batch_size`` (the run's where ``options`` has none)."""
    cfg = r.cfg
    ctx = {
        "options": options,
        **given,
        "lr": options.lr if options.lr is not None else cfg.lr,
        "weight_decay": cfg.weight_decay if options.weight_decay is None else options.weight_decay,
        # a batch larger than the training set shrinks to it (as the trainer's in memory)
        "batch_size": min(options.batch_size or cfg.batch_size, len(data.labels)),
    }
    if options.method in TRAINED_METHODS:
        if options.lr is None:
            ctx["lr"] = default_lr(cfg.dataset, cfg.lr)
        ctx["epochs"] = options.epochs or default_epochs(options.method, cfg.dataset)
        ctx["backbone_bn"] = options.backbone_bn
    return ctx


@torch.no_grad()
def evaluate(model: nn.Module, data: StageTwoData, counts: np.ndarray, cast) -> dict[str, Any]:
    """The metrics of ``model`` (evaluation mode) on the run's evaluated split."""
    model.eval()
    result = EvalCounts.zeros(len(counts), device=next(model.parameters()).device)
    for x, y in data.batches(data.eval_split):
        with cast:
            logits = model(x)
        result.update(logits.float(), y)
    metrics = summarize(result, counts)
    if metrics["num_test_images"] == 0:  # every image unreadable: not a test error of 100%
        raise ValueError(
            f"no readable image in the {data.eval_split} split to evaluate: expected its image "
            "files where `prepare` found them"
        )
    return metrics
