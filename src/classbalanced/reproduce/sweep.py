"""Grids of training runs: expansion, resumable execution in parallel subprocesses, results.

A sweep file (TOML) holds

* ``[base]``: TrainConfig keys shared by every run (``dataset``, ``epochs``, ``model``, ...);
* one or more ``[[grid]]`` blocks, each a table of lists of TrainConfig keys. A block
  expands to the cartesian product of its lists; the runs of all blocks are unioned
  (in file order) and duplicates (same resolved config) removed. A scalar counts as
  a one-element list; a single ``[grid]`` table is one block;
* optional ``[[include]]`` tables: single runs (scalars), added after the grid;
* an optional ``[sweep]`` table: ``name`` and ``out`` (the default output folder).

Several blocks express conditional grids simply: one block varies ``gamma`` for the
focal loss only, another varies ``beta`` for the class-balanced variants.

Output folder layout (``--out``, default ``[sweep] out`` or ``runs/sweeps/<file stem>``)::

    sweep.toml            copy of the sweep file
    plan.json             every run: name, folder, keys, resolved config
    runs/<name>/          the run folder the trainer writes (config.json, metrics.json, ...)
    runs/<name>.toml      the run's own config file (``classbalanced train --config``)
    runs/<name>.log       its stdout and stderr (appended on each attempt)
    results.csv           one row per run: keys, last-epoch metrics, status
    report.md, figures/   the comparison with the paper (:mod:`.report`)

The log and config sit next to the run folder, not inside it: the trainer refuses
to start a new run in a non-empty folder that holds no run.

Run names are built from the run's keys: dataset, imbalance factor, loss, beta,
gamma (focal only), any other key that differs between runs, seed, e.g.
``cifar10-if100-focal-b0.9999-g1.0-s0``.

A run whose ``metrics.json`` reports ``epoch == epochs`` is finished and skipped;
one with a ``config.json`` but no final metrics is resumed (``--resume``); any
other starts. A failed run is reported with the last line of its log and the
sweep goes on; the exit status is 1 if any run failed.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from ..config import TrainConfig

__all__ = [
    "SweepSpec",
    "SweepRun",
    "SweepResult",
    "load_sweep",
    "parse_sweep",
    "expand_sweep",
    "run_state",
    "run_sweep",
    "launch_run",
    "threads_per_job",
    "collect_results",
    "write_results_csv",
    "read_plan",
    "add_sweep_parser",
    "RESULT_METRICS",
]

#: keys always present in results.csv (from each run's resolved config)
CORE_KEYS = ("dataset", "imbalance_factor", "model", "loss", "beta", "gamma", "seed")
#: last-evaluation metrics copied from metrics.json into results.csv
RESULT_METRICS = (
    "error_percent",
    "accuracy",
    "top5_error_percent",
    "many_shot_accuracy",
    "medium_shot_accuracy",
    "few_shot_accuracy",
)
#: keys the sweep controls itself
_CONTROLLED = ("out", "resume", "overwrite", "force")
_TABLES = ("sweep", "base", "grid", "include")
_FIELDS = {f.name: f for f in fields(TrainConfig)}

Log = Callable[[str], None]


def _info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# sweep files
# ---------------------------------------------------------------------------


@dataclass
class SweepSpec:
    """A parsed sweep file."""

    name: str
    base: dict[str, Any]
    blocks: list[dict[str, list[Any]]]
    out: str | None = None
    source: str = "sweep"
    text: str | None = None  # the file's text, copied into the output folder


@dataclass
class SweepRun:
    """One run of a sweep: its name, the keys it was given, its resolved config."""

    name: str
    values: dict[str, Any]
    config: TrainConfig  # resolved; ``out`` is set when the output folder is known

    @property
    def epochs(self) -> int:
        return self.config.epochs


@dataclass
class SweepResult:
    """What :func:`run_sweep` did."""

    out: Path
    runs: list[SweepRun]
    skipped: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # name -> last log line
    exit_code: int = 0


def _key(name: Any, source: str) -> str:
    key = str(name).replace("-", "_")
    if key not in _FIELDS:
        raise ValueError(
            f"unknown key {name!r} in {source}; valid keys: {', '.join(sorted(_FIELDS))}"
        )
    if key in _CONTROLLED:
        raise ValueError(f"{source}: key {key!r} is set by the sweep itself; remove it")
    return key


def _canonical(key: str, value: Any) -> Any:
    """Integers given for float keys become floats (``beta = 0`` == ``beta = 0.0``)."""
    annotation = str(_FIELDS[key].type)
    if (
        "float" in annotation
        and "list" not in annotation
        and isinstance(value, int)
        and not isinstance(value, bool)
    ):
        return float(value)
    return value


def parse_sweep(data: dict[str, Any], *, name: str = "sweep", source: str = "sweep") -> SweepSpec:
    """Check a sweep document (the parsed TOML) and return its :class:`SweepSpec`."""
    if not isinstance(data, dict):
        raise TypeError(f"{source} must hold tables, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_TABLES))
    if unknown:
        raise ValueError(
            f"unknown table(s) in {source}: {', '.join(unknown)}; expected [sweep], [base], [[grid]], [[include]]"
        )
    meta = data.get("sweep", {})
    if not isinstance(meta, dict):
        raise TypeError(f"[sweep] in {source} must be a table")
    bad_meta = sorted(set(meta) - {"name", "out"})
    if bad_meta:
        raise ValueError(f"unknown key(s) in [sweep] of {source}: {', '.join(bad_meta)}")
    base_raw = data.get("base", {})
    if not isinstance(base_raw, dict):
        raise TypeError(f"[base] in {source} must be a table of config keys")
    base = {}
    for k, v in base_raw.items():
        key = _key(k, f"[base] of {source}")
        base[key] = _canonical(key, v)

    grid = data.get("grid", [])
    if isinstance(grid, dict):
        grid = [grid]
    include = data.get("include", [])
    if isinstance(include, dict):
        include = [include]
    if not isinstance(grid, list) or not isinstance(include, list):
        raise TypeError(f"[[grid]] and [[include]] in {source} must be tables")
    blocks: list[dict[str, list[Any]]] = []
    for i, block in enumerate(grid):
        where = f"[[grid]] block {i + 1} of {source}"
        if not isinstance(block, dict):
            raise TypeError(f"{where} must be a table of lists")
        parsed = {}
        for k, values in block.items():
            key = _key(k, where)
            if not isinstance(values, list):
                values = [values]
            if not values:
                raise ValueError(
                    f"{where}: {key} is an empty list (a grid needs at least one value)"
                )
            parsed[key] = [_canonical(key, v) for v in values]
        blocks.append(parsed)
    for i, run in enumerate(include):
        where = f"[[include]] {i + 1} of {source}"
        if not isinstance(run, dict):
            raise TypeError(f"{where} must be a table of keys")
        blocks.append({_key(k, where): [_canonical(_key(k, where), v)] for k, v in run.items()})
    if not blocks:
        blocks = [{}]  # a sweep of one run: the base
    out = meta.get("out")
    if out is not None and not isinstance(out, str):
        raise TypeError(f"[sweep] out in {source} must be a string")
    sweep_name = meta.get("name", name)
    if not isinstance(sweep_name, str) or not sweep_name:
        raise TypeError(f"[sweep] name in {source} must be a non-empty string")
    return SweepSpec(name=sweep_name, base=base, blocks=blocks, out=out, source=source)


def load_sweep(path: str | os.PathLike) -> SweepSpec:
    """Read and check a sweep TOML file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep file not found: {path}")
    if path.suffix.lower() != ".toml":
        raise ValueError(f"a sweep file must be TOML (.toml), got {path.name}")
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"cannot parse sweep file {path}: {exc}") from None
    spec = parse_sweep(data, name=path.stem, source=str(path))
    spec.text = text
    return spec


# ---------------------------------------------------------------------------
# expansion and names
# ---------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "x".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return "_".join(f"{k}{_fmt(v)}" for k, v in sorted(value.items()))
    return str(value)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+_-]", "_", text)


def _name(cfg: TrainConfig, extra_keys: Iterable[str], with_gamma: bool) -> str:
    parts = [cfg.dataset, f"if{cfg.imbalance_factor:g}", cfg.loss, f"b{cfg.beta!r}"]
    if with_gamma or cfg.loss == "focal":
        parts.append(f"g{cfg.gamma!r}")
    parts += [f"{key}_{_fmt(getattr(cfg, key))}" for key in extra_keys]
    parts.append(f"s{cfg.seed}")
    return _safe("-".join(parts))


def expand_sweep(spec: SweepSpec) -> list[SweepRun]:
    """Every run of the sweep, in file order, duplicates removed, with unique names.

    Each run's config is built from ``[base]`` and its grid point and resolved
    (so bad values are reported before anything runs).
    """
    seen: set[str] = set()
    points: list[tuple[dict[str, Any], TrainConfig]] = []
    for b, block in enumerate(spec.blocks):
        keys = list(block)
        for combo in itertools.product(*(block[k] for k in keys)):
            values = {**spec.base, **dict(zip(keys, combo, strict=True))}
            try:
                cfg = TrainConfig.from_dict(values, source=spec.source).resolved()
            except (ValueError, TypeError) as exc:
                point = ", ".join(f"{k}={v!r}" for k, v in zip(keys, combo, strict=True))
                raise type(exc)(f"{spec.source}: grid block {b + 1} ({point}): {exc}") from None
            signature = json.dumps({**cfg.to_dict(), "out": None}, sort_keys=True, default=str)
            if signature in seen:
                continue
            seen.add(signature)
            points.append((values, cfg))
    named = {"dataset", "imbalance_factor", "loss", "beta", "gamma", "seed"}
    user_keys = sorted({k for values, _ in points for k in values} - named)
    extra = [
        k
        for k in user_keys
        if len({json.dumps(getattr(cfg, k), sort_keys=True) for _, cfg in points}) > 1
    ]
    names = [_name(cfg, extra, with_gamma=False) for _, cfg in points]
    if len(set(names)) != len(names):  # gamma varies for a non-focal loss
        names = [_name(cfg, extra, with_gamma=True) for _, cfg in points]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{spec.source}: runs with the same folder name: {', '.join(dupes[:3])}")
    return [SweepRun(name, values, cfg) for name, (values, cfg) in zip(names, points, strict=True)]


def _varying_keys(runs: list[SweepRun]) -> list[str]:
    """Keys set by the sweep (besides the core ones) whose values differ between runs."""
    user = sorted({k for run in runs for k in run.values} - set(CORE_KEYS))
    return [
        k for k in user if len({json.dumps(getattr(r.config, k), sort_keys=True) for r in runs}) > 1
    ]


# ---------------------------------------------------------------------------
# run folders
# ---------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_state(run_dir: str | os.PathLike, epochs: int) -> str:
    """``"done"`` (metrics.json at ``epochs``), ``"resume"`` (a config.json, unfinished)
    or ``"new"``."""
    run_dir = Path(run_dir)
    metrics = _read_json(run_dir / "metrics.json")
    if isinstance(metrics, dict) and metrics.get("epoch") == epochs:
        return "done"
    if (run_dir / "config.json").is_file():
        return "resume"
    return "new"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isnan(value):
            return "nan"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items())
            + "}"
        )
    raise TypeError(f"cannot write {value!r} to TOML")


def _run_toml(run: SweepRun, run_dir: Path) -> str:
    values = {"progress": False, **run.values, "out": str(run_dir)}
    lines = [f"# run {run.name} of a classbalanced sweep (written by `classbalanced sweep`)"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in values.items() if value is not None]
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)  # never hand the trainer a file it cannot read
    return text


def threads_per_job(jobs: int, cpus: int | None = None) -> int:
    """CPU threads for each of ``jobs`` concurrent runs: ``max(1, cpus // jobs)``.

    >>> threads_per_job(2, cpus=16), threads_per_job(4, cpus=2)
    (8, 1)
    """
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, jobs))


def _visible_gpus(environ: dict[str, str]) -> list[str]:
    """The devices of CUDA_VISIBLE_DEVICES when it lists several (else none to assign)."""
    listed = [d.strip() for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed if len(listed) >= 2 else []


def launch_run(cmd: list[str], *, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start one training subprocess with stdout and stderr appended to ``log_path``.

    Returns the process (anything with ``poll()``; ``terminate()`` / ``wait()``
    are used on Ctrl-C). Tests replace this function.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as handle:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.write(f"=== {stamp}: {shlex.join(cmd)}\n".encode())
        handle.flush()
        return subprocess.Popen(
            cmd, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )


def _last_line(log_path: Path) -> str:
    try:
        with open(log_path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 65536))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return "(no log)"
    lines = [line.strip() for line in re.split(r"[\r\n]+", tail) if line.strip()]
    if not lines:
        return "(empty log)"
    return lines[-1][:300]


def _prefetch_data(runs: list[SweepRun], log: Log) -> None:
    """Download / extract each CIFAR archive once, before parallel runs race for it."""
    from ..config import CIFAR_DATASETS

    wanted = {
        (r.config.dataset, r.config.data_dir)
        for r in runs
        if r.config.dataset in CIFAR_DATASETS and r.config.download
    }
    if not wanted:
        return
    from ..data.cifar import load_cifar

    for dataset, data_dir in sorted(wanted):
        try:
            load_cifar(dataset, data_dir, download=True, progress=False)
        except Exception as exc:  # the runs will fail and report it one by one
            log(f"warning: could not prepare {dataset} in {data_dir}: {' '.join(str(exc).split())}")


# ---------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------


def _plan_dict(spec: SweepSpec, runs: list[SweepRun], out: Path) -> dict[str, Any]:
    return {
        "sweep": spec.name,
        "source": spec.source,
        "columns": _varying_keys(runs),
        "runs": [
            {
                "name": r.name,
                "run_dir": f"runs/{r.name}",
                "values": r.values,
                "config": {**r.config.to_dict(), "out": str(out / "runs" / r.name)},
            }
            for r in runs
        ],
    }


def read_plan(out: str | os.PathLike) -> dict[str, Any]:
    """The ``plan.json`` a sweep wrote into its output folder."""
    path = Path(out) / "plan.json"
    plan = _read_json(path)
    if not isinstance(plan, dict) or "runs" not in plan:
        raise FileNotFoundError(f"no readable plan.json in {out}: is it a sweep folder?")
    return plan


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


def collect_results(
    out: str | os.PathLike, *, failed: dict[str, str] | None = None
) -> tuple[list[str], list[dict[str, Any]]]:
    """Header and rows of results.csv for the sweep in ``out`` (read from plan.json and
    each run's metrics.json, which holds the LAST evaluation).

    ``status``: finished (epoch == epochs), failed (in ``failed``), incomplete (a
    run folder, unfinished), missing (never started).
    """
    out = Path(out)
    plan = read_plan(out)
    failed = failed or {}
    extra = [c for c in plan.get("columns", []) if c not in CORE_KEYS and c != "epochs"]
    header = [
        "name",
        "run_dir",
        *CORE_KEYS,
        *extra,
        "epochs",
        *RESULT_METRICS,
        "epoch",
        "status",
    ]
    rows = []
    for entry in plan["runs"]:
        config = entry["config"]
        run_dir = out / entry["run_dir"]
        metrics = _read_json(run_dir / "metrics.json")
        metrics = metrics if isinstance(metrics, dict) else {}
        epochs = config["epochs"]
        if entry["name"] in failed:
            status = "failed"
        elif metrics.get("epoch") == epochs:
            status = "finished"
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


def write_results_csv(out: str | os.PathLike, *, failed: dict[str, str] | None = None) -> Path:
    """Write ``results.csv`` in the sweep folder ``out`` (see :func:`collect_results`)."""
    from ..data.safe_io import atomic_write_text

    header, rows = collect_results(out, failed=failed)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path = Path(out) / "results.csv"
    atomic_write_text(path, buffer.getvalue())
    return path


# ---------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------


def _default_out(spec: SweepSpec) -> Path:
    return Path(spec.out) if spec.out else Path("runs") / "sweeps" / _safe(spec.name)


def run_sweep(
    sweep: str | os.PathLike | SweepSpec,
    *,
    out: str | os.PathLike | None = None,
    jobs: int = 1,
    dry_run: bool = False,
    report: bool = True,
    log: Log = _info,
    poll_seconds: float = 0.2,
) -> SweepResult:
    """Run every unfinished run of a sweep, ``jobs`` at a time, then write results.csv
    and the report. See the module docstring for the folder layout and rules."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"--jobs must be an integer >= 1, got {jobs!r}")
    spec = sweep if isinstance(sweep, SweepSpec) else load_sweep(sweep)
    runs = expand_sweep(spec)
    out = Path(out) if out is not None else _default_out(spec)
    out = out.absolute()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    for run in runs:
        run.config.out = str(out / "runs" / run.name)
    states = {run.name: run_state(out / "runs" / run.name, run.epochs) for run in runs}
    result = SweepResult(out=out, runs=runs)
    result.skipped = [r.name for r in runs if states[r.name] == "done"]
    todo = [r for r in runs if states[r.name] != "done"]
    counts = {s: sum(1 for v in states.values() if v == s) for s in ("done", "resume", "new")}
    summary = (
        f"sweep {spec.name}: {len(runs)} runs ({counts['done']} finished, "
        f"{counts['resume']} to resume, {counts['new']} new) in {out}"
    )
    if dry_run:
        for run in runs:
            print(f"{states[run.name]:<7} {run.name}")
        print(summary + " [dry run: nothing started]")
        return result

    out.mkdir(parents=True, exist_ok=True)
    from ..data.safe_io import atomic_write_json, atomic_write_text

    if spec.text is not None:
        atomic_write_text(out / "sweep.toml", spec.text)
    atomic_write_json(out / "plan.json", _plan_dict(spec, runs, out))
    log(summary)
    if jobs > 1 and todo:
        _prefetch_data(todo, log)
    _execute(todo, states, out, jobs, result, log, poll_seconds)

    write_results_csv(out, failed=result.failed)
    log(f"wrote {out / 'results.csv'}")
    if report:
        from .report import write_report

        path = write_report(out, log=log)
        log(f"wrote {path}")
    if result.failed:
        log(f"{len(result.failed)} of {len(todo)} run(s) failed:")
        for name, line in result.failed.items():
            log(f"  {name}: {line}")
        result.exit_code = 1
    return result


def _execute(
    todo: list[SweepRun],
    states: dict[str, str],
    out: Path,
    jobs: int,
    result: SweepResult,
    log: Log,
    poll_seconds: float,
) -> None:
    threads = str(threads_per_job(jobs))
    gpus = _visible_gpus(dict(os.environ))
    busy = {gpu: 0 for gpu in gpus}
    next_gpu = 0
    pending = list(todo)
    running: dict[Any, tuple[SweepRun, str | None, float]] = {}
    total = len(todo)
    done = 0
    try:
        while pending or running:
            while pending and len(running) < jobs:
                run = pending.pop(0)
                run_dir = out / "runs" / run.name
                toml_path = out / "runs" / f"{run.name}.toml"
                log_path = out / "runs" / f"{run.name}.log"
                toml_path.parent.mkdir(parents=True, exist_ok=True)
                toml_path.write_text(_run_toml(run, run_dir), encoding="utf-8")
                cmd = [sys.executable, "-m", "classbalanced", "train", "--config", str(toml_path)]
                resume = states[run.name] == "resume"
                if resume:
                    cmd.append("--resume")
                env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
                env["PYTHONUNBUFFERED"] = "1"
                gpu = None
                if gpus:  # least busy device, ties in round-robin order
                    order = sorted(
                        range(len(gpus)),
                        key=lambda i: (busy[gpus[i]], (i - next_gpu) % len(gpus)),
                    )
                    index = order[0]
                    gpu, next_gpu = gpus[index], (index + 1) % len(gpus)
                    busy[gpu] += 1
                    env["CUDA_VISIBLE_DEVICES"] = gpu
                (result.resumed if resume else result.started).append(run.name)
                where = f" on GPU {gpu}" if gpu is not None else ""
                log(f"{'resuming' if resume else 'starting'} {run.name}{where}")
                try:
                    # looked up at call time so that tests can replace it
                    proc = sys.modules[__name__].launch_run(cmd, env=env, log_path=log_path)
                except OSError as exc:
                    done += 1
                    result.failed[run.name] = f"could not start: {exc}"
                    log(f"[{done}/{total}] FAILED {run.name}: could not start: {exc}")
                    if gpu is not None:
                        busy[gpu] -= 1
                    continue
                running[proc] = (run, gpu, time.monotonic())
            finished = [(p, p.poll()) for p in list(running)]
            finished = [(p, rc) for p, rc in finished if rc is not None]
            if not finished:
                time.sleep(poll_seconds)
                continue
            for proc, rc in finished:
                run, gpu, start = running.pop(proc)
                if gpu is not None:
                    busy[gpu] -= 1
                done += 1
                minutes = (time.monotonic() - start) / 60
                log_path = out / "runs" / f"{run.name}.log"
                metrics = _read_json(out / "runs" / run.name / "metrics.json")
                if rc == 0 and isinstance(metrics, dict) and metrics.get("epoch") == run.epochs:
                    log(
                        f"[{done}/{total}] finished {run.name}: error "
                        f"{metrics.get('error_percent', float('nan')):.2f}% ({minutes:.1f} min)"
                    )
                else:
                    line = _last_line(log_path)
                    if rc == 0:
                        line = f"exited without final metrics: {line}"
                    result.failed[run.name] = line
                    log(f"[{done}/{total}] FAILED {run.name} (exit {rc}): {line}")
    except KeyboardInterrupt:
        log(
            f"interrupted: stopping {len(running)} run(s) (they save a checkpoint; rerun to resume)"
        )
        for proc in running:
            getattr(proc, "terminate", lambda: None)()
        for proc in running:
            try:
                getattr(proc, "wait", lambda timeout=None: None)(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def _cmd_sweep(args: argparse.Namespace) -> int:
    result = run_sweep(
        args.config,
        out=args.out,
        jobs=args.jobs,
        dry_run=args.dry_run,
        report=not args.no_report,
    )
    return result.exit_code


def add_sweep_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``classbalanced sweep`` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "sweep",
        help="run a grid of training runs (resumable, parallel), then results.csv and report.md",
        description="Expand a sweep file ([base] + [[grid]] blocks of lists) into runs; skip "
        "finished runs, resume unfinished ones, start the others, K at a time.",
    )
    p.add_argument("--config", required=True, help="sweep TOML file (see configs/sweeps/)")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs at a time (default 1); each gets max(1, CPUs // jobs) threads and, when "
        "CUDA_VISIBLE_DEVICES lists several GPUs, one of them in turn",
    )
    p.add_argument(
        "--out", help="sweep folder (default: [sweep] out of the file, else runs/sweeps/NAME)"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="list the runs and what would happen; start none"
    )
    p.add_argument("--no-report", action="store_true", help="write results.csv but not report.md")
    p.set_defaults(func=_cmd_sweep)
    return p
