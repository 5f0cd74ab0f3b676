"""The finished stage-one run that stage two starts from, read through the engine's reader
(:func:`classbalanced.engine.evaluate_run.read_trained_run`): its config with the data paths
it recorded, training counts and subset, data record, checkpoint (checked finished) and
network."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..config import TrainConfig
from ..engine.evaluate_run import read_trained_run
from ..engine.run_folder import DECOUPLE_FILE, RunFolder, read_run_json
from ..models.registry import classifier

__all__ = ["StageOne", "load_stage_one", "recorded_paths", "check_finished"]


@dataclass
class StageOne:
    """A finished run read back for stage two."""

    folder: Path
    checkpoint: Path
    cfg: TrainConfig  # reading the data from the paths the run recorded
    counts: np.ndarray
    subset: dict
    state: dict  # the checkpoint's (history, global_step)
    record: dict  # run.json's data record (class names, channels, sources)
    checkpoint_sha256: str  # as run.json lists it: the report checks stage one is unchanged
    model: nn.Module  # the run's network (CPU, its checkpoint's weights), linear classifier


def load_stage_one(run: str | Path) -> StageOne:
    """The finished run in folder ``run``; one line for a missing folder, a file, another
    stage two, a run without ``metrics.json``, an unfinished run or a cosine classifier."""
    path = Path(run).absolute()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: expected a finished run folder")
    if not path.is_dir():
        raise ValueError(f"{path} is a file: expected a finished run folder")
    folder = RunFolder.read(path)
    if (path / DECOUPLE_FILE).is_file():  # its report row would read as stage one's
        first = read_run_json(path / DECOUPLE_FILE)
        raise ValueError(
            f"{path} holds a {first.get('method')} stage two of {first.get('stage_one')}: "
            "decouple that stage-one run itself"
        )
    if not (path / "metrics.json").is_file():
        raise ValueError(
            f"{path} has no metrics.json: expected a finished run (train it to the end first)"
        )
    trained = read_trained_run(path, use="it is not the finished network either")
    state = trained.state
    check_finished(path, trained.cfg.epochs, read_run_json(path / "metrics.json"), state)
    if not isinstance(classifier(trained.model), nn.Linear):
        raise ValueError(
            f"decoupling needs a linear classifier: expected nn.Linear at model.fc, got "
            f"{type(classifier(trained.model)).__name__} (the run's --loss {trained.cfg.loss} "
            "uses a cosine classifier)"
        )
    cfg = recorded_paths(trained.cfg, trained.record)
    subset = read_run_json(path / "subset.json", ("counts",))
    counts = np.asarray(subset["counts"], dtype=np.int64)
    sha = folder.manifest.checkpoint_sha(trained.checkpoint)
    return StageOne(
        path, trained.checkpoint, cfg, counts, subset, state, trained.record, sha, trained.model
    )


def recorded_paths(cfg: TrainConfig, record: dict) -> TrainConfig:
    """``cfg`` reading the data from the absolute paths the run recorded (``config.json``
    keeps them as typed, maybe relative to where the run was started)."""
    train, test = record["train"]["source"], record["test"]["source"]
    if cfg.dataset in ("npz", "folder"):
        return dataclasses.replace(cfg, train_data=train, test_data=test)
    if cfg.dataset == "digits":  # built in: no path
        return cfg
    return dataclasses.replace(cfg, data_dir=train)


def check_finished(path: Path, epochs: int, metrics: dict, state: dict[str, Any]) -> None:
    """A run stopped early (Ctrl-C, a time limit) has ``metrics.json`` and checkpoints from
    its last evaluation: refuse it unless both the metrics and the newest checkpoint are
    those of the last epoch."""
    history = state.get("history") if isinstance(state.get("history"), list) else []
    last = history[-1].get("epoch") if history and isinstance(history[-1], dict) else None
    evaluated = metrics.get("epoch")
    if evaluated != epochs or last != epochs:
        done = min((e for e in (evaluated, last) if isinstance(e, int)), default=0)
        raise ValueError(
            f"{path}: the run is unfinished (evaluated up to epoch {done} of {epochs}): "
            "expected a finished run (continue it with `classbalanced train --resume`)"
        )
