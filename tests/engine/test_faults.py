"""Fault injection: SIGKILL at several points, then --resume ends exactly like an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from engine_cli import digits_args

pytestmark = pytest.mark.slow

TIMING = {"train_images_per_second"}


def _args(out: Path, *extra: str) -> list[str]:
    settings = {"loss": "focal", "beta": 0.999, "epochs": 6, "batch_size": 32}
    return [sys.executable, *digits_args(out, "--keep-checkpoints", "3", *extra, **settings)]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1")


def _metrics(out: Path) -> dict:
    data = json.loads((out / "metrics.json").read_text())
    return {k: v for k, v in data.items() if k not in TIMING}


def _history(out: Path) -> list[dict]:
    return [
        {k: v for k, v in h.items() if k not in TIMING}
        for h in json.loads((out / "history.json").read_text())
    ]


def _wait_for(predicate, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    raise AssertionError("timed out waiting for the training process")


def _checkpoints(out: Path) -> int:
    folder = out / "checkpoints"
    return len([p for p in folder.iterdir() if p.suffix == ".pt"]) if folder.is_dir() else 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "uninterrupted"
    subprocess.run(_args(out), check=True, capture_output=True, env=_env(), timeout=300)
    return out


@pytest.mark.parametrize(
    "kill_after",
    [
        "config",  # right after start: no checkpoint yet, resume starts from scratch
        "checkpoint1+",  # in the middle of epoch 2
        "checkpoint3",  # just as the third checkpoint lands
    ],
)
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, reference, kill_after):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        _args(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env()
    )
    try:
        if kill_after == "config":
            reached = _wait_for(lambda: (out / "config.json").exists(), proc)
        elif kill_after == "checkpoint1+":
            reached = _wait_for(lambda: _checkpoints(out) >= 1, proc)
            time.sleep(0.15)
        else:
            reached = _wait_for(lambda: _checkpoints(out) >= 3, proc)
        assert reached, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    # a kill can interrupt an atomic write: only its hidden temporary file is incomplete
    for path in out.rglob("*.json"):
        if not path.name.startswith("."):
            json.loads(path.read_text())
    result = subprocess.run(
        _args(out, "--resume"), capture_output=True, text=True, env=_env(), timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert not list(out.rglob(".*.tmp"))  # stale temporary files were cleaned up
    assert _metrics(out) == _metrics(reference)
    assert _history(out) == _history(reference)


def test_sigterm_checkpoints_mid_epoch_and_resume_is_exact(tmp_path, reference):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        _args(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env()
    )
    assert _wait_for(lambda: _checkpoints(out) >= 2, proc)
    time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "--resume" in stderr and "Traceback" not in stderr
    result = subprocess.run(
        _args(out, "--resume"), capture_output=True, text=True, env=_env(), timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert _metrics(out) == _metrics(reference)
