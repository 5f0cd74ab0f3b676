"""What the Ray and SLURM tests share (imported by name, like ``reproduce_helpers``): the
sweep both clusters run, the environment of the processes they start, the results compared.
The sweep folder tests of tests/reproduce/ start their sweeps through it too."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

#: a digits grid of 2 losses x len(seeds) runs, 3 epochs each by default (about a minute on
#: one core)
_SWEEP = """[sweep]
name = "{name}"
[base]
dataset = "digits"
imbalance_factor = 10
model = "resnet8"
epochs = {epochs}
batch_size = 64
pad = 1
flip = false
eval_every = 1
device = "cpu"
keep_checkpoints = 1
[[grid]]
loss = ["softmax", "focal"]
beta = [0.0]
seed = {seeds}
"""


def sweep_toml(name: str, seeds: list[int], epochs: int = 3) -> str:
    """The sweep file the cluster tests run (the same grid on the local launcher is the reference)."""
    return _SWEEP.format(name=name, seeds=json.dumps(seeds), epochs=epochs)


def process_env(**extra: str) -> dict[str, str]:
    """The environment of a ``python -m classbalanced`` the tests start: these sources, one
    thread, no cluster or DDP settings inherited from the caller; ``extra`` added."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1", **extra)
    for key in ("RAY_ADDRESS", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def sweep_command(config: Path, out: Path, *extra: str) -> list[str]:
    """``classbalanced sweep`` of ``config`` into ``out`` without the report."""
    cmd = [sys.executable, "-m", "classbalanced", "sweep", "--config", str(config)]
    return [*cmd, "--out", str(out), "--no-report", *extra]


def run_results(run_dir: Path) -> dict:
    """What must be equal between a run on a cluster and the same run on this machine."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    keys = ("epoch", "error_percent", "accuracy", "top5_error_percent", "per_class_accuracy")
    return {
        "metrics": {k: metrics.get(k) for k in keys},
        "history": [{k: h.get(k) for k in ("epoch", "error_percent", "loss")} for h in history],
    }
