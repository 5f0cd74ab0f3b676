"""configs/sweeps/smoke.toml end to end: real `classbalanced train` subprocesses, 2 at a time."""

from __future__ import annotations

import csv
import json

import pytest
from reproduce_helpers import SWEEPS

from classbalanced.cli import main
from classbalanced.launch import runner

pytestmark = pytest.mark.slow

NAMES = [
    "digits-if10-softmax-b0.0-s0",
    "digits-if10-softmax-b0.0-s1",
    "digits-if10-focal-b0.999-g1.0-s0",
    "digits-if10-focal-b0.999-g1.0-s1",
]


def test_smoke_sweep_end_to_end(tmp_path, monkeypatch):
    out = tmp_path / "smoke"
    argv = ["sweep", "--config", str(SWEEPS / "smoke.toml"), "--jobs", "2", "--out", str(out)]
    assert main(argv) == 0

    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == NAMES
    for row in rows:
        assert row["status"] == "finished" and row["epoch"] == "2" and row["epochs"] == "2"
        metrics = json.loads((out / row["run_dir"] / "metrics.json").read_text())
        assert float(row["error_percent"]) == metrics["error_percent"]
        assert 0 <= float(row["error_percent"]) <= 100
        config = json.loads((out / row["run_dir"] / "config.json").read_text())
        assert (config["model"], config["dataset"], config["progress"]) == (
            "resnet8",
            "digits",
            False,
        )
        assert (out / "runs" / f"{row['name']}.log").read_text().count("final: error") == 1
    assert [(r["loss"], r["beta"], r["seed"]) for r in rows] == [
        ("softmax", "0.0", "0"),
        ("softmax", "0.0", "1"),
        ("focal", "0.999", "0"),
        ("focal", "0.999", "1"),
    ]

    report = (out / "report.md").read_text()
    assert "**Epochs run: 2**" in report and "NOT the paper's protocol" not in report
    assert "No published numbers for digits (Table 2 has CIFAR only)." in report  # nor a warning
    softmax = [float(r["error_percent"]) for r in rows[:2]]
    tables = [line for line in report.splitlines() if line.startswith("| ")]
    # the column's table (method, setting, ours, published, diff), then the one of balanced
    # accuracy, macro-F1 and ECE (method and three means)
    lines = {line.split("|")[1].strip(): line for line in tables if line.count("|") == 6}
    means = {line.split("|")[1].strip(): line for line in tables if line.count("|") == 5}
    assert f"{sum(softmax) / 2:.2f} ± " in lines["Softmax"] and "(2 seeds)" in lines["Softmax"]
    balanced = [float(r["balanced_accuracy"]) for r in rows[:2]]
    assert means["Softmax"].split("|")[2].strip() == f"{sum(balanced) / 2:.4f}"
    assert "focal, β=0.999, γ=1" in lines["Class-balanced (best of grid)"]
    assert "(2 seeds)" in lines["Class-balanced (best of grid)"]
    for label in (
        "Sigmoid",
        "Focal γ=0.5",
        "Focal γ=1",
        "Focal γ=2",
        "Class-balanced (paper's setting)",
    ):
        assert label in lines
    assert (out / "figures" / "digits-if10-error-curves.png").stat().st_size > 0
    assert (out / "figures" / "digits-if10-focal-heatmap.png").stat().st_size > 0

    # a second invocation finds everything finished and starts nothing
    def refuse(cmd, **_):
        raise AssertionError(f"launched {cmd}")

    monkeypatch.setattr(runner, "launch_run", refuse)
    assert main(argv) == 0
    assert main(["report", str(out)]) == 0
