"""Distributed training on one GPU: NCCL with a world of 1, gloo with 2 processes sharing the GPU.

The worker (ddp_worker.py, launched by torchrun) trains a SyncBatchNorm ResNet-8 under
DDP on the rank slices the library's InMemoryStream gives. W ranks with local batch
b must match one process with batch W * b: the gradients are averaged over ranks and
SyncBatchNorm normalises over the global batch.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from classbalanced.engine import evaluate
from classbalanced.engine.distributed import DistContext
from classbalanced.engine.streams import InMemoryStream

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("ddp_worker", HERE / "ddp_worker.py")
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)


def _torchrun(helpers, nproc: int, *args: str):
    return helpers.run_python(
        ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
         str(HERE / "ddp_worker.py"), *args],
        timeout=300,
    )  # fmt: skip


def _single_process(steps: int):
    """One process, plain batch norm, the global batch of 32."""
    device = torch.device("cuda")
    images, labels = worker.data()
    ctx = DistContext(device=device)
    stream = InMemoryStream(
        images.to(device), labels.to(device), batch_size=32, seed=1, pad=2, flip=True, ctx=ctx
    )
    net = worker.model(sync_bn=False).to(device)
    losses = worker.train_steps(net, stream, steps, device)
    counts = evaluate(
        net, images.to(device), labels.to(device), batch_size=16, num_classes=len(worker.COUNTS)
    )
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    return state, torch.tensor(losses), counts.stacked().cpu()


def _compare(result, reference, rtol: float) -> None:
    state, losses, counts = reference
    assert torch.allclose(result["losses"], losses, rtol=rtol, atol=1e-6), (
        result["losses"],
        losses,
    )
    assert result["state"].keys() == state.keys()
    for key, value in state.items():
        other = result["state"][key]
        if value.is_floating_point():
            err = float((other - value).abs().max() / value.abs().max().clamp_min(1e-6))
            assert err < rtol, f"{key} differs by {err:.3g}"
        else:
            assert torch.equal(other, value), key
    assert torch.equal(result["counts"][0], counts[0])  # every test image counted once
    assert (result["counts"][1] - counts[1]).abs().sum() <= 1  # a near-tie may flip


def test_nccl_world_of_one_equals_a_plain_process(cuda_helpers, tmp_path):
    out = tmp_path / "nccl.pt"
    _torchrun(cuda_helpers, 1, "--backend", "nccl", "--out", str(out))
    result = torch.load(out, weights_only=True)
    assert result["backend"] == "nccl" and result["world"] == 1
    _compare(result, _single_process(2), rtol=1e-5)


def test_gloo_two_processes_on_one_gpu_equal_one_process_with_the_global_batch(
    cuda_helpers, tmp_path
):
    out = tmp_path / "gloo.pt"
    _torchrun(cuda_helpers, 2, "--backend", "gloo", "--same-gpu", "--out", str(out))
    result = torch.load(out, weights_only=True)
    assert result["backend"] == "gloo" and result["world"] == 2
    # SyncBatchNorm statistics over both ranks' slices, DDP-averaged gradients
    _compare(result, _single_process(2), rtol=1e-4)


def test_trainer_under_torchrun_on_cuda(cuda_helpers, tiny_npz, tmp_path):
    """The CLI launched by torchrun (one process per GPU) on the GPU, --sync-bn accepted."""
    out = tmp_path / "run"
    proc = cuda_helpers.run_python(
        ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
         "-m", "classbalanced", "train", "--dataset", "npz", "--imbalance-factor", "10",
         "--train-data", str(tiny_npz / "train.npz"), "--test-data", str(tiny_npz / "test.npz"),
         "--model", "resnet8", "--loss", "focal", "--beta", "0.99", "--epochs", "2",
         "--batch-size", "32", "--device", "cuda", "--sync-bn", "--no-progress",
         "--eval-every", "1", "--out", str(out)],
        timeout=300,
    )  # fmt: skip
    assert "on cuda" in proc.stdout + proc.stderr  # the log line names the device
    assert "--sync-bn with one process" in proc.stderr  # converted, and said so
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]


def test_trainer_with_two_gloo_processes_on_one_gpu(cuda_helpers, tiny_npz, tmp_path):
    """``--dist-backend gloo``: two ranks share the one GPU (NCCL refuses that); rank 0 writes."""
    out = tmp_path / "run"
    proc = cuda_helpers.run_python(
        ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "classbalanced", "train", "--dataset", "npz", "--imbalance-factor", "10",
         "--train-data", str(tiny_npz / "train.npz"), "--test-data", str(tiny_npz / "test.npz"),
         "--model", "resnet8", "--loss", "focal", "--beta", "0.99", "--epochs", "2",
         "--batch-size", "32", "--device", "cuda:0", "--dist-backend", "gloo", "--no-progress",
         "--eval-every", "1", "--out", str(out)],
        timeout=300,
    )  # fmt: skip
    assert "x2" in proc.stdout + proc.stderr  # the start line: on cuda:0 x2
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[-1]["num_test_images"] == 100  # each test image once over both ranks


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs (NCCL, one rank per GPU)")
def test_nccl_two_gpus_equal_one_process_with_the_global_batch(cuda_helpers, tmp_path):
    out = tmp_path / "nccl2.pt"
    _torchrun(cuda_helpers, 2, "--backend", "nccl", "--out", str(out))
    result = torch.load(out, weights_only=True)
    _compare(result, _single_process(2), rtol=1e-4)
