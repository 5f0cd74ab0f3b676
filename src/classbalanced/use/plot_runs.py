"""``classbalanced plot run``: one or several finished runs drawn side by side.

Each run folder's ``metrics.json`` and ``history.json`` are read through the engine's
reader (:mod:`~classbalanced.engine.run_files`); the runs must share their training set.
Three figures go into the output folder: the class distribution, the per-class accuracy
of every run, and the test error against the epoch of the runs with two evaluations or
more. No figure may overwrite a file a run wrote.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..engine.run_files import read_history, read_metrics
from ..engine.run_folder import written_files
from ..files import refuse_overwriting_inputs

__all__ = ["RUN_FIGURES", "plot_runs"]

#: the figures of ``plot run``, in the order they are drawn
RUN_FIGURES = ("class_distribution.png", "per_class_accuracy.png", "error_curve.png")


def _read_runs(folders: Sequence[str | Path]) -> dict[str, tuple[dict, list]]:
    """Name -> (metrics, history) of each run (named by its folder, or its path when two
    folders share a name); a run named twice or a foreign training set is refused."""
    seen = set()
    for folder in folders:
        if os.path.realpath(folder) in seen:
            raise ValueError(f"--run names the run {folder} twice: expected different runs")
        seen.add(os.path.realpath(folder))
    runs: dict[str, tuple[dict, list]] = {}
    for folder in map(Path, folders):
        name = folder.name if folder.name not in runs else str(folder)
        metrics = read_metrics(folder, ("train_counts", "per_class_accuracy"))
        runs[name] = (metrics, read_history(folder))
    counts = next(iter(runs.values()))[0]["train_counts"]
    if any(m["train_counts"] != counts for m, _ in runs.values()):
        raise ValueError(
            "the runs must share their training set: expected equal train_counts, got different ones"
        )
    return runs


def plot_runs(
    folders: Sequence[str | Path], output: str | Path, *, log: Callable[[str], Any] = print
) -> list[str]:
    """Draw the runs in ``folders`` into the folder ``output``; the names of the figures
    written."""
    if not folders:
        raise ValueError("plot run needs --run RUN_FOLDER [RUN_FOLDER ...]")
    runs = _read_runs(folders)
    out = Path(output)
    refuse_overwriting_inputs(
        {f"--output ({n})": str(out / n) for n in RUN_FIGURES},
        [f for run in folders for f in written_files(Path(run))],
    )
    from .. import plots  # plotting

    counts = next(iter(runs.values()))[0]["train_counts"]
    plots.plot_class_distribution(out / RUN_FIGURES[0], counts)
    plots.plot_per_class_accuracy(
        out / RUN_FIGURES[1],
        {
            name: [math.nan if v is None else v for v in m["per_class_accuracy"]]  # no image
            for name, (m, _) in runs.items()
        },
        counts=counts,
    )
    curves = {
        name: ([h["epoch"] for h in hist], [h["error_percent"] for h in hist])
        for name, (_, hist) in runs.items()
        if len(hist) >= 2
    }
    written = list(RUN_FIGURES[:2])
    if curves:
        plots.plot_error_curves(out / RUN_FIGURES[2], curves)
        written.append(RUN_FIGURES[2])
    elif (out / RUN_FIGURES[2]).exists():  # not this plot's: say so rather than let it pass
        log(
            f"no error curve (no run has two evaluations): {out / RUN_FIGURES[2]} is an older plot's"
        )
    log(f"wrote {', '.join(written)} to {out}")
    return written
