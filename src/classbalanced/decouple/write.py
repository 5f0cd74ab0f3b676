"""Writing a stage-two run: an ordinary run folder through the engine's
:class:`~classbalanced.engine.run_folder.RunFolder` (``run.json``, ``config.json``,
``subset.json``, ``decouple.json``, one checkpoint, ``history.json``, ``metrics.json``),
and the settings and result line that describe it."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..engine.metrics import scalar_metrics
from ..engine.run_folder import DECOUPLE_FILE, RunFolder
from .options import DecoupleOptions
from .stage_one import StageOne

__all__ = ["open_out", "settings_of", "write_run", "result_line"]

#: the settings chosen on a split stage one does not record (tau_norm's tau, the kept
#: epoch of crt / lws): ``<key>_chosen_on`` names the split, ``<key>_data`` its record
CHOSEN = ("tau", "epoch")


def open_out(run: StageOne, out: Path, overwrite: bool) -> tuple[RunFolder, TrainConfig]:
    """The stage-two run folder (checked, nothing written yet; its lock held) and its config."""
    if (out / "run.json").is_file() and not overwrite:  # (decouple has no --resume)
        raise ValueError(f"{out} already holds a run: pass --overwrite to replace it")
    cfg = dataclasses.replace(run.cfg, out=str(out), overwrite=overwrite, resume=False)
    return RunFolder.open(cfg), cfg


def settings_of(run: StageOne, options: DecoupleOptions, ctx: dict, split: str, info: dict) -> dict:
    """``decouple.json``: the method, its stage-one run and every setting it used."""
    used = {"lr": ctx["lr"], "weight_decay": ctx["weight_decay"], "batch_size": ctx["batch_size"]}
    if "epochs" in ctx:  # crt, lws
        used.update(epochs=ctx["epochs"], backbone_bn=ctx["backbone_bn"])
    return {
        "method": options.method,
        "stage_one": str(run.folder),
        "stage_one_checkpoint": str(run.checkpoint),
        "stage_one_checkpoint_sha256": run.checkpoint_sha256,
        "options": {k: v for k, v in asdict(options).items() if k not in ("out", "overwrite")},
        **used,
        "evaluated_split": split,
        **info,
    }


def write_run(
    folder: RunFolder, cfg: TrainConfig, run: StageOne, record: dict, model, metrics: dict,
    settings: dict,
) -> None:  # fmt: skip
    """Through :class:`RunFolder`, like any run; the data record names the split a setting
    was chosen on (``val``) beside the others."""
    for key in CHOSEN:
        if settings.get(f"{key}_data"):
            record = {**record, settings[f"{key}_chosen_on"]: settings[f"{key}_data"]}
    folder.start(cfg, run.subset, record)
    folder.write_json(DECOUPLE_FILE, settings)
    state = {
        "model": model.state_dict(),
        "config": cfg.to_dict(),
        "class_names": list(run.record.get("class_names") or []),
        "history": [],
        "decouple": settings,
    }
    folder.save_checkpoint(int(run.state.get("global_step", 0)), state, keep=1)
    folder.write_json("history.json", [scalar_metrics(metrics)])
    folder.write_json("metrics.json", metrics)


def result_line(
    run: StageOne, options: DecoupleOptions, split: str, metrics: dict[str, Any]
) -> str:
    """The one line ``decouple`` prints when done."""
    groups = "/".join(
        "-"
        if metrics[f"{g}_shot_accuracy"] is None
        else f"{100 * metrics[f'{g}_shot_accuracy']:.1f}"
        for g in ("many", "medium", "few")
    )
    return (
        f"{options.method} on {run.folder} ({run.checkpoint.name}): {split} error "
        f"{metrics['error_percent']:.2f}%  many/medium/few acc {groups}  -> {options.out}"
    )
