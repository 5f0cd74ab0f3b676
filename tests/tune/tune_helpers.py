"""What the tune tests share (imported by name, like ``launch_helpers``): a tiny long-tailed
.npz data set, the base config of every trial, and the ``classbalanced tune`` command; the
processes' environment is ``process_env`` of tests/launch/launch_helpers.py."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "launch"))
from launch_helpers import REPO, process_env  # noqa: F401  (process_env: for the tune tests)

COUNTS = [24, 12, 6, 4]
SEARCH = ["beta=logit1m(0.9, 0.999)", "gamma=uniform(0, 2)", "loss=choice(softmax, focal)"]

optuna = pytest.importorskip(
    "optuna", reason="tune needs Optuna: pip install 'classbalanced[tune]'"
)


def write_data(root: Path) -> dict[str, Path]:
    """train.npz (long-tailed counts :data:`COUNTS` of 8x8 grey class templates + noise) and a
    balanced test.npz, and the base config of the trials (2 epochs of simple_cnn)."""
    rng = np.random.default_rng(0)
    templates = rng.integers(20, 236, size=(len(COUNTS), 8, 8, 1))
    for name, counts in (("train", COUNTS), ("test", [6] * len(COUNTS))):
        y = np.repeat(np.arange(len(COUNTS)), counts)
        x = np.clip(templates[y] + rng.normal(0, 30, (len(y), 8, 8, 1)), 0, 255).astype(np.uint8)
        np.savez(root / f"{name}.npz", x=x, y=y)
    config = root / "base.toml"
    config.write_text(
        f'dataset = "npz"\ntrain_data = "{root / "train.npz"}"\ntest_data = "{root / "test.npz"}"\n'
        'model = "simple_cnn"\nepochs = 2\nbatch_size = 16\neval_every = 1\npad = 1\n'
        'flip = false\ndevice = "cpu"\nkeep_checkpoints = 1\n'
    )
    return {"train": root / "train.npz", "test": root / "test.npz", "config": config}


def tune_command(config: Path, out: Path, trials: int, *extra: str) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "classbalanced",
        "tune",
        "--config",
        str(config),
        "--out",
        str(out),
    ]
    return [*cmd, "--trials", str(trials), "--val-fraction", "0.25", "--search", *SEARCH, *extra]
