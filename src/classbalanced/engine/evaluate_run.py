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
from pathlib import Path
from typing import Any

import torch

from .._console import info
from ..config import TrainConfig
from .distributed import DistContext, resolve_device
from .metrics import summarize
from .network import build_network
from .precision import warn_fp16_on_cpu
from .run_data import load_test_set
from .run_folder import MANIFEST, RunFolder, check_class_names, read_run_json
from .state import check_checkpoint_fits, load_weights

__all__ = ["evaluate_run"]


def evaluate_run(
    run: str | Path,
    *,
    test_data: str | None = None,
    device: str = "auto",
    accept_data_change: bool = False,
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
    ``accept_data_change``). ``log`` gets the one warning line of a run in fp16 evaluated
    on the CPU (very slow there).
    """
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
    cfg = TrainConfig.from_dict(
        read_run_json(folder_path / "config.json"), source=str(folder_path / "config.json")
    )
    counts = read_run_json(folder_path / "subset.json", ("counts",))["counts"]
    record = folder.data
    checkpoint, state = folder.load_checkpoint(checkpoint, use="name that file to evaluate it")
    if state is None:
        raise FileNotFoundError(
            f"no checkpoint in {folder_path / 'checkpoints'}: nothing to evaluate"
        )
    check_checkpoint_fits(state, cfg, record["class_names"], str(checkpoint))
    target = resolve_device(device, 0)
    warn_fp16_on_cpu(cfg.precision, target, log, "the run's precision")
    ctx = DistContext(device=target)
    test = load_test_set(cfg, record, test_data, ctx, accept_change=accept_data_change)
    check_class_names(record["class_names"], test.class_names, "the run", "the test set")
    if test.in_channels != record["in_channels"]:
        raise ValueError(
            f"the test set has {test.in_channels}-channel images, the run's model takes {record['in_channels']}"
        )
    model = build_network(cfg, counts, record["in_channels"])
    load_weights(model, state["model"], str(checkpoint))
    model.to(target)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    metrics = summarize(test.evaluate(model), counts)
    metrics["checkpoint"] = str(checkpoint)
    return metrics
