"""``classbalanced make-lt``: a long-tailed subset written to a file, without training.

The subset is the one a run with the same settings trains on
(:func:`~classbalanced.engine.run_data.prepare_data`): a JSON file of its indices and
per-class counts, or an ``.npz`` holding the images too (``x``, ``y``, ``indices``,
``class_names``), and optionally a bar plot of the counts. The outputs are checked
against the inputs (the data files, the CIFAR archives) before anything is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..config import TrainConfig
from ..data.cifar import ARCHIVES
from ..files import atomic_save, atomic_write_json, refuse_overwriting_inputs
from .run_data import PreparedData, prepare_data

__all__ = ["write_long_tailed_subset"]


def write_long_tailed_subset(
    output: str | Path,
    *,
    plot: str | Path | None = None,
    log: Callable[[str], Any] = print,
    **settings: Any,
) -> PreparedData:
    """Draw the long-tailed subset of ``settings`` (TrainConfig keys: ``dataset``,
    ``data_dir``, ``train_data``, ``test_data`` (default: ``train_data``),
    ``imbalance_factor``, ``profile``, ``seed``, ``download`` (default yes)) and write it
    to ``output`` (``.npz``: with the images; else JSON), its counts to the PNG ``plot``."""
    settings["test_data"] = settings.get("test_data") or settings.get("train_data")
    settings["download"] = settings.get("download") is not False
    cfg = TrainConfig(**settings).resolved()
    cifar_files = [
        Path(cfg.data_dir) / n for a in ARCHIVES.values() for n in (a.filename, a.folder)
    ]
    refuse_overwriting_inputs(
        {"--output": str(output), "--plot": str(plot) if plot else None},
        [cfg.train_data, cfg.test_data, *cifar_files],
    )
    data = prepare_data(cfg)
    output = Path(output)
    if output.suffix == ".npz":
        atomic_save(
            output,
            lambda tmp: np.savez(
                open(tmp, "wb"),
                x=data.train.images,
                y=data.train.labels,
                indices=data.indices,
                class_names=np.array(data.train.class_names),
            ),
        )
    else:
        atomic_write_json(output, _subset_record(cfg, data))
    if plot:
        from ..plots import plot_class_distribution  # plotting

        plot_class_distribution(
            plot, data.counts, title=f"{cfg.dataset} IF {cfg.imbalance_factor:g}"
        )
    counts = data.counts.tolist()
    log(
        f"{cfg.dataset} IF {cfg.imbalance_factor:g} ({cfg.profile}): {int(data.counts.sum())} "
        f"images, counts {counts[:10]}{' ...' if len(counts) > 10 else ''} -> {output}"
    )
    return data


def _subset_record(cfg: TrainConfig, data: PreparedData) -> dict[str, Any]:
    return {
        "dataset": cfg.dataset,
        "imbalance_factor": cfg.imbalance_factor,
        "profile": cfg.profile,
        "seed": cfg.seed,
        "counts": data.counts.tolist(),
        "class_names": data.train.class_names,
        "indices": data.indices.tolist(),
    }
