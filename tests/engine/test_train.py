"""Training end to end on tiny data: the run folder, independent re-evaluation, TensorBoard,
the learning-rate schedule, determinism, resume (in-process and by SIGTERM), run-folder safety.

Expected values come from closed forms (long-tail formula, schedule) or from an
independent computation (re-evaluating the saved weights with numpy), never from
an earlier run of the code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_cli import one_error_line, run_cli, train_args

from classbalanced.config import TrainConfig
from classbalanced.engine import LRSchedule, TrainingInterrupted, train
from classbalanced.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

SCALARS = (
    "train/learning_rate",
    "train/network_loss",
    "train/regularization_loss",
    "train/epoch",
    "test/accuracy",
)


# ---------------------------------------------------------------------------
# helpers (closed forms)
# ---------------------------------------------------------------------------


def longtail_formula(n_max: int, num_classes: int, factor: float) -> list[int]:
    """the paper's Sec. 5.1 and the authors' release: n_i = int(n_max * (1/IF) ** (i / (C - 1)))."""
    return [int(n_max * (1 / factor) ** (i / (num_classes - 1)) + 1e-9) for i in range(num_classes)]


def lr_at(step: int, *, base, warmup, decay_epochs, decay_factors, steps_per_epoch) -> float:
    """The paper's schedule, written out: linear warm-up to ``base`` over ``warmup``
    epochs, then ``base * factor`` of the last decay epoch reached."""
    warmup_steps = warmup * steps_per_epoch
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    factor = 1.0
    for epoch, value in zip(decay_epochs, decay_factors, strict=True):
        if step >= epoch * steps_per_epoch:
            factor = value
    return base * factor


def schedule_of(config: dict, steps_per_epoch: int):
    return lambda step: lr_at(
        step,
        base=config["lr"],
        warmup=config["warmup_epochs"],
        decay_epochs=config["decay_epochs"],
        decay_factors=config["decay_factors"],
        steps_per_epoch=steps_per_epoch,
    )


def reevaluate(
    run_dir: Path, images: np.ndarray, labels: np.ndarray, model_name: str
) -> np.ndarray:
    """Predictions of the run's last checkpoint, computed here: ``x / 128 - 1``, NCHW, argmax."""
    checkpoints = sorted((run_dir / "checkpoints").glob("checkpoint-*.pt"))
    state = torch.load(checkpoints[-1], map_location="cpu", weights_only=True)
    num_classes = int(labels.max()) + 1
    model = build_model(model_name, num_classes, in_channels=images.shape[-1])
    model.load_state_dict(state["model"])
    model.eval()
    x = torch.from_numpy(images.astype(np.float32)).permute(0, 3, 1, 2) / 128.0 - 1.0
    with torch.no_grad():
        logits = model(x).numpy()
    return logits.argmax(axis=1)


def check_metrics_file(metrics: dict, *, num_classes: int, epochs: int) -> None:
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["error_percent"] == pytest.approx(100 * (1 - metrics["accuracy"]), abs=1e-9)
    assert len(metrics["per_class_accuracy"]) == num_classes
    for key in ("many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy"):
        assert key in metrics
        assert metrics[key] is None or 0.0 <= metrics[key] <= 1.0
    assert metrics["epoch"] == epochs
    assert metrics["train_images_per_second"] > 0


def check_against_reevaluation(metrics: dict, predictions, labels, train_counts) -> None:
    right = predictions == labels
    assert metrics["accuracy"] == pytest.approx(right.mean(), abs=1e-12)
    per_class = [float(right[labels == c].mean()) for c in range(len(train_counts))]
    assert metrics["per_class_accuracy"] == pytest.approx(per_class, abs=1e-12)
    counts = np.asarray(train_counts)
    groups = {
        "many": counts > 100,
        "medium": (counts >= 20) & (counts <= 100),
        "few": counts < 20,
    }
    for name, mask in groups.items():
        value = metrics[f"{name}_shot_accuracy"]
        if mask.any():
            assert value == pytest.approx(np.mean(np.asarray(per_class)[mask]), abs=1e-12), name
        else:
            assert value is None, name


def check_subset(subset: dict, full_labels: np.ndarray, factor: float) -> None:
    available = np.bincount(full_labels)
    expected = np.minimum(longtail_formula(int(available.max()), len(available), factor), available)
    assert subset["counts"] == expected.tolist()
    indices = np.asarray(subset["indices"])
    assert len(indices) == sum(subset["counts"])
    assert np.all(np.diff(indices) > 0)  # sorted, no repeats
    assert np.bincount(full_labels[indices], minlength=len(available)).tolist() == subset["counts"]


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def tree_snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# ---------------------------------------------------------------------------
# LR schedule and its resolution from the config
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("steps_per_epoch", [1, 7, 10])
def test_lr_schedule_warms_up_linearly_then_decays_at_the_decay_epochs(steps_per_epoch):
    base = 0.05
    s = LRSchedule(
        base_lr=base,
        warmup_epochs=5,
        decay_epochs=(160, 180),
        decay_factors=(0.01, 1e-4),
        steps_per_epoch=steps_per_epoch,
    )
    warm = 5 * steps_per_epoch
    ramp = np.array([s(i) for i in range(warm)])
    assert ramp[0] <= base / warm + 1e-15  # starts near 0
    assert ramp[-1] == pytest.approx(base)  # reaches the base rate at the end of warm-up
    if warm > 1:
        assert np.diff(ramp) == pytest.approx(np.full(warm - 1, base / warm))  # linear
    for epoch, factor in [
        (5, 1.0),
        (100, 1.0),
        (159, 1.0),
        (160, 0.01),
        (179, 0.01),
        (180, 1e-4),
        (199, 1e-4),
    ]:
        for step in (epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch - 1):
            assert s(step) == pytest.approx(base * factor), (epoch, step)


def test_lr_schedule_without_warmup_starts_at_the_base_rate():
    s = LRSchedule(0.1, 0, (2,), (0.1,), steps_per_epoch=3)
    assert [s(i) for i in range(9)] == pytest.approx([0.1] * 6 + [0.01] * 3)


# ---------------------------------------------------------------------------
# end to end: the tiny .npz run
# ---------------------------------------------------------------------------


def test_metrics_file(tiny_run, engine_helpers):
    h = engine_helpers
    metrics = h.read_json(tiny_run.out / "metrics.json")
    check_metrics_file(metrics, num_classes=h.NUM_CLASSES, epochs=h.EPOCHS)
    assert metrics == tiny_run.returned  # train() returns what it wrote
    assert metrics["num_test_images"] == h.NUM_CLASSES * h.TEST_PER_CLASS
    assert metrics["train_counts"] == h.read_json(tiny_run.out / "subset.json")["counts"]
    history = h.read_json(tiny_run.out / "history.json")
    assert [e["epoch"] for e in history] == [2, 4]  # eval_every 2
    assert history[-1]["accuracy"] == metrics["accuracy"]


def test_accuracy_equals_an_independent_reevaluation(tiny_run, tiny_npz, engine_helpers):
    metrics = engine_helpers.read_json(tiny_run.out / "metrics.json")
    predictions = reevaluate(tiny_run.out, tiny_npz.test_x, tiny_npz.test_y, "resnet8")
    check_against_reevaluation(metrics, predictions, tiny_npz.test_y, metrics["train_counts"])
    assert metrics["accuracy"] > 0.1  # the colour templates are learnable: better than chance


def test_subset_follows_the_long_tail_formula(tiny_run, tiny_npz, engine_helpers):
    subset = engine_helpers.read_json(tiny_run.out / "subset.json")
    check_subset(subset, tiny_npz.train_labels, engine_helpers.IMBALANCE)
    assert subset["counts"][0] == engine_helpers.TRAIN_PER_CLASS
    assert subset["counts"][-1] == int(engine_helpers.TRAIN_PER_CLASS / engine_helpers.IMBALANCE)


def test_config_json_is_the_resolved_config(tiny_run, engine_helpers):
    h = engine_helpers
    saved = h.read_json(tiny_run.out / "config.json")
    assert saved == tiny_run.cfg.resolved().to_dict()
    assert TrainConfig.from_dict(saved).resolved().to_dict() == saved  # a fixed point
    epochs = h.EPOCHS
    assert saved["lr"] == pytest.approx(0.1 * h.BATCH / 128)
    assert saved["warmup_epochs"] == 2  # given in the config
    assert saved["decay_epochs"] == [round(160 * epochs / 200), round(180 * epochs / 200)]
    assert saved["decay_factors"] == [0.01, 1e-4]  # long-tailed (IF 10)
    assert saved["imbalance_factor"] == h.IMBALANCE
    assert saved["reweight_epoch"] == round(160 * epochs / 200)


def test_every_step_uses_the_scheduled_learning_rate(tiny_run, engine_helpers):
    h = engine_helpers
    config = h.read_json(tiny_run.out / "config.json")
    n_train = sum(h.read_json(tiny_run.out / "subset.json")["counts"])
    lrs = tiny_run.step_lrs
    assert len(lrs) % h.EPOCHS == 0
    steps_per_epoch = len(lrs) // h.EPOCHS
    assert steps_per_epoch == n_train // h.BATCH  # the remainder of an epoch is dropped
    expected = [schedule_of(config, steps_per_epoch)(s) for s in range(len(lrs))]
    assert lrs == pytest.approx(expected, rel=1e-12)
    warm = config["warmup_epochs"] * steps_per_epoch
    assert lrs[0] == pytest.approx(config["lr"] / warm)
    assert lrs[warm - 1] == pytest.approx(config["lr"])
    assert lrs[-1] == pytest.approx(config["lr"] * 0.01)  # past the first decay epoch (3)


def test_tensorboard_scalars(tiny_run, engine_helpers):
    h = engine_helpers
    tb = scalars(tiny_run.out)
    for tag in SCALARS:
        assert tag in tb, tag
    epochs = list(range(1, h.EPOCHS + 1))
    for tag in (
        "train/learning_rate",
        "train/network_loss",
        "train/regularization_loss",
        "train/epoch",
    ):
        assert [step for step, _ in tb[tag]] == epochs, tag
    assert [v for _, v in tb["train/epoch"]] == [float(e) for e in epochs]

    # learning rate at the end of epoch e = the schedule's value at that epoch's last step
    config = h.read_json(tiny_run.out / "config.json")
    spe = len(tiny_run.step_lrs) // h.EPOCHS
    expected_lr = [schedule_of(config, spe)(e * spe - 1) for e in epochs]
    assert [v for _, v in tb["train/learning_rate"]] == pytest.approx(expected_lr, rel=1e-6)
    base = config["lr"]
    assert expected_lr == pytest.approx(
        [base / 2, base, base, base * 0.01]
    )  # warm-up 2, decay at 3

    metrics = h.read_json(tiny_run.out / "metrics.json")
    assert [s for s, _ in tb["test/accuracy"]] == [2, 4]
    assert tb["test/accuracy"][-1][1] == pytest.approx(metrics["accuracy"], rel=1e-6)
    assert tb["train/network_loss"][-1][1] == pytest.approx(metrics["train_loss"], rel=1e-5)

    # regularisation loss = 0.5 * weight_decay * sum ||w||^2 of the final weights
    checkpoints = sorted((tiny_run.out / "checkpoints").glob("checkpoint-*.pt"))
    state = torch.load(checkpoints[-1], map_location="cpu", weights_only=True)
    model = build_model("resnet8", h.NUM_CLASSES, in_channels=3)
    model.load_state_dict(state["model"])
    l2 = sum(float((p.detach().double() ** 2).sum()) for p in model.parameters())
    assert tb["train/regularization_loss"][-1][1] == pytest.approx(
        0.5 * config["weight_decay"] * l2, rel=1e-5
    )


# ---------------------------------------------------------------------------
# end to end: digits
# ---------------------------------------------------------------------------


def test_digits_end_to_end(tmp_path, engine_helpers):
    from classbalanced.data.registry import load_dataset

    h = engine_helpers
    out = tmp_path / "digits"
    cfg = TrainConfig(
        dataset="digits",
        imbalance_factor=10,
        model="resnet8",
        epochs=2,
        batch_size=64,
        pad=1,
        flip=False,
        eval_every=1,
        eval_batch_size=250,
        device="cpu",
        progress=False,
        out=str(out),
    )
    returned = train(cfg, log=h.quiet)
    metrics = h.read_json(out / "metrics.json")
    assert metrics == returned
    check_metrics_file(metrics, num_classes=10, epochs=2)
    full_train, test = load_dataset("digits")
    check_subset(h.read_json(out / "subset.json"), full_train.labels, 10)
    predictions = reevaluate(out, test.images, test.labels, "resnet8")
    check_against_reevaluation(metrics, predictions, test.labels, metrics["train_counts"])
    assert metrics["num_test_images"] == len(test.labels) == 500
    assert h.read_json(out / "config.json") == cfg.resolved().to_dict()
    assert [s for s, _ in scalars(out)["test/accuracy"]] == [1, 2]


# ---------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------


def test_same_seed_same_results_other_seed_other_subset(
    tiny_run, tiny_npz, tmp_path, engine_helpers
):
    h = engine_helpers
    again = tmp_path / "again"
    train(h.replace(tiny_run.cfg, out=str(again)), log=h.quiet)
    first = h.read_json(tiny_run.out / "metrics.json")
    second = h.read_json(again / "metrics.json")
    assert h.without_timing(second) == h.without_timing(first)
    assert h.history_without_timing(
        h.read_json(again / "history.json")
    ) == h.history_without_timing(h.read_json(tiny_run.out / "history.json"))
    assert h.read_json(again / "subset.json") == h.read_json(tiny_run.out / "subset.json")

    other = tmp_path / "other_seed"
    train(h.replace(tiny_run.cfg, out=str(other), seed=1, epochs=1, warmup_epochs=0), log=h.quiet)
    a = h.read_json(tiny_run.out / "subset.json")
    b = h.read_json(other / "subset.json")
    assert a["counts"] == b["counts"]  # the formula does not depend on the seed
    assert a["indices"] != b["indices"]  # which images are kept does
    check_subset(b, tiny_npz.train_labels, h.IMBALANCE)


# ---------------------------------------------------------------------------
# resume
# ---------------------------------------------------------------------------


def _interrupt_then_resume(tiny_run, h, out: Path, stop_after_step: int, **resume_changes):
    cfg = h.replace(tiny_run.cfg, out=str(out))
    with h.record_sgd_steps(sigterm_at=stop_after_step) as before:
        with pytest.raises(TrainingInterrupted, match="--resume"):
            train(cfg, log=h.quiet)
    steps = [int(p.stem.split("-")[1]) for p in (out / "checkpoints").glob("checkpoint-*.pt")]
    assert max(steps) == stop_after_step  # the step that was running is finished and saved
    with h.record_sgd_steps() as after:
        returned = train(h.replace(cfg, resume=True, **resume_changes), log=h.quiet)
    return returned, list(before) + list(after)


def test_resume_after_sigterm_mid_epoch_is_exact(tiny_run, tmp_path, engine_helpers):
    h = engine_helpers
    spe = len(tiny_run.step_lrs) // h.EPOCHS
    out = tmp_path / "resumed"
    returned, lrs = _interrupt_then_resume(tiny_run, h, out, 2 * spe + 1)  # in epoch 3
    reference = h.read_json(tiny_run.out / "metrics.json")
    assert h.without_timing(h.read_json(out / "metrics.json")) == h.without_timing(reference)
    assert h.without_timing(returned) == h.without_timing(reference)
    assert h.history_without_timing(h.read_json(out / "history.json")) == h.history_without_timing(
        h.read_json(tiny_run.out / "history.json")
    )
    assert lrs == tiny_run.step_lrs  # every step ran exactly once, at the same rate
    # TensorBoard: one value per epoch (nothing logged twice), the same learning rates
    tb, ref = scalars(out), scalars(tiny_run.out)
    assert [s for s, _ in tb["train/learning_rate"]] == list(range(1, h.EPOCHS + 1))
    assert tb["train/learning_rate"] == ref["train/learning_rate"]
    assert [s for s, _ in tb["train/network_loss"]] == [s for s, _ in ref["train/network_loss"]]
    assert [v for _, v in tb["train/network_loss"]] == pytest.approx(
        [v for _, v in ref["train/network_loss"]], rel=1e-6
    )
    assert [s for s, _ in tb["test/accuracy"]] == [2, 4]


def test_a_resume_may_change_the_options_that_change_no_result(tiny_run, tmp_path, engine_helpers):
    """``--keep-checkpoints``, ``--eval-batch-size`` and ``--cudnn-benchmark`` (no effect on
    the CPU) differ on resume: accepted without ``--force``, used, recorded in
    ``config.json``, and the run ends exactly like the uninterrupted one."""
    h = engine_helpers
    spe = len(tiny_run.step_lrs) // h.EPOCHS
    out = tmp_path / "resumed"
    changes = {"keep_checkpoints": 1, "eval_batch_size": 7, "cudnn_benchmark": True}
    returned, lrs = _interrupt_then_resume(tiny_run, h, out, spe + 1, **changes)
    assert lrs == tiny_run.step_lrs
    reference = h.read_json(tiny_run.out / "metrics.json")
    assert h.without_timing(returned) == h.without_timing(reference)
    saved = h.read_json(out / "config.json")
    assert {k: saved[k] for k in changes} == changes
    same = lambda config: {k: v for k, v in config.items() if k not in {*changes, "out", "resume"}}  # noqa: E731
    assert same(saved) == same(h.read_json(tiny_run.out / "config.json"))
    # the new --keep-checkpoints is the one used: one checkpoint left, on disk and listed
    listed = [n for n in h.read_json(out / "run.json")["files"] if n.startswith("checkpoints/")]
    assert len(list((out / "checkpoints").iterdir())) == len(listed) == 1


@pytest.mark.parametrize("precision", ["fp16", "bf16", "fp32"])
def test_fp16_on_the_cpu_is_announced_as_slow_at_start_up(
    tiny_run, tmp_path, engine_helpers, precision
):
    """One warning line (fp16 autocast is very slow on the CPU), none for bf16 or fp32.
    The run stops after its first step (batch 8): fp16 steps take seconds here."""
    h = engine_helpers
    cfg = h.replace(tiny_run.cfg, out=str(tmp_path / "run"), precision=precision, batch_size=8)
    lines: list[str] = []
    with h.record_sgd_steps(sigterm_at=1), pytest.raises(TrainingInterrupted):
        train(cfg, log=lines.append)
    warned = [line for line in lines if "slow" in line]
    if precision != "fp16":
        assert warned == []
        return
    assert len(warned) == 1 and warned[0].startswith("warning: ")
    assert "CPU is very slow" in warned[0] and "bf16 or fp32" in warned[0]


def test_sigterm_in_the_very_last_step_finishes_the_run(tiny_run, tmp_path, engine_helpers):
    # the work is done: the run ends normally (evaluated, checkpointed), nothing to resume
    h = engine_helpers
    out = tmp_path / "finished"
    with h.record_sgd_steps(sigterm_at=len(tiny_run.step_lrs)):
        train(h.replace(tiny_run.cfg, out=str(out)), log=h.quiet)
    reference = h.read_json(tiny_run.out / "metrics.json")
    assert h.without_timing(h.read_json(out / "metrics.json")) == h.without_timing(reference)


@pytest.mark.parametrize("epoch", [1, 2], ids=["plain-epoch", "eval-epoch"])
def test_resume_after_sigterm_in_the_last_step_of_an_epoch_is_exact(
    tiny_run, tmp_path, engine_helpers, epoch
):
    h = engine_helpers
    spe = len(tiny_run.step_lrs) // h.EPOCHS
    out = tmp_path / "resumed"
    returned, lrs = _interrupt_then_resume(tiny_run, h, out, epoch * spe)
    assert lrs == tiny_run.step_lrs
    reference = h.read_json(tiny_run.out / "metrics.json")
    assert h.history_without_timing(h.read_json(out / "history.json")) == h.history_without_timing(
        h.read_json(tiny_run.out / "history.json")
    )
    assert h.without_timing(h.read_json(out / "metrics.json")) == h.without_timing(reference)
    # each epoch logged once (the event files of the two processes may be read in either order)
    assert sorted(s for s, _ in scalars(out)["train/epoch"]) == list(range(1, h.EPOCHS + 1))


def test_sigterm_exits_130_with_a_checkpoint_and_a_resume_hint(tiny_npz, tmp_path):
    out = tmp_path / "run"
    # long enough (200 epochs) that the signal always lands while training
    args = train_args(tiny_npz, out, "--eval-every", "1", epochs=200)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "classbalanced", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while not list((out / "checkpoints").glob("checkpoint-*.pt")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert "--resume" in last, stderr
    checkpoints = sorted((out / "checkpoints").glob("checkpoint-*.pt"))
    state = torch.load(checkpoints[-1], map_location="cpu", weights_only=True)
    n_train = sum(longtail_formula(30, 10, 10))
    assert 0 < state["global_step"] < 200 * (n_train // 32)
    assert not list(out.rglob("*.tmp"))


# ---------------------------------------------------------------------------
# run-folder safety (through the CLI: exit status 2 and one line)
# ---------------------------------------------------------------------------


def test_a_folder_holding_a_run_is_refused_without_resume_or_overwrite(
    copied_run, tiny_npz, capsys
):
    before = tree_snapshot(copied_run)
    code, _, err = run_cli(capsys, train_args(tiny_npz, copied_run))
    assert code == 2
    line = one_error_line(err)
    assert "--resume" in line and "--overwrite" in line
    assert tree_snapshot(copied_run) == before


def test_a_non_empty_folder_without_a_run_is_refused(tmp_path, tiny_npz, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    for extra in ((), ("--overwrite",)):
        code, _, err = run_cli(capsys, train_args(tiny_npz, out, *extra))
        assert code == 2
        one_error_line(err)
        assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]
        assert (out / "thesis.tex").read_text() == "precious"


def test_overwrite_replaces_only_the_runs_files(copied_run, tiny_npz, capsys, engine_helpers):
    h = engine_helpers
    (copied_run / "notes.txt").write_text("keep me")
    (copied_run / "my_plots").mkdir()
    (copied_run / "my_plots" / "a.png").write_bytes(b"png")
    old_checkpoints = sorted(p.name for p in (copied_run / "checkpoints").iterdir())
    old_events = sorted(p.name for p in (copied_run / "tensorboard").iterdir())
    code, _, err = run_cli(capsys, train_args(tiny_npz, copied_run, "--overwrite", epochs=1))
    assert code == 0, err
    assert (copied_run / "notes.txt").read_text() == "keep me"
    assert (copied_run / "my_plots" / "a.png").read_bytes() == b"png"
    assert h.read_json(copied_run / "config.json")["epochs"] == 1
    assert h.read_json(copied_run / "metrics.json")["epoch"] == 1
    assert [e["epoch"] for e in h.read_json(copied_run / "history.json")] == [1]
    new_checkpoints = sorted(p.name for p in (copied_run / "checkpoints").iterdir())
    assert not set(new_checkpoints) & set(old_checkpoints)
    new_events = sorted(p.name for p in (copied_run / "tensorboard").iterdir())
    assert len(new_events) == 1 and not set(new_events) & set(old_events)
    assert [s for s, _ in scalars(copied_run)["train/epoch"]] == [1]


def test_resume_with_another_config_is_refused_naming_the_keys(copied_run, tiny_npz, capsys):
    before = tree_snapshot(copied_run)
    args = train_args(
        tiny_npz, copied_run, "--resume", "--eval-every", "1", "--lr", "0.5",
        "--precision", "fp16", "--sync-every", "3", "--async-checkpoints",
        "--eval-batch-size", "20", "--keep-checkpoints", "1", "--cudnn-benchmark",
    )  # fmt: skip
    code, _, err = run_cli(capsys, args)
    assert code == 2
    line = one_error_line(err)
    assert "eval_every (run: 2, now: 1)" in line and "lr (run: 0.025, now: 0.5)" in line
    assert "precision (run: 'fp32', now: 'fp16')" in line and "--force" in line
    assert "seed" not in line and "epochs" not in line  # only the keys that differ
    for free in ("sync_every", "async_checkpoints", "eval_batch_size", "keep_checkpoints"):
        assert free not in line  # free to change
    assert "cudnn_benchmark" not in line
    assert tree_snapshot(copied_run) == before


def test_resume_with_other_free_options_is_accepted_and_recorded(
    copied_run, tiny_npz, capsys, engine_helpers
):
    extra = ("--sync-every", "3", "--async-checkpoints", "--dist-backend", "gloo")
    code, _, err = run_cli(capsys, train_args(tiny_npz, copied_run, "--resume", *extra))
    assert code == 0, err
    saved = engine_helpers.read_json(copied_run / "config.json")
    assert (saved["sync_every"], saved["async_checkpoints"], saved["dist_backend"]) == (
        3, True, "gloo",
    )  # fmt: skip


def test_resume_with_another_config_and_force_is_accepted(
    copied_run, tiny_npz, capsys, engine_helpers
):
    h = engine_helpers
    metrics_before = h.read_json(copied_run / "metrics.json")
    args = train_args(tiny_npz, copied_run, "--resume", "--force", "--eval-every", "1")
    code, _, err = run_cli(capsys, args)
    assert code == 0, err
    assert "Traceback" not in err
    # the run was already finished: nothing left to train, the results stand
    assert h.without_timing(h.read_json(copied_run / "metrics.json")) == h.without_timing(
        metrics_before
    )


def test_resume_with_the_same_config_of_a_finished_run_changes_nothing(
    copied_run, tiny_npz, capsys, engine_helpers
):
    h = engine_helpers
    metrics_before = h.read_json(copied_run / "metrics.json")
    code, _, err = run_cli(capsys, train_args(tiny_npz, copied_run, "--resume"))
    assert code == 0, err
    assert h.read_json(copied_run / "metrics.json") == metrics_before


def test_resume_without_a_run_is_refused(tmp_path, tiny_npz, capsys):
    out = tmp_path / "empty"
    code, _, err = run_cli(capsys, train_args(tiny_npz, out, "--resume"))
    assert code == 2
    assert "resume" in one_error_line(err)
    assert not out.exists() or not any(out.iterdir())


def test_the_start_line_names_gamma_only_for_a_loss_that_reads_it():
    """(It said 'gamma 1.0' for softmax, which ignores gamma, and '1 epochs'.)"""
    from types import SimpleNamespace

    from classbalanced.config import TrainConfig
    from classbalanced.engine.trainer import _start_line

    data = SimpleNamespace(counts=np.array([5, 3]), class_names=["a", "b"])
    ctx = SimpleNamespace(device="cpu", distributed=False, world_size=1)
    line = _start_line(TrainConfig(dataset="digits", epochs=1).resolved(), data, ctx)
    assert line.endswith("with softmax loss (beta 0.0) for 1 epoch on cpu")
    cfg = TrainConfig(dataset="digits", loss="focal", gamma=0.5, epochs=3).resolved()
    assert _start_line(cfg, data, ctx).endswith("(beta 0.0, gamma 0.5) for 3 epochs on cpu")
