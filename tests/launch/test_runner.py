"""One run of a sweep: the outcome and the files a stopped, failed or finished attempt leaves."""

from __future__ import annotations

import json
import sys
import threading

from classbalanced.launch import runner
from classbalanced.launch.runner import RunTask, train_run


def _trainer_exiting(monkeypatch, code: str):
    """The trainer is a real subprocess running ``code``, already exited when
    ``launch_run`` returns (as when Ctrl-C reached it before the launcher's thread)."""
    real = runner.launch_run

    def launch(cmd, *, env, log_path):
        proc = real([sys.executable, "-c", code], env=env, log_path=log_path)
        proc.wait()
        return proc

    monkeypatch.setattr(runner, "launch_run", launch)


def test_a_run_the_sweep_stopped_is_interrupted_not_failed(tmp_path, monkeypatch):
    """Ctrl-C goes to the trainer too: it saves a checkpoint and exits 130. The run is
    interrupted (rerun to resume), never recorded as failed."""
    (tmp_path / "runs").mkdir()
    line = "classbalanced: interrupted at step 3: run again with --resume to continue"
    _trainer_exiting(monkeypatch, f"import sys; print({line!r}); sys.exit(130)")
    stop = threading.Event()
    stop.set()
    outcome = train_run(RunTask(str(tmp_path), "r", 2, "me"), stop=stop, log=lambda _: None)
    assert outcome.status == "interrupted"
    assert not (tmp_path / "runs" / "r.failed").exists()
    assert not list((tmp_path / "runs").glob("r.claim*"))  # released
    assert (tmp_path / "runs" / "r.log").read_text().strip().endswith(line)


def test_a_failing_trainer_is_recorded_as_failed(tmp_path, monkeypatch):
    (tmp_path / "runs").mkdir()
    _trainer_exiting(monkeypatch, "import sys; print('classbalanced: error: boom'); sys.exit(2)")
    outcome = train_run(RunTask(str(tmp_path), "r", 2, "me"), log=lambda _: None)
    assert (outcome.status, outcome.line) == ("failed", "classbalanced: error: boom")
    assert (tmp_path / "runs" / "r.failed").is_file()


def test_a_killed_trainer_is_failed_with_the_signal_named(tmp_path, monkeypatch):
    """The OOM killer's SIGKILL leaves a log ending in an ordinary line: the signal is said."""
    (tmp_path / "runs").mkdir()
    code = "import os, signal; print('epoch   1/2', flush=True); os.kill(os.getpid(), 9)"
    _trainer_exiting(monkeypatch, code)
    outcome = train_run(RunTask(str(tmp_path), "r", 2, "me"), log=lambda _: None)
    assert outcome.status == "failed"
    assert outcome.line == "killed by signal 9 (Killed); last line: epoch   1/2"
    assert json.loads((tmp_path / "runs" / "r.failed").read_text())["line"] == outcome.line
