"""A sweep folder's results: run states, ``plan.json``, ``results.csv`` written and read.

Imported by :mod:`.sweep` (which writes the plan), by :mod:`.report` (which reads
the results) and by the launchers; it imports neither, so imports go one way.

Files of one run ``NAME`` under ``runs/``: the run folder ``NAME/`` (written by the
trainer), ``NAME.toml`` (its config), ``NAME.log`` (its output, appended on each
attempt), ``NAME.claim.N`` while a launcher trains it (:mod:`classbalanced.launch.claims`)
and ``NAME.failed`` after a failed attempt (host, time, exit status, last log line).

Several processes share a sweep folder by design (launchers, ``report``), each run
claimed apart; the folder's files (``plan.json``, ``results.csv``, ``report.md``) are
rewritten only under the folder's writer lock (:func:`lock_shared`), held for that write.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path
from typing import Any

from ..engine.run_files import read_json_or_none as read_json
from ..files import atomic_write_text
from ..locking import FolderLock, lock_folder

__all__ = [
    "CORE_KEYS",
    "METHOD_KEYS",
    "RESULT_METRICS",
    "read_json",
    "run_state",
    "last_line",
    "read_plan",
    "read_failure",
    "collect_results",
    "write_results_csv",
    "lock_shared",
    "load_results",
    "md_cell",
]

#: keys always present in results.csv (from each run's resolved config)
CORE_KEYS = ("dataset", "imbalance_factor", "model", "loss", "beta", "gamma", "seed")
#: settings that change the method itself (the paper's runs: shuffled batches, constant
#: class-balanced weights), always in results.csv so that the report can tell
METHOD_KEYS = ("sampler", "reweight_schedule")
#: last-evaluation metrics copied from metrics.json into results.csv
RESULT_METRICS = (
    "error_percent",
    "accuracy",
    "top5_error_percent",
    "many_shot_accuracy",
    "medium_shot_accuracy",
    "few_shot_accuracy",
    "balanced_accuracy",
    "macro_f1",
    "ece",
)
_FLOATS = ("imbalance_factor", "beta", "gamma", *RESULT_METRICS)
_INTS = ("seed", "epochs", "epoch")


def run_state(run_dir: str | os.PathLike, epochs: int) -> str:
    """``"done"`` (metrics.json at ``epochs``), ``"resume"`` (a config.json, unfinished)
    or ``"new"``."""
    run_dir = Path(run_dir)
    metrics = read_json(run_dir / "metrics.json")
    if isinstance(metrics, dict) and metrics.get("epoch") == epochs:
        return "done"
    if (run_dir / "config.json").is_file():
        return "resume"
    return "new"


def last_line(log_path: Path) -> str:
    """The last non-empty line of a log (at most 300 characters)."""
    try:
        with open(log_path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 65536))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return "(no log)"
    lines = [line.strip() for line in re.split(r"[\r\n]+", tail) if line.strip()]
    return lines[-1][:300] if lines else "(empty log)"


def read_plan(out: str | os.PathLike) -> dict[str, Any]:
    """The ``plan.json`` a sweep wrote into its output folder."""
    plan = read_json(Path(out) / "plan.json")
    if not isinstance(plan, dict) or "runs" not in plan:
        raise FileNotFoundError(f"no readable plan.json in {out}: is it a sweep folder?")
    return plan


def read_failure(out: str | os.PathLike, name: str) -> dict[str, Any] | None:
    """The record of the run's last failed attempt (``runs/NAME.failed``), if any."""
    record = read_json(Path(out) / "runs" / f"{name}.failed")
    return record if isinstance(record, dict) else None


def md_cell(value: Any) -> str:
    r"""``value`` as text for a markdown table cell or heading: ``|`` escaped, line breaks
    as spaces (either would end the cell or the row early).

    >>> md_cell("runs/a|b\nc")
    'runs/a\\|b c'
    """
    return " ".join(str(value).replace("|", "\\|").splitlines())


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


def collect_results(out: str | os.PathLike) -> tuple[list[str], list[dict[str, Any]]]:
    """Header and rows of results.csv for the sweep in ``out`` (read from plan.json and
    each run's metrics.json, which holds the LAST evaluation).

    ``status``: finished (epoch == epochs), failed (its last attempt failed),
    incomplete (a run folder, unfinished), missing (never started), foreign (its
    config.json is not the plan's run: another run's copy), damaged (metrics.json whose
    error is not a percentage); the last two report no metrics.
    """
    out = Path(out)
    plan = read_plan(out)
    extra = [c for c in plan.get("columns", []) if c not in CORE_KEYS and c != "epochs"]
    extra += [k for k in METHOD_KEYS if k not in extra]
    header = ["name", "run_dir", *CORE_KEYS, *extra, "epochs", *RESULT_METRICS, "epoch", "status"]
    rows = []
    for entry in plan["runs"]:
        config = entry["config"]
        run_dir = out / entry["run_dir"]
        metrics = read_json(run_dir / "metrics.json")
        metrics = metrics if isinstance(metrics, dict) else {}
        keys = (*CORE_KEYS, *extra, "epochs")
        if _foreign(read_json(run_dir / "config.json"), config, keys):
            status, metrics = "foreign", {}
        elif metrics and not _is_percent(metrics.get("error_percent")):
            status, metrics = "damaged", {}
        elif metrics.get("epoch") == config["epochs"]:
            status = "finished"
        elif read_failure(out, entry["name"]) is not None:
            status = "failed"
        elif run_dir.exists():
            status = "incomplete"
        else:
            status = "missing"
        row = {"name": entry["name"], "run_dir": entry["run_dir"]}
        row.update({k: _csv_value(config.get(k)) for k in (*CORE_KEYS, *extra, "epochs")})
        row.update({k: _csv_value(metrics.get(k)) for k in (*RESULT_METRICS, "epoch")})
        row["status"] = status
        rows.append(row)
    return header, rows


def _foreign(run_config: Any, planned: dict[str, Any], keys) -> bool:
    """A run folder whose config.json differs from the plan's on a reported key."""
    if not isinstance(run_config, dict):
        return False
    return any(k in run_config and k in planned and run_config[k] != planned[k] for k in keys)


def _is_percent(value: Any) -> bool:
    """An error in percent: a number in [0, 100] (a string, NaN, -3 or 1e308 is not).

    >>> [_is_percent(v) for v in (12.5, None, "12", -3, 1e308, float("nan"), True)]
    [True, True, False, False, False, False, False]
    """
    if value is None:  # not evaluated yet
        return True
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 100


#: seconds a process waits for another one rewriting a shared folder's files
SHARED_WAIT = 300.0


def lock_shared(out: str | os.PathLike, command: str) -> FolderLock:
    """The writer lock of the shared folder ``out``, waited for (up to :data:`SHARED_WAIT`
    seconds: its holders rewrite a file and let go); hold it only for that rewrite."""
    return lock_folder(out, command, wait=SHARED_WAIT)


def write_results_csv(out: str | os.PathLike, *, lock: bool = True) -> Path:
    """Write ``results.csv`` in the sweep folder ``out`` (see :func:`collect_results`),
    under the folder's lock (``lock=False``: the caller holds it)."""
    if lock:
        with lock_shared(out, "results.csv"):
            return write_results_csv(out, lock=False)
    header, rows = collect_results(out)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path = Path(out) / "results.csv"
    atomic_write_text(path, buffer.getvalue())
    return path


def _parse(key: str, text: str) -> Any:
    if text == "":
        return None
    try:
        if key in _FLOATS:
            return float(text)
        if key in _INTS:
            return int(float(text))
    except ValueError:
        raise ValueError(f"results.csv: {key} must be a number, got {text!r}") from None
    return text


def load_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a ``results.csv``, numbers parsed (empty cells become None)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no results.csv at {path}: run the sweep first")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        missing = {"dataset", "imbalance_factor", "loss", "beta", "gamma", "seed"} - columns
        missing |= {"error_percent", "status", "epochs"} - columns
        if missing:
            raise ValueError(f"{path} lacks column(s): {', '.join(sorted(missing))}")
        return [{k: _parse(k, v or "") for k, v in row.items()} for row in reader]
