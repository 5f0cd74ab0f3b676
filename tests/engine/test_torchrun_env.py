"""torchrun's environment and the device read by ``setup_distributed``: bad values are one line, before any
process group or run folder exists (no rank that writes nothing, no hang, no ZeroDivisionError)."""

from __future__ import annotations

import pytest

from classbalanced.engine.distributed import setup_distributed

BAD = [
    ({"RANK": "abc", "WORLD_SIZE": "2"}, "RANK"),
    ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE"),
    ({"RANK": "0", "WORLD_SIZE": "-2"}, "WORLD_SIZE"),
    ({"RANK": "1", "WORLD_SIZE": "1"}, "RANK"),  # would train, and nothing would be written
    ({"RANK": "-1", "WORLD_SIZE": "1"}, "RANK"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK"),  # would wait for a rank that never comes
    ({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "x"}, "LOCAL_RANK"),
    ({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "-1"}, "LOCAL_RANK"),
]


@pytest.mark.parametrize(("env", "name"), BAD, ids=[" ".join(e.values()) for e, _ in BAD])
def test_a_bad_torchrun_variable_is_one_line_naming_it(monkeypatch, env, name):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=rf"^expected the torchrun variable {name} ") as info:
        setup_distributed("cpu")
    assert "\n" not in str(info.value)
    assert repr(env[name]) in str(info.value)


def test_a_world_of_one_is_rank_0_writing_without_a_process_group(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    ctx = setup_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed) == (0, 1, True, False)


@pytest.mark.parametrize("name", ["mps", "meta", "xpu", "cuda:x", "gpu"])
def test_a_device_other_than_cpu_or_cuda_is_one_line_before_anything_runs(name):
    # mps / meta / xpu are torch device types: refused here, not by a RuntimeError mid-run
    with pytest.raises(
        ValueError, match=rf"^expected a device auto, cpu, cuda or cuda:N, got '{name}'$"
    ):
        setup_distributed(name)


def test_a_gpu_index_beyond_the_gpus_names_the_index_not_a_local_rank(monkeypatch):
    import torch

    from classbalanced.engine.distributed import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(
        ValueError, match=r"^expected a GPU index below 2 \(this machine's GPUs\), got 'cuda:3'$"
    ):
        resolve_device("cuda:3", 0)
    with pytest.raises(ValueError, match="got local rank 2: lower --nproc_per_node"):
        resolve_device("cuda", 2)  # torchrun started more processes than there are GPUs


def test_a_process_group_the_caller_made_is_left_to_the_caller(tmp_path, monkeypatch):
    """A script that made its own process group and calls ``train`` keeps it afterwards."""
    import torch.distributed as dist

    from classbalanced.engine.distributed import cleanup_distributed

    # the caller's group (one process here, so that the test needs no second one)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        monkeypatch.setenv("RANK", "0")
        monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun says to the caller's processes
        ctx = setup_distributed("cpu")
        assert ctx.distributed
        cleanup_distributed(ctx)
        assert dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
