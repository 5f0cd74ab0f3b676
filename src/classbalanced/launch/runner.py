"""One run of a sweep, wherever it executes: claim it, train it in a subprocess, record it.

:func:`train_run` is what every launcher executes for a run (in a thread of the
local launcher, in a Ray task, in a SLURM array task). It never trains a
finished run, never trains a run another live launcher holds (it answers
``"busy"``), resumes a started one (``train --resume``) and keeps the claim's
heartbeat while the trainer works. The trainer runs as ``python -m classbalanced
train --config runs/NAME.toml`` with its output appended to ``runs/NAME.log``;
each attempt starts with a line ``=== TIME HOST: COMMAND``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..files import atomic_write_json
from ..reproduce.results import last_line, read_json, run_state
from .claims import STALE_AFTER, Claim, clear_dead_claims, heartbeat, release, try_claim

__all__ = ["RunTask", "Outcome", "train_run", "launch_run", "live_run", "terminate_live_runs"]

#: trainer subprocesses alive in this process (stopped on Ctrl-C or SLURM preemption)
_LIVE: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()


@dataclass(frozen=True)
class RunTask:
    """Everything a worker needs to train one run of a sweep (plain, picklable)."""

    out: str  # the sweep folder (absolute)
    name: str
    epochs: int
    owner: str  # the claim owner: a launcher session, or a SLURM job that may be requeued
    threads: int | None = None  # OMP / MKL threads of the trainer
    gpu: str | None = None  # CUDA_VISIBLE_DEVICES for the trainer
    stale_after: float = STALE_AFTER
    heartbeat_every: float = 5.0
    probe: str | None = None  # a file of the sweep folder every node must see
    folder: str = "runs"  # the subfolder of ``out`` holding the run folders (tune: trials)


@dataclass
class Outcome:
    """What :func:`train_run` did: ``status`` is finished, failed, skipped (already
    done), busy (another launcher holds it) or interrupted."""

    name: str
    status: str
    resumed: bool = False
    line: str = ""
    host: str = field(default_factory=socket.gethostname)
    minutes: float = 0.0
    error_percent: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the trainer is killed (SIGKILL) when the process that started it dies, so a
    dead Ray worker or launcher never leaves an orphan writing into the run."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def launch_run(cmd: list[str], *, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start one training subprocess with stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as handle:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.write(f"=== {stamp} {socket.gethostname()}: {shlex.join(cmd)}\n".encode())
        handle.flush()
        return subprocess.Popen(
            cmd,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )


def terminate_live_runs(timeout: float = 120.0) -> int:
    """SIGTERM every trainer this process started (they save a checkpoint), then wait."""
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        getattr(proc, "terminate", lambda: None)()
    for proc in procs:
        try:
            getattr(proc, "wait", lambda timeout=None: None)(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return len(procs)


def _environment(task: RunTask) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if task.threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(task.threads)
    if task.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = task.gpu
    return env


def _wait(proc, claim: Claim, task: RunTask, stop: threading.Event | None) -> int | str:
    """The trainer's exit status, or "lost" / "interrupted"; keeps the heartbeat."""
    beat = time.monotonic()
    while True:
        rc = proc.poll()
        if rc is not None:  # a stop (Ctrl-C) may reach the trainer before this thread
            return "interrupted" if rc != 0 and stop is not None and stop.is_set() else rc
        if stop is not None and stop.is_set():
            proc.terminate()
            proc.wait()
            return "interrupted"
        if time.monotonic() - beat >= task.heartbeat_every:
            beat = time.monotonic()
            if not heartbeat(claim):  # judged dead and taken over: stop at once
                proc.kill()
                proc.wait()
                return "lost"
        time.sleep(0.2)


def _record_failure(runs: Path, name: str, rc, line: str) -> None:
    record = {"host": socket.gethostname(), "time": time.time(), "exit": rc, "line": line}
    atomic_write_json(runs / f"{name}.failed", record)


def train_run(
    task: RunTask, *, stop: threading.Event | None = None, log: Callable[[str], None] = print
) -> Outcome:
    """Claim and train one run (module docstring); never raises for a failing run."""
    out = Path(task.out)
    if task.probe is not None and not (out / task.probe).exists():
        where = socket.gethostname()
        return Outcome(
            task.name,
            "failed",
            line=f"the sweep folder {out} is not visible on {where}: it must live on "
            "storage every node shares (NFS, Lustre, ...), not on a local disk",
        )
    runs = out / task.folder
    run_dir = runs / task.name
    if run_state(run_dir, task.epochs) == "done":
        clear_dead_claims(runs / f"{task.name}.claim", task.owner, stale_after=task.stale_after)
        return Outcome(task.name, "skipped")
    claim = try_claim(runs / f"{task.name}.claim", task.owner, stale_after=task.stale_after)
    if claim is None:
        return Outcome(task.name, "busy")
    try:
        state = run_state(run_dir, task.epochs)  # again: it may have finished meanwhile
        if state == "done":
            return Outcome(task.name, "skipped")
        return _train_claimed(task, claim, state == "resume", stop, log)
    finally:
        release(claim)


@contextlib.contextmanager
def live_run(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """Count ``proc`` among the trainers :func:`terminate_live_runs` stops, while inside."""
    with _LIVE_LOCK:
        _LIVE.add(proc)
    try:
        yield proc
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(proc)


def _train_claimed(task, claim, resume: bool, stop, log) -> Outcome:
    runs = Path(task.out) / task.folder
    cmd = [sys.executable, "-m", "classbalanced", "train", "--config"]
    cmd += [str(runs / f"{task.name}.toml")] + (["--resume"] if resume else [])
    where = f" on GPU {task.gpu}" if task.gpu is not None else ""
    log(f"{'resuming' if resume else 'starting'} {task.name}{where}")
    log_path = runs / f"{task.name}.log"
    start = time.monotonic()
    try:
        # looked up at call time so that tests can replace it
        proc = sys.modules[__name__].launch_run(cmd, env=_environment(task), log_path=log_path)
    except OSError as exc:
        _record_failure(runs, task.name, None, f"could not start: {exc}")
        return Outcome(task.name, "failed", resume, f"could not start: {exc}")
    with live_run(proc):
        try:
            rc = _wait(proc, claim, task, stop)
        except KeyboardInterrupt:  # a cancelled Ray task: the trainer saves a checkpoint first
            proc.terminate()
            proc.wait()
            raise
    minutes = (time.monotonic() - start) / 60
    if isinstance(rc, str):  # "interrupted" or "lost"
        return Outcome(task.name, "interrupted", resume, str(rc), minutes=minutes)
    metrics = read_json(runs / task.name / "metrics.json")
    line = last_line(log_path)
    if isinstance(metrics, dict) and metrics.get("epoch") == task.epochs:
        # finished as results.csv and a rerun see it, even if something after the final
        # metrics failed (then said, not hidden)
        (runs / f"{task.name}.failed").unlink(missing_ok=True)
        error = metrics.get("error_percent")
        after = f"after its final metrics the trainer exited with status {rc}: {line}"
        return Outcome(
            task.name, "finished", resume, after if rc else "", minutes=minutes, error_percent=error
        )
    if rc == 0:
        line = f"exited without final metrics: {line}"
    elif rc < 0:  # killed (the OOM killer, a user): the log's last line says nothing of it
        line = f"killed by signal {-rc} ({signal.strsignal(-rc) or '?'}); last line: {line}"
    _record_failure(runs, task.name, rc, line)
    return Outcome(task.name, "failed", resume, line, minutes=minutes)
