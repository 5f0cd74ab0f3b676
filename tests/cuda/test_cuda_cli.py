"""``classbalanced train`` on CUDA through the CLI: precisions, compile, and checkpoints that
move between devices (written on the GPU, resumed on the CPU, and back)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from classbalanced.engine import latest_checkpoint, load_checkpoint


def _train_args(data, out, *extra):
    return [
        "-m", "classbalanced", "train", "--dataset", "npz",
        "--train-data", str(data / "train.npz"), "--test-data", str(data / "test.npz"),
        "--imbalance-factor", "10", "--model", "resnet8", "--loss", "focal",
        "--beta", "0.99", "--gamma", "0.5", "--batch-size", "32", "--eval-every", "1",
        "--no-progress", "--out", str(out), *extra,
    ]  # fmt: skip


def _history(out):
    return json.loads((out / "history.json").read_text())


def test_checkpoint_written_on_gpu_resumes_on_cpu_and_back(cuda_helpers, tiny_npz, tmp_path):
    out = tmp_path / "run"
    run = cuda_helpers.run_python
    run(_train_args(tiny_npz, out, "--epochs", "2", "--device", "cuda"))
    state = load_checkpoint(latest_checkpoint(out / "checkpoints"))  # map_location="cpu"
    tensors = [v for v in state["model"].values() if isinstance(v, torch.Tensor)]
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    step_gpu = state["global_step"]

    run(_train_args(tiny_npz, out, "--epochs", "4", "--device", "cpu", "--resume", "--force"))
    cpu_state = load_checkpoint(latest_checkpoint(out / "checkpoints"))
    assert cpu_state["global_step"] == 2 * step_gpu  # continued, not restarted
    assert [h["epoch"] for h in _history(out)] == [1, 2, 3, 4]

    run(_train_args(tiny_npz, out, "--epochs", "6", "--device", "cuda", "--resume", "--force"))
    history = _history(out)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(h["train_loss"]) for h in history)
    assert load_checkpoint(latest_checkpoint(out / "checkpoints"))["global_step"] == 3 * step_gpu

    # the GPU's last checkpoint evaluated on the CPU gives the accuracy the GPU run recorded
    metrics = json.loads((out / "metrics.json").read_text())
    report = tmp_path / "eval.json"
    run(["-m", "classbalanced", "evaluate", str(out), "--device", "cpu", "--output", str(report)])
    on_cpu = json.loads(report.read_text())
    assert abs(on_cpu["accuracy"] - metrics["accuracy"]) <= 1 / 100 + 1e-9  # at most 1 of 100 flips


@pytest.mark.parametrize(
    "extra",
    [
        ("--precision", "bf16"),
        ("--precision", "fp16"),
        ("--precision", "bf16", "--compile"),
        ("--precision", "fp32", "--no-channels-last"),
    ],
    ids=["bf16", "fp16", "bf16-compile", "fp32-nchw"],
)
def test_train_on_cuda_in_each_precision(cuda_helpers, tiny_npz, tmp_path, extra):
    out = tmp_path / "run"
    proc = cuda_helpers.run_python(
        _train_args(tiny_npz, out, "--epochs", "3", "--device", "cuda", *extra), timeout=600
    )
    assert "on cuda" in proc.stdout + proc.stderr  # the log line names the device
    history = _history(out)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert all(np.isfinite([h["train_loss"] for h in history]))
    config = json.loads((out / "config.json").read_text())
    assert config["precision"] == extra[1]


def test_sigterm_on_cuda_checkpoints_and_the_run_resumes(cuda_helpers, tiny_npz, tmp_path):
    out = tmp_path / "run"
    args = _train_args(tiny_npz, out, "--epochs", "400", "--device", "cuda")
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=cuda_helpers.root,
        env=cuda_helpers.subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not (out / "history.json").is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "stopped by signal" in stdout + stderr
    stopped = load_checkpoint(latest_checkpoint(out / "checkpoints"))["global_step"]
    done = len(_history(out))
    assert stopped > 0 and done >= 1
    # resume (a shorter schedule, hence --force) and finish one more epoch from the checkpoint
    more = str(done + 1)
    cuda_helpers.run_python(
        _train_args(tiny_npz, out, "--epochs", more, "--device", "cuda", "--resume", "--force")
    )
    assert [h["epoch"] for h in _history(out)][-1] == done + 1


def test_the_speed_options_on_cuda_train_like_the_plain_run(cuda_helpers, tiny_npz, tmp_path):
    """Fused SGD, cudnn.benchmark, checkpoints from a CPU copy in a background thread and one
    host read per epoch: the same run as the plain one (up to fused rounding and cuDNN's
    algorithm choice); the checkpoints resume on the CPU."""
    run = cuda_helpers.run_python
    common = ("--epochs", "2", "--device", "cuda", "--seed", "3")
    run(_train_args(tiny_npz, tmp_path / "plain", *common))
    fast = tmp_path / "fast"
    run(_train_args(tiny_npz, fast, *common, "--sgd-impl", "fused", "--cudnn-benchmark",
                    "--async-checkpoints", "--sync-every", "0"))  # fmt: skip
    a, b = _history(tmp_path / "plain"), _history(fast)
    assert [h["epoch"] for h in b] == [1, 2]
    for x, y in zip(a, b, strict=True):
        assert abs(x["train_loss"] - y["train_loss"]) <= 1e-3 * abs(x["train_loss"])
        assert abs(x["accuracy"] - y["accuracy"]) <= 2 / 100 + 1e-9
    manifest = json.loads((fast / "run.json").read_text())["files"]
    for path in (fast / "checkpoints").glob("*.pt"):  # written in the background, SHA-256 listed
        load_checkpoint(path, sha256=manifest[f"checkpoints/{path.name}"])
    run(_train_args(tiny_npz, fast, "--epochs", "3", "--device", "cpu", "--seed", "3",
                    "--sgd-impl", "fused", "--async-checkpoints", "--sync-every", "0",
                    "--resume", "--force"))  # fmt: skip
    assert [h["epoch"] for h in _history(fast)] == [1, 2, 3]


def test_cuda_graphs_through_compile_reduce_overhead(cuda_helpers, tiny_npz, tmp_path):
    """``--compile --compile-mode reduce-overhead`` (CUDA graphs) with bf16 and fused SGD
    trains (finite losses close to the eager run's) and resumes."""
    run = cuda_helpers.run_python
    common = ("--epochs", "2", "--device", "cuda", "--precision", "bf16", "--sgd-impl", "fused")
    run(_train_args(tiny_npz, tmp_path / "eager", *common), timeout=600)
    graphs = tmp_path / "graphs"
    proc = run(
        _train_args(tiny_npz, graphs, *common, "--compile", "--compile-mode", "reduce-overhead"),
        timeout=600,
    )
    assert "skipping cudagraphs" not in proc.stdout + proc.stderr  # the graphs were used
    a, b = _history(tmp_path / "eager"), _history(graphs)
    assert all(np.isfinite([h["train_loss"] for h in b]))
    assert abs(a[0]["train_loss"] - b[0]["train_loss"]) <= 0.05 * abs(a[0]["train_loss"])
    run(_train_args(tiny_npz, graphs, *common, "--compile", "--compile-mode", "reduce-overhead",
                    "--epochs", "3", "--resume", "--force"), timeout=600)  # fmt: skip
    assert [h["epoch"] for h in _history(graphs)] == [1, 2, 3]


def test_fp16_on_cuda_scales_the_loss_and_keeps_the_scale(cuda_helpers, tiny_npz, tmp_path):
    out = tmp_path / "run"
    cuda_helpers.run_python(
        _train_args(tiny_npz, out, "--epochs", "1", "--device", "cuda", "--precision", "fp16")
    )
    state = load_checkpoint(latest_checkpoint(out / "checkpoints"))
    assert state["scaler"]["scale"] > 0  # the GradScaler's state, resumed with the run
