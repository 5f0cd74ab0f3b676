"""The trials of a study: each an ordinary run folder ``DIR/trials/NAME``, trained by the sweep
runner (:func:`~classbalanced.launch.runner.train_run`: a claim, ``train --config
trials/NAME.toml``, ``--resume`` of a started run, its log beside it) on this machine or as a
Ray task, while this process reads the run's ``history.json`` after each evaluation epoch,
reports the validation metric to Optuna and stops the trainer when the pruner says so.

A trial's run never evaluates the test set (``evaluate_test = false``): the objective is the
validation metric of its last epoch.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import atomic_write_text
from ..launch.claims import Claim, heartbeat
from ..launch.local import threads_per_job
from ..launch.runner import Outcome, RunTask, train_run
from ..reproduce.sweep import run_toml

__all__ = [
    "TRIALS",
    "LocalExecutor",
    "RayExecutor",
    "TrialResult",
    "drive_trial",
    "trial_name",
    "trial_values",
    "write_trial_config",
]

#: the folder of the trials' run folders, under the tune folder
TRIALS = "trials"
#: seconds between reads of a running trial's history.json
POLL_SECONDS = 1.0


def trial_name(number: int) -> str:
    """``trial-0007``: the run folder of trial 7.

    >>> trial_name(7)
    'trial-0007'
    """
    return f"trial-{number:04d}"


def trial_values(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The config keys of a trial's run: the base config, the trial's values, and the test set
    left alone."""
    return {**base, **params, "evaluate_test": False}


def write_trial_config(out: Path, name: str, values: dict[str, Any]) -> Path:
    """``DIR/trials/NAME.toml`` (the run's ``train --config``)."""
    path = out / TRIALS / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = run_toml(name, values, out / TRIALS / name).replace("a classbalanced sweep", "tune")
    atomic_write_text(path, text)
    return path


class _ThreadHandle:
    """A trial trained in a thread of this process (the local launcher's way)."""

    def __init__(self, task: RunTask, log) -> None:
        self.stop_event = threading.Event()
        self._outcome: Outcome | None = None
        self._thread = threading.Thread(target=self._run, args=(task, log), daemon=True)
        self._thread.start()

    def _run(self, task: RunTask, log) -> None:
        try:
            self._outcome = train_run(task, stop=self.stop_event, log=log)
        except Exception as exc:  # train_run never raises for a failing run; anything else
            self._outcome = Outcome(task.name, "failed", line=f"{type(exc).__name__}: {exc}")

    def done(self) -> bool:
        return not self._thread.is_alive()

    def stop(self) -> None:
        self.stop_event.set()

    def outcome(self) -> Outcome:
        self._thread.join()
        if self._outcome is None:  # _run sets it, an error included
            raise RuntimeError("the trial's thread ended without an outcome")
        return self._outcome


class LocalExecutor:
    """Trials on this machine, ``jobs`` at a time, each trainer with ``CPUs // jobs`` threads."""

    name = "local"

    def __init__(self, jobs: int) -> None:
        self.threads = threads_per_job(jobs)

    def owner(self, session: str, name: str) -> str:
        return session

    def start(self, task: RunTask, log) -> _ThreadHandle:
        return _ThreadHandle(dataclasses.replace(task, threads=self.threads), log)

    def close(self) -> None:
        pass


class _RayHandle:
    def __init__(self, launcher, task: RunTask, log) -> None:
        self.launcher, self.task, self.log = launcher, task, log
        self.ref = launcher.submit(task, log)

    def done(self) -> bool:
        ready, _ = self.launcher.ray.wait([self.ref], timeout=0)
        return bool(ready)

    def stop(self) -> None:
        self.launcher.ray.cancel(self.ref)  # the task's trainer saves a checkpoint and stops

    def outcome(self) -> Outcome:
        return self.launcher.result(self.ref, self.task, self.log)


class RayExecutor:
    """Trials as Ray tasks (the sweep's :class:`~classbalanced.launch.ray_pool.RayLauncher`):
    this process asks Optuna for each trial, starts it as a task, reads its history and
    tells Optuna the result (ask / tell feeding Ray tasks)."""

    name = "ray"

    def __init__(self, launcher, out: Path, log) -> None:
        self.launcher = launcher
        launcher.prepare(out, log)
        launcher.connect(log)  # in the main thread: ray.init once, its signal handlers here
        self.probe = launcher.probe

    def owner(self, session: str, name: str) -> str:
        return self.launcher.owner(session, name)

    def start(self, task: RunTask, log) -> _RayHandle:
        return _RayHandle(self.launcher, dataclasses.replace(task, probe=self.probe), log)

    def close(self) -> None:
        self.launcher.close()


@dataclass
class TrialResult:
    """How a trial ended: ``state`` complete, pruned, failed or interrupted (left running in
    the study, resumed by the next ``tune``)."""

    state: str
    value: float | None = None
    pruned_epoch: int | None = None
    line: str = ""


def _history(run_dir: Path) -> list[dict]:
    try:
        history = json.loads((run_dir / "history.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # not written yet, or being replaced
        return []
    return history if isinstance(history, list) else []


def _new_epochs(run_dir: Path, metric: str, reported: set) -> list[tuple[int, float]]:
    """The ``(epoch, metric)`` pairs of ``history.json`` not in ``reported``."""
    pairs = [(entry.get("epoch"), entry.get(metric)) for entry in _history(run_dir)]
    return [
        (epoch, float(value))
        for epoch, value in pairs
        if epoch is not None and epoch not in reported and isinstance(value, (int, float))
    ]


def _final_value(run_dir: Path, metric: str) -> float | None:
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = metrics.get(metric) if isinstance(metrics, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def drive_trial(
    trial,
    handle,
    run_dir: Path,
    metric: str,
    epochs: int,
    claim: Claim,
    stop: threading.Event,
    log: Callable[[str], Any],
) -> TrialResult:
    """Wait for a started trial: report each new evaluation epoch's ``metric``, stop the
    trainer when the pruner says so before its last epoch (or on ``stop``: interrupted),
    keep the trial's claim."""
    reported = set(trial.storage.get_trial(trial._trial_id).intermediate_values)
    pruned_epoch = None
    while True:
        # done is read before the history, so the epochs a trainer wrote before it ended
        # (all of them, for a run that was already complete) are reported below
        done = handle.done()
        if not done:
            if not heartbeat(claim):  # taken over: another tune judged this one dead
                handle.stop()
                handle.outcome()
                return TrialResult("interrupted", line="its claim was taken over")
            if stop.is_set():
                handle.stop()
                handle.outcome()
                return TrialResult("interrupted", line="stopped")
        for epoch, value in _new_epochs(run_dir, metric, reported):
            if pruned_epoch:
                break
            trial.report(value, epoch)
            reported.add(epoch)
            if not done and epoch < epochs and trial.should_prune():  # the last epoch: complete
                pruned_epoch = epoch
                log(f"pruning {run_dir.name} at epoch {epoch} ({metric} {value:.4f})")
                handle.stop()
        if done:
            break
        time.sleep(POLL_SECONDS)
    outcome = handle.outcome()
    if pruned_epoch is not None:
        return TrialResult("pruned", pruned_epoch=pruned_epoch)
    if outcome.status in ("finished", "skipped"):
        final = _final_value(run_dir, metric)
        if final is None:
            return TrialResult("failed", line=f"its metrics.json has no {metric}")
        return TrialResult("complete", final)
    if outcome.status == "interrupted" or stop.is_set():
        return TrialResult("interrupted", line=outcome.line)
    return TrialResult("failed", line=outcome.line or outcome.status)
