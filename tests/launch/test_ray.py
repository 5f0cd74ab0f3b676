"""Ray for real: a head and a worker node (`ray start`, separate processes) on 127.0.0.1 in a
private network namespace; a sweep through --launcher ray equals the local launcher's,
and killing the worker node mid-sweep still finishes every run (resumed elsewhere)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SWEEP = """[sweep]
name = "ray"
[base]
dataset = "digits"
imbalance_factor = 10
model = "resnet8"
epochs = 3
batch_size = 64
pad = 1
flip = false
eval_every = 1
device = "cpu"
keep_checkpoints = 1
[[grid]]
loss = ["softmax", "focal"]
beta = [0.0]
seed = [0, 1]
"""


def _missing() -> str | None:
    if os.geteuid() != 0:
        return (
            "the Ray test runs the cluster in a private network namespace (unshare -n): needs root"
        )
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"missing {tool} (util-linux, iproute2)"
    if not (Path(sys.executable).parent / "ray").exists():
        return "ray is not installed next to this Python: pip install 'classbalanced[ray]'"
    return None


def _results(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    keys = ("epoch", "error_percent", "accuracy", "top5_error_percent", "per_class_accuracy")
    return {
        "metrics": {k: metrics.get(k) for k in keys},
        "history": [(h.get("epoch"), h.get("error_percent")) for h in history],
    }


def test_ray_sweep_equals_local_and_survives_a_dead_node(tmp_path):
    reason = _missing()
    if reason is not None:
        print(f"skipping the Ray test: {reason}")
        pytest.skip(reason)
    config = tmp_path / "ray.toml"
    config.write_text(SWEEP)
    out, reference, report = tmp_path / "ray", tmp_path / "local", tmp_path / "report.json"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    env.pop("RAY_ADDRESS", None)
    # the same grid on the local launcher meanwhile, one thread per run as in the Ray tasks
    local = [sys.executable, "-m", "classbalanced", "sweep", "--config", str(config)]
    local += ["--out", str(reference), "--no-report", "--jobs", str(len(os.sched_getaffinity(0)))]
    local = subprocess.Popen(local, env=env, stderr=subprocess.PIPE, text=True)
    scenario = [sys.executable, str(HERE / "ray_scenario.py"), str(config), str(out), str(report)]
    done = subprocess.run(
        ["unshare", "-n", *scenario], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert local.wait(timeout=300) == 0, local.stderr.read()[-3000:]
    facts = json.loads(report.read_text())
    assert facts["nodes"] == ["127.0.0.1", "127.0.0.1"]  # a head and a worker, loopback only
    assert facts["returncode"] == 0, facts["stderr"][-3000:]
    killed = facts["killed"]
    assert killed, facts["stderr"][-3000:]  # the worker node died while training a run
    attempts = (out / "runs" / f"{killed}.log").read_text().split("=== ")[1:]
    assert len(attempts) == 2 and "resuming" in attempts[1]  # retried elsewhere, resumed
    names = [e["name"] for e in json.loads((out / "plan.json").read_text())["runs"]]
    assert len(names) == 4
    for name in names:
        assert _results(out / "runs" / name) == _results(reference / "runs" / name), name
    left = [p.name for p in [*(out / "runs").glob("*.claim*"), *out.glob(".probe-*")]]
    assert not left, (left, facts["stderr"][-3000:])
