"""Running a sweep's plan through a launcher, and the state of every run of a sweep folder.

:func:`run_sweep` binds the sweep file to its folder (:func:`~classbalanced.reproduce.sweep.plan_sweep`:
a changed file is refused, ``extend`` merges added runs), writes the plan and each
run's config file, hands the unfinished runs to the launcher, waits for runs other
launchers hold, then writes ``results.csv`` and ``report.md``. A finished run is
skipped, a started one resumed; a failed one is reported with the last line of its
log and the sweep goes on (exit status 1). SIGTERM stops it as Ctrl-C does.

:func:`sweep_status` describes each run: done, running on HOST since T, stalled
(its claim's heartbeat stopped), failed with its last line, or pending.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .._console import info
from ..files import atomic_write_json, atomic_write_text
from ..reproduce.report import write_report
from ..reproduce.results import read_failure, read_json, read_plan, run_state, write_results_csv
from ..reproduce.sweep import (
    MAX_RUNS,
    SweepRun,
    SweepSpec,
    default_out,
    load_sweep,
    plan_sweep,
    run_toml,
)
from ..reproduce.sweep import write_plan as _write_plan
from .claims import STALE_AFTER, check_stale_after, claim_age, claim_alive, read_claim
from .local import LocalLauncher
from .runner import Outcome, RunTask

__all__ = ["SweepResult", "run_sweep", "sweep_status", "run_states"]

Log = Callable[[str], None]


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


def run_states(out: Path, names_epochs: list[tuple[str, int]], stale_after: float) -> dict:
    """name -> done / running / stalled / resume / new, claims taken into account."""
    states = {}
    for name, epochs in names_epochs:
        state = run_state(out / "runs" / name, epochs)
        claim = read_claim(out / "runs" / f"{name}.claim")
        if state != "done" and claim is not None:
            state = "running" if claim_alive(claim, stale_after) else "stalled"
        states[name] = state
    return states


def _write_run_files(out: Path, runs: list[SweepRun]) -> None:
    for run in runs:
        path = out / "runs" / f"{run.name}.toml"
        text = run_toml(run.name, run.values, out / "runs" / run.name)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            atomic_write_text(path, text)


def run_sweep(
    sweep: str | os.PathLike | SweepSpec,
    *,
    out: str | os.PathLike | None = None,
    launcher=None,
    jobs: int = 1,
    dry_run: bool = False,
    extend: bool = False,
    report: bool = True,
    stale_after: float = STALE_AFTER,
    log: Log = info,
    poll_seconds: float = 2.0,
    max_runs: int = MAX_RUNS,
) -> SweepResult:
    """Run every unfinished run of a sweep through ``launcher`` (default: the local
    launcher with ``jobs``), then write results.csv and the report."""
    check_stale_after(stale_after)
    launcher = launcher if launcher is not None else LocalLauncher(jobs)
    spec = sweep if isinstance(sweep, SweepSpec) else load_sweep(sweep)
    spec.max_runs = max_runs
    plan = plan_sweep(spec, out if out is not None else default_out(spec), extend=extend)
    out = plan.out
    if dry_run:
        states = run_states(out, [(r.name, r.epochs) for r in plan.runs], stale_after)
        for run in plan.runs:
            print(f"{states[run.name]:<7} {run.name}")
        print(_summary(plan, states) + " [dry run: nothing started]")
        return SweepResult(out=out, runs=plan.runs)
    prepare = getattr(launcher, "prepare", None)
    if prepare is not None:
        prepare(out, log)
    plan = _write_plan(plan)  # made again under the folder's lock: another sweep may extend it
    runs = plan.runs
    _write_run_files(out, runs)
    states = run_states(out, [(r.name, r.epochs) for r in runs], stale_after)
    result = SweepResult(out=out, runs=runs)
    result.skipped = [r.name for r in runs if states[r.name] == "done"]
    log(_summary(plan, states))
    todo = [r for r in runs if states[r.name] != "done"]
    try:
        with _sigterm_as_ctrl_c():
            _dispatch(launcher, todo, out, stale_after, result, log, poll_seconds)
    finally:
        close = getattr(launcher, "close", None)
        if close is not None:
            close()
    return _finish(out, todo, result, report, log)


def _summary(plan, states: dict[str, str]) -> str:
    counts = {s: list(states.values()).count(s) for s in ("done", "resume", "new", "running")}
    return (
        f"sweep {plan.spec.name}: {len(plan.runs)} runs ({counts['done']} finished, "
        f"{counts['resume']} to resume, {counts['new']} new"
        + (f", {counts['running']} running elsewhere" if counts["running"] else "")
        + (f"; adds {len(plan.added)} run(s) to the folder" if plan.added else "")
        + f") in {plan.out}"
    )


@contextlib.contextmanager
def _sigterm_as_ctrl_c():
    """SIGTERM (``timeout``, a scheduler, ``docker stop``) stops the sweep as Ctrl-C does:
    every run saves a checkpoint and its claim is released (else the runs were killed
    and their claims held off a rerun for ``stale_after`` seconds)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _dispatch(launcher, todo, out, stale_after, result, log, poll_seconds) -> None:
    """Hand the runs to the launcher; runs another launcher holds are waited for here and
    handed out only if their claim dies."""
    session = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    probe = getattr(launcher, "probe", None)
    tasks = [
        RunTask(
            str(out),
            run.name,
            run.epochs,
            launcher.owner(session, run.name),
            stale_after=stale_after,
            heartbeat_every=min(5.0, stale_after / 4),
            probe=probe,
        )
        for run in todo
    ]
    if tasks:
        log(f"{launcher.name} launcher: {len(tasks)} run(s) to train")
    waiting_said = False
    while tasks:
        # a run another launcher holds is watched here, never handed out (a SLURM array
        # task per run and per poll, for as long as the other launcher trains it)
        states = run_states(out, [(t.name, t.epochs) for t in tasks], stale_after)
        ready = [t for t in tasks if states[t.name] not in ("done", "running")]
        outcomes = [Outcome(t.name, "skipped") for t in tasks if states[t.name] == "done"]
        outcomes += launcher.run(ready, log) if ready else []
        busy = {o.name for o in outcomes if o.status == "busy"}
        for outcome in outcomes:
            _record(outcome, result, log)
        tasks = [t for t in tasks if states[t.name] == "running" or t.name in busy]
        if tasks:
            if not waiting_said:
                log(f"waiting for {len(tasks)} run(s) another launcher is training")
                waiting_said = True
            time.sleep(poll_seconds)


def _record(outcome, result: SweepResult, log: Log) -> None:
    name = outcome.name
    if outcome.status == "busy":
        return
    if outcome.status == "skipped":
        if name not in result.skipped:
            result.skipped.append(name)
        return
    (result.resumed if outcome.resumed else result.started).append(name)
    if outcome.status == "finished":
        error = outcome.error_percent
        text = f"{error:.2f}%" if isinstance(error, (int, float)) else "?"
        log(f"finished {name} on {outcome.host}: error {text} ({outcome.minutes:.1f} min)")
        if outcome.line:
            log(f"warning: {name}: {outcome.line}")
    elif outcome.status == "failed":
        result.failed[name] = outcome.line
        log(f"FAILED {name} on {outcome.host}: {outcome.line}")
        if read_failure(result.out, name) is None:  # the worker could not record it
            record = {"host": outcome.host, "time": time.time(), "line": outcome.line}
            atomic_write_json(result.out / "runs" / f"{name}.failed", record)
    else:
        result.failed[name] = f"interrupted ({outcome.line}); rerun the sweep to resume it"
        log(f"interrupted {name} on {outcome.host}: {outcome.line}")


def _finish(out: Path, todo, result: SweepResult, report: bool, log: Log) -> SweepResult:
    write_results_csv(out)
    log(f"wrote {out / 'results.csv'}")
    if report:
        log(f"wrote {write_report(out)}")
    if result.failed:
        log(f"{len(result.failed)} of {len(todo)} run(s) failed:")
        for name, line in result.failed.items():
            log(f"  {name}: {line}")
        result.exit_code = 1
    return result


def sweep_status(out: str | os.PathLike, *, stale_after: float = STALE_AFTER) -> list[str]:
    """One line per run of the sweep folder ``out``: its state, where and since when."""
    out = Path(out)
    plan = read_plan(out)
    lines = []
    for entry in plan["runs"]:
        name, epochs = entry["name"], entry["config"]["epochs"]
        run_dir = out / entry["run_dir"]
        claim = read_claim(out / "runs" / f"{name}.claim")
        metrics = read_json(run_dir / "metrics.json")
        metrics = metrics if isinstance(metrics, dict) else {}
        failure = read_failure(out, name)
        if metrics.get("epoch") == epochs:
            error = metrics.get("error_percent")
            lines.append(f"done     {name}: error {error}% after {epochs} epochs")
        elif claim is not None:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(claim.get("started", 0)))
            where = f"{claim.get('host', '?')} (pid {claim.get('pid', '?')}) since {since}"
            age = claim_age(claim)
            state = "running " if claim_alive(claim, stale_after) else "stalled "
            lines.append(f"{state} {name}: on {where}, heartbeat {age:.0f} s ago")
        elif failure is not None:
            lines.append(f"failed   {name}: {failure.get('line', '?')}")
        elif metrics:
            lines.append(f"pending  {name}: stopped at epoch {metrics.get('epoch')} of {epochs}")
        else:
            lines.append(f"pending  {name}")
    return lines
