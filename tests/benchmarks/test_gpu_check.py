"""benchmarks/gpu_check.py in its CPU quick mode: every stage's plumbing, both summaries.

The GPU check runs rarely (on a borrowed GPU, against a clock); this keeps it from
rotting between those runs: the same code paths at toy sizes on the CPU.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
STAGES = [
    "env", "tests", "loss", "train_speed", "train", "grid", "resnet50", "pipeline", "remedies",
    "train_fast",
]  # fmt: skip

pytestmark = pytest.mark.slow


def _run(out: Path, *args: str, timeout: float = 700) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), "--device", "cpu", "--quick", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def _table(md: str) -> list[list[str]]:
    lines = [line for line in md.splitlines() if line.startswith("|")]
    assert lines[0] == "| stage | status | figure | value | command |"
    assert set(lines[1]) <= set("|-")
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines[2:]]


def _figures(doc: dict, stage: str) -> dict[str, str]:
    found = next(s for s in doc["stages"] if s["name"] == stage)
    return {f["what"]: f["value"] for f in found["figures"]}


def test_quick_mode_runs_every_stage_and_writes_both_summaries(tmp_path):
    proc = _run(
        tmp_path / "out", "--budget-s", "600", "--stages", ",".join(STAGES)
    )  # about 60 s on 2 idle cores
    doc = json.loads((tmp_path / "out" / "summary.json").read_text())
    statuses = {s["name"]: s["status"] for s in doc["stages"]}
    assert list(statuses) == STAGES
    assert all(v == "ok" for v in statuses.values()), (statuses, proc.stdout[-3000:])
    assert proc.returncode == 0

    env = _figures(doc, "env")["environment"]
    assert env.startswith("torch ") and "CPUs" in env
    tests = _figures(doc, "tests")["CUDA tests (pytest -m cuda tests/cuda)"]
    skipped = int(re.fullmatch(r"(\d+) skipped", tests).group(1))  # collected, none ran here
    assert skipped >= 50
    loss = _figures(doc, "loss")
    row = loss["focal loss N=128 C=10: forward+backward ms"]
    assert "ours eager" in row and "peak memory ours / transcription" in row
    speed = _figures(doc, "train_speed")
    assert any("ours: bf16, channels_last, eager" in k for k in speed)
    train = _figures(doc, "train")
    per_epoch = next(v for k, v in train.items() if "wall time per epoch" in k)
    implied = next(v for k, v in train.items() if k.startswith("1 run: implied 2-epoch run"))
    assert float(per_epoch.split()[0]) > 0 and float(implied.split()[0]) > 0
    grid = _figures(doc, "grid")
    assert grid["2 concurrent runs: runs that reached an evaluation"] == "2 of 2"
    assert "runs of 2 epochs per hour" in grid["2 concurrent runs: grid throughput"]
    r50 = _figures(doc, "resnet50")
    assert any(v.endswith("steps)") and "images/s" in v for v in r50.values())
    tools = _figures(doc, "env")["build tools (the libjpeg extension and torch.compile need them)"]
    assert all(word in tools for word in ("C compiler", "Python.h", "jpeglib.h")), tools
    pipe = _figures(doc, "pipeline")  # the input paths side by side, no ms split
    built = pipe["libjpeg extension (partial JPEG decoding, setup.py)"]
    assert built.startswith("built: ") == ("fast path, one worker" in " ".join(pipe)), built
    assert re.search(
        r"^[\d,]+ images per CPU-second .*; \d+ workers for 3,000 images/s$",
        next(v for k, v in pipe.items() if k.startswith("fast path, one worker")),
    )
    assert re.fullmatch(r"\d+\.\d\dx", pipe["fast / old per worker, 96x64"])
    assert not any(k.startswith("stage,") for k in pipe)
    remedies = _figures(doc, "remedies")
    base = remedies[
        "resnet8 batch 32 step: fp32 channels_last eager, SGD default (the trainer's defaults)"
    ]
    assert "(1.00x the first row)" in base and "first loss vs the first row 0.0e+00" in base
    assert any("bf16 autocast" in k for k in remedies)
    assert any("(--sgd-impl fused)" in k for k in remedies)  # named as the trainer's flag
    fast = _figures(doc, "train_fast")  # the trainer with its speed options on
    assert any(k.startswith("1 run, speed options: wall time per epoch") for k in fast)
    ratio = fast["speed options: wall time per epoch against the train stage's"]
    assert re.match(r"\d+\.\d\dx as fast", ratio)

    # summary.md: one table holding every figure of summary.json, each with its command
    rows = _table((tmp_path / "out" / "summary.md").read_text())
    figures = [(f["what"], f["value"]) for s in doc["stages"] for f in s["figures"]]
    assert [(r[2], r[3]) for r in rows] == [
        (w.replace("|", "\\|"), v.replace("|", "\\|")) for w, v in figures
    ]
    assert all(re.match(r"`(TORCHDYNAMO_DISABLE=1 )?python ", r[4]) for r in rows)
    assert "classbalanced train" in next(r[4] for r in rows if r[2].startswith("1 run:"))
    assert (tmp_path / "out" / "logs.txt").stat().st_size > 0


def test_out_of_budget_stages_are_skipped_and_still_summarised(tmp_path):
    proc = _run(tmp_path / "out", "--budget-s", "4", "--stages", "env,tests,train")
    doc = json.loads((tmp_path / "out" / "summary.json").read_text())
    statuses = {s["name"]: s["status"] for s in doc["stages"]}
    assert statuses["env"] == "ok"
    assert statuses["tests"].startswith("skipped: out of budget")
    assert statuses["train"].startswith("skipped: out of budget")
    assert proc.returncode == 0  # nothing that ran failed
    assert "skipped: out of budget" in (tmp_path / "out" / "summary.md").read_text()


def test_bad_arguments_are_one_line_errors(tmp_path):
    proc = _run(tmp_path / "out", "--stages", "env,warp", timeout=60)
    assert proc.returncode == 2
    assert "expected stages from env, tests" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_without_cuda_the_cuda_check_says_so_and_runs_nothing(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: the real check runs instead")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), "--budget-s", "60"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 1
    doc = json.loads((out / "summary.json").read_text())
    statuses = [s["status"] for s in doc["stages"]]
    assert statuses[0] == "failed"
    assert all(
        s.startswith("skipped: --device cuda but torch.cuda.is_available() is False")
        for s in statuses[1:]
    )


def _gpu_check_module(monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", module)  # its dataclasses look it up
    spec.loader.exec_module(module)
    return module


def test_a_stage_that_ignores_its_stop_signal_ends_within_its_slice(tmp_path, monkeypatch):
    """The budget's worst case: a child that ignores SIGTERM, and a grandchild in a session
    of its own that keeps the output pipe open; the stage still ends by its limit."""
    gpu_check = _gpu_check_module(monkeypatch)
    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "keeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
        "start_new_session=True)\n"
        "print('keeper', keeper.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    start = time.monotonic()
    out = gpu_check.run_timed(
        [sys.executable, "-c", code], 6.0, gpu_check.LogFile(tmp_path / "log.txt"), grace_s=20.0
    )
    took = time.monotonic() - start
    keeper = int(re.search(r"keeper (\d+)", out.text).group(1))
    os.kill(keeper, signal.SIGKILL)
    assert out.timed_out and out.rc == -signal.SIGKILL
    assert took <= 6.0 + 0.5, took  # the grace (a quarter of 6 s) and the join are inside


def test_a_failed_libjpeg_build_is_said_in_the_summary(tmp_path):
    """No C compiler: the pipeline stage still measures, and its table says the extension
    is not built (data_speed.py then has no 'fast' row)."""
    copy = tmp_path / "repo"  # a clone without the built extension
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info")
    for name in ("src", "benchmarks"):
        shutil.copytree(ROOT / name, copy / name, ignore=ignore)
    shutil.copy(ROOT / "setup.py", copy / "setup.py")
    env = dict(os.environ, CC="false", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("PYTHONPATH", None)  # the copy's src/, as gpu_check puts it on the path
    proc = subprocess.run(
        [sys.executable, str(copy / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path / "out"),
         "--device", "cpu", "--quick", "--stages", "pipeline", "--budget-s", "120"],
        capture_output=True, text=True, timeout=300, env=env, cwd=copy,
    )  # fmt: skip
    doc = json.loads((tmp_path / "out" / "summary.json").read_text())
    pipe = _figures(doc, "pipeline")
    built = pipe["libjpeg extension (partial JPEG decoding, setup.py)"]
    assert built.startswith("NOT built (") and "no 'fast' row" in built, proc.stdout[-2000:]
    assert not any(k.startswith("fast path,") for k in pipe)  # measured through PIL only
    assert any(k.startswith("fast (PIL's decoder) path,") for k in pipe)
    assert "NOT built" in (tmp_path / "out" / "summary.md").read_text()
