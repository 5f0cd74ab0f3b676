"""tune --launcher ray on the real two-node loopback Ray cluster of the sweep launcher's test
(`ray start` head and worker, separate processes, a private network namespace): this process
asks Optuna, the trials run as Ray tasks on the cluster's nodes, and the study ends as on
this machine (trials.csv, best.json with the best trial evaluated on the test set)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from tune_helpers import REPO, process_env, tune_command, write_data

sys.path.insert(0, str(REPO / "tests" / "launch"))
from test_ray import _missing

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent


def test_tune_on_a_two_node_ray_cluster(tmp_path):
    reason = _missing()
    if reason is not None:
        pytest.skip(reason)
    data, out, report = write_data(tmp_path), tmp_path / "study", tmp_path / "report.json"
    args = tune_command(data["config"], out, 2, "--pruner", "none")[4:]  # after "tune"
    scenario = [sys.executable, str(HERE / "ray_tune_scenario.py"), str(report), "--", *args]
    env = {**process_env(), "HOME": str(tmp_path)}  # no auth token a local Ray left in ~/.ray
    done = subprocess.run(["unshare", "-n", *scenario], env=env, capture_output=True, text=True,
                          timeout=1200)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads(report.read_text())
    assert facts["nodes"] == ["127.0.0.1", "127.0.0.1"]  # a head and a worker, loopback only
    assert facts["returncode"] == 0, (facts["stdout"] + facts["stderr"])[-3000:]
    assert "ray: 2 node(s) at 127.0.0.1:" in facts["stdout"] + facts["stderr"]
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["complete", "complete"]
    best = json.loads((out / "best.json").read_text())
    assert best["test"]["num_test_images"] == 24
    for name in ("trial-0000", "trial-0001"):
        assert json.loads((out / "trials" / name / "metrics.json").read_text())["epoch"] == 2
    assert not list(out.glob(".probe-*")) and not list((out / "trials").glob("*.claim*"))
