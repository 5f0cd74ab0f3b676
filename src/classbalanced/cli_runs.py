"""The commands of many runs: ``sweep`` (a grid on a launcher), ``report`` (a sweep folder
against the paper), ``submit`` (one multi-node run on SLURM) and ``tune`` (a search on a
validation split): their parsers and the few
lines that call :mod:`~classbalanced.launch` and :mod:`~classbalanced.reproduce`.

:mod:`classbalanced.cli` adds these parsers to its own; the flags of the launchers are
checked against the launcher registry (a flag meant for another launcher is refused).
"""

from __future__ import annotations

import argparse
import sys

from ._console import info as _info
from .cli_flags import EXIT_USAGE, flag, parse_positive_seconds
from .launch import (
    LAUNCHER_REGISTRY,
    LaunchOptions,
    available_launchers,
    check_launch_flags,
    make_launcher,
)
from .launch.slurm import parse_slurm_options, parse_slurm_time, submit_training
from .launch.sweep import run_sweep, sweep_status
from .reproduce.report import write_report
from .tune import TuneOptions, run_tune, tune_status

__all__ = ["add_report_parser", "add_submit_parser", "add_sweep_parser", "add_tune_parser"]


def add_sweep_parser(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a grid of training runs (resumable; local, Ray or SLURM), then results.csv "
        "and report.md",
        description="Expand a sweep file ([base] + [[grid]] blocks of lists) into runs; skip "
        "finished runs, resume unfinished ones, start the others. Several launchers may work "
        "on one sweep folder at once: each run is claimed.",
    )
    p.add_argument(
        "--config", help="sweep TOML file, or a bundled grid's name (classbalanced presets)"
    )
    p.add_argument(
        "--status",
        metavar="SWEEP_DIR",
        help="print the state of every run of this sweep folder and exit",
    )
    p.add_argument(
        "--out", help="sweep folder (default: [sweep] out of the file, else runs/sweeps/NAME)"
    )
    p.add_argument(
        "--launcher",
        choices=available_launchers(),
        default="local",
        help="where runs execute: "
        + ", ".join(f"{k} ({v['description']})" for k, v in LAUNCHER_REGISTRY.info.items()),
    )
    p.add_argument(
        "--jobs",
        type=int,
        help="local: runs at a time (default 1); each gets max(1, CPUs // jobs) threads and, "
        "when CUDA_VISIBLE_DEVICES lists several GPUs, one of them in turn",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="list the runs and what would happen; start none"
    )
    p.add_argument(
        "--extend",
        action="store_true",
        help="add the runs a changed sweep file adds to an existing sweep folder",
    )
    p.add_argument("--no-report", action="store_true", help="write results.csv but not report.md")
    p.add_argument(
        "--max-runs",
        type=int,
        help="refuse a sweep file whose grid has more runs than this (default 10000)",
    )
    p.add_argument(
        "--stale-after",
        type=parse_positive_seconds,
        default=120.0,
        help="seconds without a heartbeat after which a run's claim is taken over (default 120)",
    )
    _add_cluster_arguments(p)
    p.set_defaults(func=_cmd_sweep)


def _add_cluster_arguments(p) -> None:
    p.add_argument("--gpus-per-run", type=float, help="ray / slurm: GPUs per run (default 0)")
    p.add_argument("--cpus-per-run", type=int, help="ray / slurm: CPUs per run (default 1)")
    p.add_argument(
        "--ray-address",
        help="ray: the cluster (default: $RAY_ADDRESS, else a local Ray started for the sweep)",
    )
    p.add_argument("--slurm-partition", help="slurm: partition")
    p.add_argument(
        "--slurm-time", help="slurm: time limit per task, MINUTES or [D-]HH:MM:SS (default 60)"
    )
    p.add_argument(
        "--slurm-array-parallelism",
        type=int,
        help="slurm: array tasks running at once (default 256)",
    )
    p.add_argument(
        "--slurm-option",
        action="append",
        metavar="KEY=VALUE",
        help="slurm: any other sbatch option, e.g. account=lab or qos=high (repeatable)",
    )


#: the launcher flags of ``sweep`` (``None`` unless given)
_LAUNCH_FLAGS: tuple[str, ...]
_LAUNCH_FLAGS = ("jobs", "gpus_per_run", "cpus_per_run", "ray_address", "slurm_partition")
_LAUNCH_FLAGS += ("slurm_time", "slurm_array_parallelism", "slurm_option")


def _launch_options(args):
    given = {n: getattr(args, n) for n in _LAUNCH_FLAGS if getattr(args, n) is not None}
    check_launch_flags(args.launcher, given)
    options = LaunchOptions()
    for name, value in given.items():
        if name == "slurm_time":
            value = parse_slurm_time(value)
        elif name == "slurm_option":
            name, value = "slurm_options", parse_slurm_options(value)
        setattr(options, name, value)
    return options


def _check_status_flags(args) -> None:
    """``sweep --status`` reads a folder and starts nothing: refuse the flags it would ignore."""
    given = [
        n for n in ("config", "out", "max_runs", *_LAUNCH_FLAGS) if getattr(args, n) is not None
    ]
    given += [n for n in ("dry_run", "extend", "no_report") if getattr(args, n)]
    given += ["launcher"] if args.launcher != "local" else []
    if given:
        raise ValueError(
            f"--status takes no {flag(given[0])}: it prints the state of a sweep folder and "
            "starts nothing"
        )


def _cmd_sweep(args) -> int:
    if args.status:
        _check_status_flags(args)
        for line in sweep_status(args.status, stale_after=args.stale_after):
            print(line)
        return 0
    if not args.config:
        raise ValueError("sweep needs --config FILE (or --status SWEEP_DIR)")
    try:
        launcher = make_launcher(args.launcher, _launch_options(args))
    except ImportError as exc:
        print(f"classbalanced: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    result = run_sweep(
        args.config,
        out=args.out,
        launcher=launcher,
        dry_run=args.dry_run,
        extend=args.extend,
        report=not args.no_report,
        stale_after=args.stale_after,
        **({"max_runs": args.max_runs} if args.max_runs is not None else {}),
    )
    return result.exit_code


def add_report_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write report.md of a sweep folder: results vs the paper's Table 2 / Table 3",
        description="Tables of mean ± std last-epoch error over seeds against the published "
        "numbers, a beta x gamma heat map and error curves per column.",
    )
    p.add_argument(
        "sweep_dir",
        metavar="SWEEP_DIR",
        help="folder written by `classbalanced sweep`, or one holding `classbalanced decouple` "
        "outputs (compared with Kang et al., ICLR 2020)",
    )
    p.add_argument(
        "--refresh",
        action="store_true",
        help="rebuild results.csv from the run folders first (interrupted or running sweeps)",
    )
    p.add_argument("--no-figures", action="store_true", help="tables only")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args) -> int:
    path = write_report(args.sweep_dir, refresh=args.refresh, figures=not args.no_figures)
    _info(f"wrote {path}")
    return 0


def add_submit_parser(sub) -> None:
    p = sub.add_parser(
        "submit",
        help="submit one (multi-node DDP) training run to SLURM: torchrun on every node",
        description="classbalanced submit --launcher slurm --nodes 2 --gpus-per-node 8 -- "
        "train --config configs/inat2018_cb_focal.toml --out runs/inat18",
    )
    p.add_argument("--launcher", choices=["slurm"], default="slurm", help="slurm (the default)")
    p.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
    p.add_argument(
        "--gpus-per-node", type=int, default=0, help="GPUs per node = processes per node"
    )
    p.add_argument(
        "--procs-per-node",
        type=int,
        help="processes per node (default: --gpus-per-node, at least 1; CPU runs use gloo)",
    )
    p.add_argument("--cpus-per-node", type=int, default=1, help="CPUs per node (default 1)")
    p.add_argument("--slurm-partition", help="partition")
    p.add_argument(
        "--slurm-time", default="60", help="time limit, MINUTES or [D-]HH:MM:SS (default 60)"
    )
    p.add_argument(
        "--slurm-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other sbatch option, e.g. account=lab (repeatable)",
    )
    p.add_argument("--logs", help="folder for SLURM's logs (default: runs/slurm/JOBID)")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- train ARGS...")
    p.set_defaults(func=_cmd_submit)


def _cmd_submit(args) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        return submit_training(
            command,
            nodes=args.nodes,
            gpus_per_node=args.gpus_per_node,
            procs_per_node=args.procs_per_node,
            cpus_per_node=args.cpus_per_node,
            partition=args.slurm_partition,
            time_minutes=parse_slurm_time(args.slurm_time),
            options=parse_slurm_options(args.slurm_option),
            logs=args.logs,
            wait=not args.no_wait,
            log=_info,
        )
    except ImportError as exc:
        print(f"classbalanced: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def add_tune_parser(sub) -> None:
    p = sub.add_parser(
        "tune",
        help="choose beta, gamma, the loss ... on a validation split (Optuna; local or Ray)",
        description="An Optuna study in --out: trials are run folders under OUT/trials trained "
        "on the training set less a validation split and judged on it (the test set is "
        "evaluated once, for the best trial); trial 0 is the base config with beta = 0. "
        "Re-running resumes the study; several tune processes may share one folder.",
    )
    p.add_argument("--config", help="base config (TOML or YAML) of every trial")
    p.add_argument("--out", help="the study's folder")
    p.add_argument(
        "--trials", type=int, help="the study's total number of trials, trial 0 included"
    )
    p.add_argument(
        "--search",
        nargs="+",
        metavar="KEY=DIST",
        help="uniform(a, b), loguniform(a, b), logit1m(a, b) (1 - x log-uniform: beta), "
        "int(a, b), choice(v1, v2, ...); e.g. 'beta=logit1m(0.9, 0.9999)' 'gamma=uniform(0, 2)'",
    )
    p.add_argument("--metric", default="val_balanced_accuracy", help="objective (default "
                   "val_balanced_accuracy; val_loss is minimised)")  # fmt: skip
    p.add_argument("--val-fraction", type=float, help="hold out this part of the training set")
    p.add_argument("--launcher", choices=("local", "ray"), default="local")
    p.add_argument("--jobs", type=int, default=1, help="trials at a time (default 1; local: "
                   "each trainer gets CPUs // jobs threads; ray: tasks at a time)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed (default 0)")
    p.add_argument("--pruner", choices=("median", "asha", "none"), default="median")
    p.add_argument(
        "--refit", action="store_true", help="train the best values on the full training set"
    )
    p.add_argument("--extend", action="store_true", help="continue a folder of another search")
    p.add_argument("--status", metavar="DIR", help="print the trials of a tune folder and exit")
    p.add_argument("--stale-after", type=parse_positive_seconds, default=120.0,
                   help="seconds without a heartbeat after which a trial is taken over")  # fmt: skip
    for name in ("gpus_per_run", "cpus_per_run", "ray_address"):
        p.add_argument(flag(name), type={"gpus_per_run": float, "cpus_per_run": int}.get(name, str),
                       help="ray: as for sweep")  # fmt: skip
    p.set_defaults(func=_cmd_tune)


def _cmd_tune(args) -> int:
    try:
        return _tune(args)
    except ImportError as exc:
        if "classbalanced[tune]" not in str(exc):  # a bug, not a missing extra
            raise
        print(f"classbalanced: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _tune(args) -> int:
    if args.status:
        for line in tune_status(args.status, stale_after=args.stale_after):
            print(line)
        return 0
    missing = [f for f in ("out", "trials", "search") if getattr(args, f) is None]
    if missing:
        raise ValueError(f"tune needs {flag(missing[0])} (or --status DIR)")
    launch = LaunchOptions()
    for name in ("gpus_per_run", "cpus_per_run", "ray_address"):
        if getattr(args, name) is not None:
            if args.launcher != "ray":
                raise ValueError(f"{flag(name)} does not apply to --launcher {args.launcher}")
            setattr(launch, name, getattr(args, name))
    options = TuneOptions(
        out=args.out, trials=args.trials, search=args.search, config=args.config,
        metric=args.metric, val_fraction=args.val_fraction, launcher=args.launcher,
        jobs=args.jobs, seed=args.seed, pruner=args.pruner, refit=args.refit,
        extend=args.extend, stale_after=args.stale_after, launch=launch,
    )  # fmt: skip
    best = run_tune(options, log=_info)
    if best is not None:
        test = best["test"]
        _info(
            f"best: {best['name']} ({best['metric']} {best['value']:.4f}; test accuracy "
            f"{test['accuracy']:.4f}, balanced {test['mean_class_accuracy']:.4f}); "
            f"{args.out}/report.md"
        )
    return 0
