"""The one reader of a run folder's JSON files: ``run.json``, ``config.json``,
``subset.json``, ``metrics.json`` and ``history.json``.

Every command that reads a run (evaluate, decouple, plot run, sweep results, report, the
demo, use/) reads it here; :mod:`~classbalanced.engine.run_folder` is the only writer.
Two ways to read:

* :func:`read_run_json` for a file the command needs: a missing, unreadable or incomplete
  file is one line (FileNotFoundError / ValueError) naming the file and what was expected;
* :func:`read_json_or_none` for a file whose absence is an answer (a sweep's run not
  started yet, a damaged run counted as such): ``None`` instead of an error.

:func:`read_metrics` and :func:`read_history` add the checks of what a finished run's
``metrics.json`` and ``history.json`` hold; :func:`read_run_config` checks ``config.json``
with the command line's types and bounds (:func:`classbalanced.config.run_config`).

>>> import tempfile, pathlib
>>> run = pathlib.Path(tempfile.mkdtemp())
>>> _ = (run / "history.json").write_text('[{"epoch": 1, "error_percent": 50.0}]')
>>> read_history(run)
[{'epoch': 1, 'error_percent': 50.0}]
>>> read_json_or_none(run / "metrics.json") is None
True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .._validation import check_record
from ..config import TrainConfig, run_config

__all__ = [
    "CONFIG",
    "HISTORY",
    "METRICS",
    "SUBSET",
    "read_history",
    "read_json_or_none",
    "read_metrics",
    "read_run_config",
    "read_run_json",
]

CONFIG = "config.json"
SUBSET = "subset.json"
METRICS = "metrics.json"
HISTORY = "history.json"


def read_run_json(path: Path, keys: tuple[str, ...] = (), kind: type = dict) -> Any:
    """Read a run file; a missing, unreadable or incomplete file is a one-line ValueError."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: is {path.parent} a classbalanced run folder?")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {' '.join(str(exc).split())}") from None
    check_record(value, path, keys, kind)
    return value


def read_json_or_none(path: str | Path) -> Any:
    """The parsed JSON file, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_run_config(folder: Path) -> TrainConfig:
    """The run's ``config.json``, checked as the command line checks its flags."""
    path = Path(folder) / CONFIG
    return run_config(read_run_json(path), str(path))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None


def read_metrics(folder: Path, lists: tuple[str, ...] = ()) -> dict[str, Any]:
    """A finished run's ``metrics.json``, holding a list under each key of ``lists``."""
    path = Path(folder) / METRICS
    if not path.is_file():
        raise FileNotFoundError(f"no {METRICS} in {folder}: is it a finished run folder?")
    metrics = _read_json(path)
    for key in lists:
        if not isinstance(metrics, dict) or not isinstance(metrics.get(key), list):
            raise ValueError(
                f"{path} holds no {key} list: expected the {METRICS} of a training "
                "run (a file written by `evaluate --output` is not one)"
            )
    return metrics


def read_history(folder: Path) -> list[dict[str, Any]]:
    """A run's ``history.json`` (``[]`` when it has none): entries with an int ``epoch``
    and an ``error_percent``."""
    path = Path(folder) / HISTORY
    history = _read_json(path) if path.is_file() else []
    if not isinstance(history, list) or not all(
        isinstance(h, dict) and isinstance(h.get("epoch"), int) and "error_percent" in h
        for h in history
    ):
        raise ValueError(
            f"{path} is not a run history: expected a list of entries with epoch and error_percent"
        )
    return history
