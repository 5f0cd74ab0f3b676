"""The launch-overhead options (issue 14, item 3), each against the plain path on the CPU.

``--sgd-impl foreach|fused``, ``--cudnn-benchmark``, ``--compile-mode reduce-overhead``,
``--async-checkpoints``, ``--sync-every 0`` and the evaluation batch must not change what a
run computes; fp16's ``GradScaler``, ``--sync-bn`` with one process and ``--dist-backend``
are checked here too.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from classbalanced import cli
from classbalanced.config import TrainConfig
from classbalanced.engine import loop, run_folder, trainer
from classbalanced.engine.checkpoint import load_checkpoint
from classbalanced.engine.distributed import DistContext
from classbalanced.engine.evaluate import evaluate
from classbalanced.engine.loop import Network, Optimisation, Run, Schedules, _NonFiniteWatch
from classbalanced.models import build_model
from classbalanced.optim import build_sgd, parameter_groups

pytestmark = pytest.mark.usefixtures("one_thread")


def _read(path: Path) -> dict:
    import json

    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------
# SGD implementations
# ---------------------------------------------------------------------------


def _sgd_run(impl: str, nesterov: bool, steps: int = 5) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model("resnet8", 10, in_channels=3)
    groups = parameter_groups(model, 2e-4, no_decay=[model.fc.bias])
    opt = build_sgd(groups, lr=0.1, momentum=0.9, nesterov=nesterov, impl=impl)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 3, 8, 8, generator=g)
        y = torch.randint(0, 10, (8,), generator=g)
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("impl", ["foreach", "fused"])
def test_foreach_and_fused_sgd_give_the_plain_sgd_parameters(impl, nesterov):
    plain = _sgd_run("default", nesterov)
    other = _sgd_run(impl, nesterov)
    start = build_model("resnet8", 10, in_channels=3).state_dict()
    for name, value in plain.items():
        torch.testing.assert_close(other[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert any(not torch.equal(start[k], plain[k]) for k in start)  # the steps did move them


def test_an_unknown_sgd_impl_is_one_line():
    with pytest.raises(
        ValueError, match="expected an SGD implementation in default, foreach, fused"
    ):
        build_sgd([nn.Parameter(torch.ones(1))], lr=0.1, momentum=0.9, impl="apex")


def test_fused_sgd_on_a_device_without_the_kernel_is_one_line_before_any_step(monkeypatch):
    import torch.optim.optimizer as optimizer

    monkeypatch.setattr(optimizer, "_get_fused_kernels_supported_devices", lambda: ["cuda"])
    with pytest.raises(ValueError) as info:
        build_sgd([nn.Parameter(torch.ones(1))], lr=0.1, momentum=0.9, impl="fused")
    assert str(info.value) == (
        "--sgd-impl fused needs floating-point parameters on cuda, got torch.float32 on cpu: "
        "use --sgd-impl foreach"
    )


# ---------------------------------------------------------------------------
# a run with the options on equals the plain run
# ---------------------------------------------------------------------------


def test_a_run_with_every_speed_option_equals_the_plain_run(tiny_run, engine_helpers, tmp_path):
    h = engine_helpers
    cfg = h.replace(
        tiny_run.cfg,
        out=str(tmp_path / "fast"),
        sgd_impl="fused",
        cudnn_benchmark=True,  # CUDA only: no effect here
        async_checkpoints=True,
        sync_every=0,
        eval_batch_size=1000,
    )
    returned = trainer.train(cfg, log=h.quiet)
    plain, fast = tiny_run.out, Path(cfg.out)
    got = h.history_without_timing(_read(fast / "history.json"))
    expected = h.history_without_timing(_read(plain / "history.json"))
    assert len(got) == len(expected) == 2
    for g, e in zip(got, expected, strict=True):  # fused SGD rounds its multiply-adds once
        assert g.keys() == e.keys()
        for key, value in e.items():
            same = g[key] == pytest.approx(value, rel=1e-4) if isinstance(value, float) else None
            assert same or g[key] == value, (key, g[key], value)
    assert h.without_timing(returned)["accuracy"] == tiny_run.returned["accuracy"]
    a = load_checkpoint(sorted((plain / "checkpoints").glob("*.pt"))[-1])
    b = load_checkpoint(sorted((fast / "checkpoints").glob("*.pt"))[-1])
    for name, value in a["model"].items():
        torch.testing.assert_close(b["model"][name], value, rtol=1e-4, atol=1e-5, msg=name)
    assert torch.backends.cudnn.benchmark is False  # restored after the run


# ---------------------------------------------------------------------------
# checkpoints in the background
# ---------------------------------------------------------------------------


def _run_without_clock(engine_helpers, tiny_npz, out, monkeypatch, **options):
    """A 2-epoch run whose training time reads 0 (so two runs write the same numbers);
    returns the names of the threads that wrote its checkpoints."""
    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=lambda: 0.0))
    writers: list[str] = []
    real = run_folder.write_checkpoint

    def write(*args, **kwargs):
        writers.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(run_folder, "write_checkpoint", write)
    cfg = engine_helpers.tiny_config(tiny_npz, out, epochs=2, eval_every=1, **options)
    trainer.train(cfg, log=engine_helpers.quiet)
    monkeypatch.undo()
    return writers


def test_a_cpu_copy_written_in_the_background_has_the_bytes_of_a_synchronous_write(tmp_path):
    from classbalanced.engine.checkpoint import BackgroundWriter, cpu_copy, write_checkpoint
    from classbalanced.engine.state import TrainState

    model = build_model("resnet8", 10, in_channels=3).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()  # momentum buffers in the optimiser state
    cfg = TrainConfig()
    live = TrainState(step=7, history=[{"epoch": 1}]).to_checkpoint(model, opt, cfg, ["a"])
    snapshot, writer = cpu_copy(live), BackgroundWriter()
    writer.submit(lambda: write_checkpoint(tmp_path / "background.pt", 7, snapshot))
    before = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():  # training goes on while the copy is written
        for p in model.parameters():
            p.add_(1.0)
    writer.wait()
    with torch.no_grad():
        for p, value in zip(model.parameters(), before, strict=True):
            p.copy_(value)
    expected = TrainState(step=7, history=[{"epoch": 1}]).to_checkpoint(model, opt, cfg, ["a"])
    write_checkpoint(tmp_path / "sync.pt", 7, expected)
    assert (tmp_path / "background.pt").read_bytes() == (tmp_path / "sync.pt").read_bytes()


def test_background_checkpoints_hold_what_synchronous_ones_hold(
    engine_helpers, tiny_npz, tmp_path, monkeypatch
):
    sync, background = tmp_path / "sync", tmp_path / "background"
    main = threading.current_thread().name
    assert _run_without_clock(engine_helpers, tiny_npz, sync, monkeypatch) == [main, main]
    names = _run_without_clock(
        engine_helpers, tiny_npz, background, monkeypatch, async_checkpoints=True
    )
    assert names == ["checkpoint-writer"] * 2  # off the training thread
    for name in ("metrics.json", "history.json", "subset.json"):
        assert (background / name).read_bytes() == (sync / name).read_bytes(), name
    manifest = _read(background / "run.json")
    listed = [{k for k in _read(f / "run.json")["files"] if not k.startswith("tensorboard/")}
              for f in (sync, background)]  # fmt: skip
    assert listed[0] == listed[1]
    checkpoints = sorted(p.name for p in (sync / "checkpoints").glob("*.pt"))
    assert len(checkpoints) == 2
    for name in checkpoints:  # the SHA-256 recorded; the same content but for the config
        b = load_checkpoint(
            background / "checkpoints" / name, sha256=manifest["files"][f"checkpoints/{name}"]
        )
        a = load_checkpoint(sync / "checkpoints" / name)
        differ = {k for k in a["config"] if a["config"][k] != b["config"][k]}
        assert differ == {"out", "async_checkpoints"}
        a.pop("config"), b.pop("config")
        assert _same(a, b)


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_a_failed_background_checkpoint_stops_the_run_at_the_next_one(
    engine_helpers, tiny_npz, tmp_path, monkeypatch, capsys
):
    """The first checkpoint (epoch 2) fails in the writer thread: the run stops with one
    line at the next evaluation (epoch 4), before writing its metrics; every file is valid
    and a resume finishes the run."""
    import errno

    real = run_folder.write_checkpoint
    calls = []

    def full_disk(path, step, state):
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, step, state)

    monkeypatch.setattr(run_folder, "write_checkpoint", full_disk)
    out = tmp_path / "run"
    args = _cli_args(engine_helpers, tiny_npz, out, "--async-checkpoints")
    code = cli.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and calls == ["checkpoint-writer"]
    assert err[-1].startswith("classbalanced: error: cannot write checkpoints/checkpoint-")
    assert "No space left on device; newest valid checkpoint: none" in err[-1]
    assert [h["epoch"] for h in _read(out / "history.json")] == [2]  # stopped before epoch 4's
    assert not list(out.rglob("*.tmp"))
    monkeypatch.undo()
    assert cli.main([*args, "--resume"]) == 0
    assert _read(out / "metrics.json")["epoch"] == 4


def test_a_sigterm_during_the_last_background_checkpoint_waits_for_it(
    engine_helpers, tiny_npz, tmp_path, monkeypatch
):
    """The run's last checkpoint is written in the background while the run waits for it:
    a SIGTERM then (here raised by the writer itself, 0.3 s into the write) must find the
    run's handler, not the default one that would kill the process mid-write."""
    import signal
    import time

    real, outside = run_folder.write_checkpoint, []

    def slow_write(path, step, state):
        time.sleep(0.3)  # the main thread has long reached its wait for this write
        signal.raise_signal(signal.SIGTERM)
        return real(path, step, state)

    previous = signal.signal(signal.SIGTERM, lambda *_: outside.append(1))
    try:
        monkeypatch.setattr(run_folder, "write_checkpoint", slow_write)
        cfg = engine_helpers.tiny_config(
            tiny_npz,
            tmp_path / "run",
            epochs=2,
            warmup_epochs=1,
            async_checkpoints=True,
            model="simple_cnn",
        )
        trainer.train(cfg, log=engine_helpers.quiet)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert outside == []  # the run's own handler took it (the process would have died)
    (last,) = (tmp_path / "run" / "checkpoints").glob("*.pt")  # written whole, and listed
    sha = _read(tmp_path / "run" / "run.json")["files"][f"checkpoints/{last.name}"]
    assert load_checkpoint(last, sha256=sha)["history"][-1]["epoch"] == 2


def _cli_args(engine_helpers, data, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--dataset", "npz", "--train-data", str(data.train), "--test-data",
        str(data.test), "--imbalance-factor", "10", "--model", "resnet8", "--epochs", "4",
        "--batch-size", "32", "--warmup-epochs", "2", "--eval-every", "2", "--eval-batch-size",
        "40", "--device", "cpu", "--no-progress", "--out", str(out), *extra,
    ]  # fmt: skip


# ---------------------------------------------------------------------------
# compile with static shapes
# ---------------------------------------------------------------------------


def test_compile_mode_reduce_overhead_sees_one_batch_shape(
    tiny_run, engine_helpers, tmp_path, monkeypatch
):
    """Every training step has a full batch (the stream drops an epoch's remainder: 150
    images, batch 32), so the compiled forward is traced once and never recompiled; the
    graph computes the plain run's results. (A counting backend stands in for Inductor:
    the CUDA graphs themselves are a CUDA path, tests/cuda.)"""
    from torch._dynamo.testing import CompileCounter

    counter, modes = CompileCounter(), []
    real_compile = torch.compile

    def compile_(model, mode=None, **kwargs):
        modes.append(mode)
        return real_compile(model, backend=counter)

    monkeypatch.setattr(torch, "compile", compile_)
    torch._dynamo.reset()
    cfg = engine_helpers.replace(
        tiny_run.cfg, out=str(tmp_path / "compiled"), compile=True, compile_mode="reduce-overhead"
    )
    returned = trainer.train(cfg, log=engine_helpers.quiet)
    torch._dynamo.reset()
    assert modes == ["reduce-overhead"]
    assert counter.frame_count == 1  # one graph for all 4 epochs x 4 steps
    assert returned["accuracy"] == tiny_run.returned["accuracy"]
    assert returned["train_loss"] == pytest.approx(tiny_run.returned["train_loss"], rel=1e-5)


def test_a_compile_mode_without_compile_is_refused():
    with pytest.raises(ValueError, match="compile_mode reduce-overhead needs --compile"):
        TrainConfig(dataset="digits", compile_mode="reduce-overhead").resolved()


@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
def test_cuda_graphs_with_gradient_accumulation_are_refused(mode):
    with pytest.raises(
        ValueError, match=f"compile_mode {mode} \\(CUDA graphs\\) cannot accumulate"
    ):
        TrainConfig(
            dataset="digits", compile=True, compile_mode=mode, accumulate_steps=2
        ).resolved()
    for ok in ("default", "max-autotune-no-cudagraphs"):
        TrainConfig(dataset="digits", compile=True, compile_mode=ok, accumulate_steps=2).resolved()


def test_float_worker_output_with_device_decoding_is_refused():
    with pytest.raises(ValueError, match="expected worker_output = uint8, got float"):
        TrainConfig(dataset="inat2018", image_decode="device", worker_output="float").resolved()
    TrainConfig(dataset="inat2018", image_decode="device").resolved()


# ---------------------------------------------------------------------------
# evaluation batch
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_evaluation_batch_does_not_change_the_counts(tiny_npz, precision):
    torch.manual_seed(0)
    model = build_model("resnet8", 10, in_channels=3).to(memory_format=torch.channels_last)
    images = torch.from_numpy(tiny_npz.test_x).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(tiny_npz.test_y)
    counts = [
        evaluate(model, images, labels, batch_size=b, precision=precision, channels_last=True)
        for b in (7, 40, 1000)  # a partial last batch, the tests' batch, one batch
    ]
    assert int(counts[0].total.sum()) == len(labels)  # every test image counted once
    for other in counts[1:]:
        assert torch.equal(other.stacked(), counts[0].stacked())


# ---------------------------------------------------------------------------
# fp16: loss scaling
# ---------------------------------------------------------------------------


def _linear_run(precision: str, loss_scale: float) -> Run:
    """A :class:`Run` around ``nn.Linear`` with ``loss = scale * sum(logits)``."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    cfg = TrainConfig(precision=precision, channels_last=False, device="cpu")
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.0)
    scaler = torch.amp.GradScaler("cpu") if precision == "fp16" else None
    return Run(
        cfg=cfg,
        ctx=DistContext(),
        data=None,
        folder=None,
        network=Network(model, model, model),
        loss_fn=lambda logits, y: logits.float().sum() * loss_scale,
        optim=Optimisation(optimizer, [], scaler),
        schedules=Schedules(lambda s: 1.0, 1),
        log=lambda _: None,
    )


def _one_step(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on fixed inputs; returns (weight change, loss)."""
    before = run.network.model.weight.detach().clone()
    batch = iter([(torch.ones(2, 4), torch.zeros(2, dtype=torch.long))])
    loss = run.forward_backward(batch, lr=1.0)
    run.optimizer_step(loss, None, 0, 0)
    return run.network.model.weight.detach() - before, loss


def test_fp16_scales_the_loss_so_small_gradients_survive():
    """Gradients of 2e-9 underflow to 0 in fp16; the GradScaler's scale (65536) keeps them,
    so the fp16 step has the fp32 step's gradients (unscaled before the update)."""
    fp32, fp16 = _linear_run("fp32", 1e-9), _linear_run("fp16", 1e-9)
    _one_step(fp32)
    _one_step(fp16)
    expected = fp32.network.model.weight.grad
    assert expected.abs().min() > 1e-9
    torch.testing.assert_close(fp16.network.model.weight.grad, expected, rtol=2e-3, atol=0)


def test_an_fp16_overflow_is_skipped_by_the_scaler_not_taken_for_a_nonfinite_loss():
    """Gradients of 1.5 times the initial scale (65536) overflow fp16: the scaler skips that
    step and halves its scale; the loss is finite, so no non-finite loss is reported; at the
    halved scale the next step goes through."""
    run = _linear_run("fp16", 0.75)
    watch = _NonFiniteWatch(torch.device("cpu"), 0)
    change, loss = _one_step(run)
    watch.update(loss)
    watch.check(0, run)  # would raise NonFiniteLoss for a non-finite loss
    assert torch.isfinite(loss) and not change.any()
    assert run.optim.scaler.get_scale() == 65536.0 / 2
    change, _ = _one_step(run)
    assert change.all()


def test_the_scale_travels_with_the_checkpoint():
    from classbalanced.engine.state import TrainState

    run = _linear_run("fp16", 1.0)
    _one_step(run)
    run.optim.scaler.update(1024.0)  # as after several overflows
    state = TrainState(step=3).to_checkpoint(
        run.network.model, run.optim.optimizer, run.cfg, [], scaler=run.optim.scaler
    )
    state["global_step"] = 3
    fresh = _linear_run("fp16", 1.0)
    TrainState.from_checkpoint(
        state, fresh.network.model, fresh.optim.optimizer, run.cfg, [], "x", fresh.optim.scaler
    )
    assert fresh.optim.scaler.get_scale() == 1024.0


def test_an_fp16_run_resumed_after_sigterm_ends_like_the_whole_run(
    engine_helpers, tiny_npz, tmp_path
):
    h = engine_helpers
    cfg = h.tiny_config(
        tiny_npz, tmp_path / "whole", epochs=1, warmup_epochs=0, precision="fp16",
        model="simple_cnn",
    )  # fmt: skip
    whole = trainer.train(cfg, log=h.quiet)
    cut = h.replace(cfg, out=str(tmp_path / "cut"))
    with h.record_sgd_steps(sigterm_at=2), pytest.raises(trainer.TrainingInterrupted):
        trainer.train(cut, log=h.quiet)
    assert "scaler" in load_checkpoint(next((tmp_path / "cut" / "checkpoints").glob("*.pt")))
    resumed = trainer.train(h.replace(cut, resume=True), log=h.quiet)
    assert h.without_timing(resumed) == h.without_timing(whole)


def test_a_fast_loop_run_stopped_mid_epoch_resumes_to_the_plain_runs_end(
    engine_helpers, tiny_npz, tmp_path
):
    """--sync-every 0 and --async-checkpoints: SIGTERM in epoch 2 (step 5 of 6), after the
    background checkpoint of epoch 1; resumed without those options (they may change), the
    run ends exactly as the plain uninterrupted one, evaluations included."""
    h = engine_helpers
    cfg = h.tiny_config(
        tiny_npz, tmp_path / "whole", epochs=2, warmup_epochs=1, eval_every=1,
        model="simple_cnn",
    )  # fmt: skip
    whole = trainer.train(cfg, log=h.quiet)
    cut = h.replace(cfg, out=str(tmp_path / "cut"), sync_every=0, async_checkpoints=True)
    with h.record_sgd_steps(sigterm_at=5), pytest.raises(trainer.TrainingInterrupted):
        trainer.train(cut, log=h.quiet)
    steps = sorted(p.name for p in (tmp_path / "cut" / "checkpoints").glob("*.pt"))
    assert steps == ["checkpoint-00000003.pt", "checkpoint-00000005.pt"]
    resumed = trainer.train(h.replace(cfg, out=cut.out, resume=True), log=h.quiet)
    assert h.without_timing(resumed) == h.without_timing(whole)
    assert h.history_without_timing(_read(tmp_path / "cut" / "history.json")) == (
        h.history_without_timing(_read(tmp_path / "whole" / "history.json"))
    )


# ---------------------------------------------------------------------------
# --sync-bn with one process, --dist-backend
# ---------------------------------------------------------------------------


def test_sync_bn_with_one_process_converts_warns_and_trains_like_batch_norm(
    tiny_run, engine_helpers, tmp_path
):
    from classbalanced.engine.network import build_training_model
    from classbalanced.losses import build_loss

    cfg = engine_helpers.replace(tiny_run.cfg, out=str(tmp_path / "sync_bn"), sync_bn=True)
    counts = _read(tiny_run.out / "subset.json")["counts"]
    with pytest.warns(UserWarning, match="--sync-bn with one process: nothing to synchronise"):
        model, _ = build_training_model(
            cfg.resolved(), counts, 3, build_loss("softmax", counts), DistContext()
        )
    norms = {type(m).__name__ for m in model.modules() if "BatchNorm" in type(m).__name__}
    assert norms == {"SyncBatchNorm"}  # the modules of a multi-GPU run
    with pytest.warns(UserWarning, match="--sync-bn with one process"):
        returned = trainer.train(cfg, log=engine_helpers.quiet)
    assert returned["accuracy"] == tiny_run.returned["accuracy"]
    a = load_checkpoint(sorted((tiny_run.out / "checkpoints").glob("*.pt"))[-1])["model"]
    b = load_checkpoint(sorted((tmp_path / "sync_bn" / "checkpoints").glob("*.pt"))[-1])["model"]
    assert a.keys() == b.keys()  # the same checkpoints: evaluation and resume read either
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)


def test_sync_bn_on_a_model_without_batch_norm_is_one_line(
    engine_helpers, tiny_npz, tmp_path, capsys
):
    """Nothing to convert: the option would be silently ignored (at any world size)."""
    out = tmp_path / "run"
    code = cli.main(_cli_args(engine_helpers, tiny_npz, out, "--sync-bn", "--model", "simple_cnn"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists()
    assert err == (
        "classbalanced: error: --sync-bn synchronises batch-norm layers, and model simple_cnn "
        "has none: expected a model with batch norm (e.g. resnet32), or no --sync-bn"
    )


def test_a_process_that_does_not_write_names_the_checkpoint_rank_0_wrote(copied_run):
    """Under torchrun rank 0 writes; another rank's manifest is the one it read at the start
    (empty for a new run), so its non-finite-loss line named no checkpoint ('none')."""
    from classbalanced.engine.run_folder import Manifest, RunFolder

    folder = RunFolder(copied_run, Manifest(copied_run), writer=False, resuming=False)
    run = Run(
        cfg=TrainConfig(),
        ctx=DistContext(rank=1, world_size=2),
        data=None,
        folder=folder,
        network=None,
        loss_fn=None,
        optim=None,
        schedules=None,
        log=print,
    )
    newest = sorted((copied_run / "checkpoints").glob("*.pt"))[-1]
    assert run.newest_valid_checkpoint() == newest


def test_the_nccl_backend_on_the_cpu_is_one_line(engine_helpers, tiny_npz, tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(_cli_args(engine_helpers, tiny_npz, out, "--dist-backend", "nccl"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists()
    assert err == (
        "classbalanced: error: the nccl backend needs CUDA devices, got device cpu: "
        "use --dist-backend gloo (or auto)"
    )
