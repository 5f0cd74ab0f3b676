"""Grids of training runs: sweep files, their expansion into named runs, the sweep folder's plan.

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

    sweep.toml            the sweep file the folder was made with (never replaced)
    sweep-extend-N.toml   files merged in later with ``--extend``
    plan.json             every run: name, folder, keys, resolved config
    .classbalanced.lock   held while a process rewrites plan.json, results.csv or report.md
    runs/<name>/          the run folder the trainer writes (config.json, metrics.json, ...)
    runs/<name>.toml      the run's own config file (``classbalanced train --config``)
    runs/<name>.log       its stdout and stderr (appended on each attempt)
    runs/<name>.claim.N   while a launcher trains it (:mod:`classbalanced.launch.claims`)
    runs/<name>.failed    after a failed attempt: host, time, exit status, last log line
    results.csv           one row per run: keys, last-epoch metrics, status (:mod:`.results`)
    report.md, figures/   the comparison with the paper (:mod:`.report`)

**Run names** are stable: dataset, imbalance factor, loss, beta, gamma (focal
loss, or a gamma other than the run would get without it), then every other key
of the run's grid point whose value differs from what the run would get without
that key (or without which it is no valid run), then the seed, e.g. ``cifar10-if100-focal-b0.9999-g1.0-s0`` or
``cifar10-if100-softmax-b0.0-lr_0.05-s0``. Adding a key or a seed to a grid
therefore never renames the runs that were already there. A name longer than 200
characters (long paths as values) keeps its first characters, then a hash of the
whole name and the seed.

**A sweep folder belongs to its sweep file** (:func:`plan_sweep`): rerunning with a
file that defines a run of the folder differently is refused with the difference;
a file that adds runs is refused unless ``extend`` (``--extend``) merges them in.
A run whose config equals one of the plan's keeps the plan's name; an added run whose
name a kept run holds is named by the keys that set it apart from it. A folder without
``plan.json`` that holds ``results.csv``, ``report.md``, anything under ``runs/`` or
another ``sweep.toml`` is no sweep folder and is refused (nothing of it is overwritten).

Running the plan is the launchers' job (:mod:`classbalanced.launch`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .._validation import shown
from ..config import TrainConfig
from ..files import atomic_write_json, atomic_write_text
from ..presets import find_config
from .results import CORE_KEYS, lock_shared, read_json

__all__ = [
    "MAX_RUNS",
    "count_runs",
    "SweepSpec",
    "SweepRun",
    "SweepPlan",
    "load_sweep",
    "parse_sweep",
    "expand_sweep",
    "plan_sweep",
    "write_plan",
    "run_toml",
    "default_out",
]

#: keys the sweep controls itself
_CONTROLLED = ("out", "resume", "overwrite", "force")
_TABLES = ("sweep", "base", "grid", "include")
_FIELDS = {f.name: f for f in fields(TrainConfig)}
#: the longest run name: longer ones keep their start and end in a hash of the whole
MAX_NAME = 200
#: the most runs a sweep file may expand to unless --max-runs raises it
MAX_RUNS = 10_000
#: keys every run name carries (gamma too for the focal loss)
_ALWAYS_NAMED = ("dataset", "imbalance_factor", "loss", "beta", "seed")

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
    max_runs: int = MAX_RUNS  # a larger grid is refused before it is expanded


@dataclass
class SweepRun:
    """One run of a sweep: its name, the keys it was given, its resolved config."""

    name: str
    values: dict[str, Any]
    config: TrainConfig  # resolved; ``out`` is set when the output folder is known

    @property
    def epochs(self) -> int:
        return self.config.epochs


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
    """Read and check a sweep TOML file, or the bundled sweep preset of that name."""
    path = find_config(path, kind="sweep")
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


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _named_keys(spec: SweepSpec, point: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """Keys of the grid point (besides the always-named ones) that change the run."""
    keys = []
    for key in sorted(point):
        if key in _ALWAYS_NAMED:
            continue
        without = {**spec.base, **{k: v for k, v in point.items() if k != key}}
        if key in spec.base:
            without[key] = spec.base[key]
        try:
            reference = TrainConfig.from_dict(without, source=spec.source).resolved()
        except (ValueError, TypeError):  # no run at all without it (npz without train_data)
            keys.append(key)
            continue
        if not _same(getattr(cfg, key), getattr(reference, key)):
            keys.append(key)
    return keys


def _name(cfg: TrainConfig, keys: list[str]) -> str:
    parts = [cfg.dataset, f"if{cfg.imbalance_factor:g}", cfg.loss, f"b{cfg.beta!r}"]
    if cfg.loss == "focal" or "gamma" in keys:
        parts.append(f"g{cfg.gamma!r}")
    parts += [f"{key}_{_fmt(getattr(cfg, key))}" for key in keys if key != "gamma"]
    parts.append(f"s{cfg.seed}")
    name = _safe("-".join(parts))
    if len(name) > MAX_NAME:  # a file name holds 255 bytes: NAME.toml, .NAME.failed.X.tmp, ...
        tail = f"-{hashlib.sha256(name.encode()).hexdigest()[:12]}-s{cfg.seed}"
        name = name[: MAX_NAME - len(tail)] + tail
    return name


def _signature(config: dict[str, Any]) -> str:
    """A run's identity: its resolved config without the output folder."""
    return json.dumps({**config, "out": None}, sort_keys=True, default=str)


def count_runs(spec: SweepSpec) -> int:
    """The grid points of the sweep (duplicates counted), without expanding them.

    >>> count_runs(SweepSpec("s", {}, [{"seed": [0, 1, 2], "beta": [0.9, 0.99]}, {}]))
    7
    """
    return sum(math.prod(len(values) for values in block.values()) for block in spec.blocks)


def _check_size(spec: SweepSpec) -> None:
    if isinstance(spec.max_runs, bool) or not isinstance(spec.max_runs, int) or spec.max_runs < 1:
        raise ValueError(f"--max-runs must be an integer >= 1, got {shown(spec.max_runs)}")
    total = count_runs(spec)
    if total > spec.max_runs:
        raise ValueError(
            f"{spec.source}: its grid has {total:.4g} runs, more than --max-runs {spec.max_runs}: "
            "expected a smaller grid (or pass a larger --max-runs)"
        )


def expand_sweep(spec: SweepSpec) -> list[SweepRun]:
    """Every run of the sweep, in file order, duplicates removed, with unique names.

    Each run's config is built from ``[base]`` and its grid point and resolved
    (so bad values are reported before anything runs). A grid of more than
    ``spec.max_runs`` points is refused before one is built (:func:`count_runs`).
    """
    _check_size(spec)
    seen: set[str] = set()
    runs: list[SweepRun] = []
    for b, block in enumerate(spec.blocks):
        keys = list(block)
        for combo in itertools.product(*(block[k] for k in keys)):
            point = dict(zip(keys, combo, strict=True))
            values = {**spec.base, **point}
            try:
                cfg = TrainConfig.from_dict(values, source=spec.source).resolved()
            except (ValueError, TypeError) as exc:
                where = ", ".join(f"{k}={v!r}" for k, v in point.items())
                raise type(exc)(f"{spec.source}: grid block {b + 1} ({where}): {exc}") from None
            signature = _signature(cfg.to_dict())
            if signature in seen:
                continue
            seen.add(signature)
            runs.append(SweepRun(_name(cfg, _named_keys(spec, point, cfg)), values, cfg))
    names = [run.name for run in runs]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{spec.source}: runs with the same folder name: {', '.join(dupes[:3])}")
    return runs


def _varying_keys(configs: list[dict[str, Any]], keys: set[str]) -> list[str]:
    """Keys set by the sweep (besides the core ones) whose values differ between runs."""
    user = sorted(keys - set(CORE_KEYS))
    return [k for k in user if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]


# ---------------------------------------------------------------------------
# the sweep folder's plan
# ---------------------------------------------------------------------------


@dataclass
class SweepPlan:
    """What a sweep file means for a sweep folder.

    ``runs``: the file's runs (names bound to the plan's), configs' ``out`` set;
    ``entries``: every run of the folder's plan after this file (old ones first);
    ``added``: names of the runs this file adds to an existing plan (``--extend``);
    ``existing``: whether the folder already had a plan; ``extend``: whether the file
    may add runs to it.
    """

    out: Path
    spec: SweepSpec
    runs: list[SweepRun]
    entries: list[dict[str, Any]]
    added: list[str]
    existing: bool
    extend: bool = False


def default_out(spec: SweepSpec) -> Path:
    """``[sweep] out`` of the file, else ``runs/sweeps/<name>``."""
    return Path(spec.out) if spec.out else Path("runs") / "sweeps" / _safe(spec.name)


def _entry(run: SweepRun, out: Path) -> dict[str, Any]:
    return {
        "name": run.name,
        "run_dir": f"runs/{run.name}",
        "values": run.values,
        "config": json.loads(
            json.dumps({**run.config.to_dict(), "out": str(out / "runs" / run.name)}, default=str)
        ),
    }


def _difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(
        k for k in set(old) | set(new) if k != "out" and not _same(old.get(k), new.get(k))
    )
    return ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:4])


def _list(names: list[str], limit: int = 3) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _refuse_foreign(out: Path, spec: SweepSpec) -> None:
    """A folder without plan.json must not hold what a sweep writes (it would be
    overwritten, or another run's folder taken for this sweep's)."""
    found = [name for name in ("results.csv", "report.md") if (out / name).exists()]
    if (out / "runs").is_dir() and any((out / "runs").iterdir()):
        found.append("runs/")
    toml = out / "sweep.toml"
    if toml.is_file() and toml.read_text(encoding="utf-8", errors="replace") != spec.text:
        found.append("another sweep.toml")
    if found:
        raise ValueError(
            f"--out {out} holds {', '.join(found)} but no plan.json: it is not a sweep folder "
            "(or lost its plan.json), and a sweep would overwrite or adopt those files; "
            "use a new or empty folder"
        )


def _bind_names(runs: list[SweepRun], old: dict[str, dict], out: Path) -> list[str]:
    """Name the runs as the plan ``old`` does: a config of the plan keeps its name; a new
    config whose name belongs to a run this file keeps (under another name) is named by
    the keys that set it apart from that run. Returns the runs the file changes."""
    by_signature = {_signature(e["config"]): name for name, e in old.items()}
    configs = [_entry(run, out)["config"] for run in runs]
    kept = {by_signature[s] for s in map(_signature, configs) if s in by_signature}
    changed = []
    for run, config in zip(runs, configs, strict=True):
        signature = _signature(config)
        if signature in by_signature:
            run.name = by_signature[signature]
        elif run.name in kept:  # e.g. lr 0.1 (the default) added where lr 0.05 was the base
            theirs = old[run.name]["config"]
            keys = [k for k in sorted(config) if k != "out" and not _same(theirs.get(k), config[k])]
            run.name = _name(run.config, [k for k in keys if k not in _ALWAYS_NAMED])
        if run.name in old and _signature(old[run.name]["config"]) != signature:
            changed.append(f"{run.name} ({_difference(old[run.name]['config'], config)})")
    names = [run.name for run in runs]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"runs with the same folder name in {out}: {', '.join(dupes[:3])}")
    return changed


def plan_sweep(spec: SweepSpec, out: str | os.PathLike, *, extend: bool = False) -> SweepPlan:
    """Bind the file's runs to the folder ``out``: refuse a file that changes a run of
    the folder's plan, and one that adds runs unless ``extend`` (module docstring)."""
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    runs = expand_sweep(spec)
    plan_path = out / "plan.json"
    if not plan_path.exists():
        _refuse_foreign(out, spec)
        for run in runs:
            run.config.out = str(out / "runs" / run.name)
        return SweepPlan(out, spec, runs, [_entry(r, out) for r in runs], [], False, extend)
    plan = read_json(plan_path)
    if not isinstance(plan, dict) or not isinstance(plan.get("runs"), list):
        raise ValueError(f"{plan_path} is unreadable: cannot tell which sweep made {out}")
    old = {entry["name"]: entry for entry in plan["runs"]}
    changed = _bind_names(runs, old, out)
    made_by = plan.get("source", "another sweep file")
    if changed:
        raise ValueError(
            f"{out} belongs to the sweep file {made_by}; {spec.source} changes "
            f"{len(changed)} of its runs: {_list(changed, 2)}. Use another --out for a changed sweep"
        )
    added = [run.name for run in runs if run.name not in old]
    if added and not extend:
        raise ValueError(
            f"{out} belongs to the sweep file {made_by}; {spec.source} adds {len(added)} "
            f"run(s) ({_list(added)}): pass --extend to add them to this folder, or use another --out"
        )
    for run in runs:
        run.config.out = str(out / "runs" / run.name)
    entries = list(plan["runs"]) + [_entry(r, out) for r in runs if r.name in added]
    return SweepPlan(out, spec, runs, entries, added, True, extend)


def write_plan(plan: SweepPlan) -> SweepPlan:
    """Create the sweep folder's files: ``sweep.toml`` (first time only) or
    ``sweep-extend-N.toml`` (runs added), and ``plan.json``.

    Under the folder's lock the plan is made again from plan.json as it is then, so
    sweeps started at once on one folder each keep the runs the others added (or are
    refused as a later start would be). Returns that plan.
    """
    plan.out.mkdir(parents=True, exist_ok=True)
    with lock_shared(plan.out, "sweep"):
        plan = plan_sweep(plan.spec, plan.out, extend=plan.extend)
        _write_plan_files(plan)
    return plan


def _write_plan_files(plan: SweepPlan) -> None:
    out = plan.out
    (out / "runs").mkdir(exist_ok=True)
    previous = read_json(out / "plan.json") if plan.existing else None
    sources = list(previous.get("sources", [previous.get("source")])) if previous else []
    if not plan.existing or plan.added:
        if plan.spec.text is not None:
            # a sweep.toml without a plan is this file's (plan_sweep checked it)
            name = f"sweep-extend-{len(sources)}.toml" if plan.existing else "sweep.toml"
            target = out / name
            atomic_write_text(target, plan.spec.text)
        sources.append(plan.spec.source)
    configs = [e["config"] for e in plan.entries]
    keys = {k for e in plan.entries for k in e.get("values", {})}
    atomic_write_json(
        out / "plan.json",
        {
            "sweep": previous["sweep"] if previous else plan.spec.name,
            "source": sources[0],
            "sources": sources,
            "columns": _varying_keys(configs, keys),
            "runs": plan.entries,
        },
    )


# ---------------------------------------------------------------------------
# one run's config file
# ---------------------------------------------------------------------------


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
        items = ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{" + items + "}"
    raise TypeError(f"cannot write {value!r} to TOML")


def run_toml(name: str, values: dict[str, Any], run_dir: str | os.PathLike) -> str:
    """The text of the run's own config file (``classbalanced train --config``)."""
    values = {"progress": False, **values, "out": str(run_dir)}
    lines = [f"# run {name} of a classbalanced sweep (written by `classbalanced sweep`)"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in values.items() if value is not None]
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)  # never hand the trainer a file it cannot read
    return text
