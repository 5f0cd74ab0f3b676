"""Evaluation of a finished run on its test set (``classbalanced evaluate``).

:func:`evaluate_run` rebuilds a run's network from what the run folder recorded
(config, class names and order, channels, training counts, absolute data paths,
the checkpoint's SHA-256), so it works from any directory and without the
training files; every mismatch between the data, the checkpoint and the run is
one line. It sits above :mod:`.run_data` (which builds the test set and its
evaluator) and :mod:`.state` (the checkpoint checks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._console import info
from ..config import TrainConfig
from ..losses import LogitAdjustment
from .distributed import DistContext, resolve_device
from .metrics import summarize
from .network import build_network
from .precision import warn_fp16_on_cpu
from .run_data import load_test_set
from .run_files import read_run_config, read_run_json
from .run_folder import MANIFEST, RunFolder, check_class_names
from .state import check_checkpoint_fits, load_weights

__all__ = ["evaluate_run", "read_trained_run", "TrainedRun"]


@dataclass
class TrainedRun:
    """A finished run read back: its folder, config, training counts, data record (class
    names, channels, image shape, normalisation), the checkpoint loaded and its network
    (on the CPU, in eval mode, the checkpoint's weights), and the checkpoint's state (its
    history and step: ``decouple`` checks the run finished)."""

    folder: Path
    cfg: TrainConfig
    counts: list[int]
    record: dict[str, Any]
    checkpoint: Path
    model: nn.Module
    state: dict[str, Any] = field(default_factory=dict)


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
    cfg = read_run_config(folder_path)
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
    return TrainedRun(folder_path, cfg, counts, record, checkpoint, model.eval(), state)


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
