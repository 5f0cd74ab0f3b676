"""Helpers for the sweep / report tests: a fake launcher that 'trains' instantly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomllib

from classbalanced.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]
SWEEPS = REPO / "configs" / "sweeps"


class FakeProc:
    def __init__(self, returncode: int):
        self.returncode = returncode

    def poll(self):
        return self.returncode

    def terminate(self):
        pass

    def wait(self, timeout=None):
        return self.returncode


def write_run(run_dir: Path, cfg: dict, error: float, *, epoch: int | None = None) -> None:
    """Write what the trainer writes: config.json (resolved), history.json, metrics.json
    (last eval).

    The history holds an earlier evaluation 10 points BETTER than the final one, so a
    report that used the best epoch would be caught.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    epochs = cfg.get("epochs", 200)
    epoch = epochs if epoch is None else epoch
    resolved = TrainConfig.from_dict(cfg).resolved().to_dict()  # as the trainer saves it
    (run_dir / "config.json").write_text(json.dumps(resolved))
    history = [
        {"epoch": max(1, epoch // 2), "error_percent": max(0.0, error - 10.0)},
        {"epoch": epoch, "error_percent": error},
    ]
    if epoch == 1:
        history = history[1:]
    (run_dir / "history.json").write_text(json.dumps(history))
    metrics = {
        **{k: cfg.get(k) for k in ("dataset", "loss", "beta", "gamma", "seed", "epochs")},
        "epoch": epoch,
        "error_percent": error,
        "accuracy": 1 - error / 100,
        "top5_error_percent": error / 4,
        "many_shot_accuracy": 0.9,
        "medium_shot_accuracy": 0.6,
        "few_shot_accuracy": 0.3,
        # the metrics of imbalanced data, each a function of the error (checked by hand)
        "balanced_accuracy": 0.9 - error / 100,
        "macro_f1": 0.8 - error / 100,
        "ece": error / 1000,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


class FakeLauncher:
    """Stands in for ``classbalanced.launch.runner.launch_run``: records calls, writes a finished run folder.

    ``errors``: run name -> final error %, or a string: the run fails with that
    message as the last line of its log (exit 2).
    """

    def __init__(self, errors=None, default: float = 50.0):
        self.errors = errors or {}
        self.default = default
        self.calls: list[dict] = []

    def __call__(self, cmd, *, env, log_path):
        toml_path = Path(cmd[cmd.index("--config") + 1])
        values = tomllib.loads(toml_path.read_text())
        name = toml_path.stem
        self.calls.append({"name": name, "cmd": list(cmd), "env": dict(env), "values": values})
        outcome = self.errors.get(name, self.default)
        if isinstance(outcome, str):
            log_path.write_text(f"training ...\n{outcome}\n")
            return FakeProc(2)
        log_path.write_text("training ...\nfinal\n")
        write_run(Path(values["out"]), {"epochs": 200, **values}, outcome)
        return FakeProc(0)


def quiet(_message: str) -> None:
    pass


@pytest.fixture
def fake_launcher(monkeypatch):
    """Install a :class:`FakeLauncher` (``errors``, ``default``) and return it."""
    from classbalanced.launch import runner

    def install(errors=None, default=50.0):
        launcher = FakeLauncher(errors, default)
        monkeypatch.setattr(runner, "launch_run", launcher)
        return launcher

    return install


@pytest.fixture
def no_launch(monkeypatch):
    """Fail the test if any run is launched."""
    from classbalanced.launch import runner

    def refuse(cmd, **_):
        raise AssertionError(f"no run should be launched, got {cmd}")

    monkeypatch.setattr(runner, "launch_run", refuse)
