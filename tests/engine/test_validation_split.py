"""train --val-fraction / --val-data / --no-evaluate-test: the split recorded in subset.json,
class-balanced weights from what remains, val_* metrics equal to an independent float64
re-evaluation, in metrics.json, history.json and TensorBoard; bad input is one line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from engine_cli import cli_result, one_error_line, train_args

from classbalanced.data.augment import normalize_images
from classbalanced.data.longtail import longtail_indices
from classbalanced.data.validation import validation_counts
from classbalanced.engine import train
from classbalanced.engine.checkpoint import latest_checkpoint, load_checkpoint
from classbalanced.engine.distributed import DistContext
from classbalanced.engine.network import build_network
from classbalanced.engine.run_data import load_run_data
from classbalanced.engine.trainer import _loss
from classbalanced.engine.validation import VAL_METRICS
from classbalanced.weights import class_balanced_weights

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
FRACTION = 0.25


@pytest.fixture(scope="module")
def val_run(tiny_npz, tmp_path_factory, engine_helpers):
    out = tmp_path_factory.mktemp("val_run") / "run"
    cfg = engine_helpers.tiny_config(
        tiny_npz, out, epochs=2, eval_every=1, warmup_epochs=1, val_fraction=FRACTION,
        loss="softmax", beta=0.99,
    )  # fmt: skip
    returned = train(cfg, log=engine_helpers.quiet)
    return out, cfg, returned


def _read(path):
    return json.loads(path.read_text())


def test_subset_json_records_a_stratified_split_of_the_long_tailed_subset(val_run, tiny_npz):
    out, cfg, _ = val_run
    subset = _read(out / "subset.json")
    kept, lt_counts = longtail_indices(tiny_npz.train_labels, cfg.imbalance_factor, seed=0)
    val = subset["validation"]
    assert val["fraction"] == FRACTION and val["seed"] == 0
    assert val["counts"] == validation_counts(lt_counts, FRACTION).tolist()
    assert not set(val["indices"]) & set(subset["indices"])
    assert sorted(val["indices"] + subset["indices"]) == kept.tolist()  # after the subsetting
    assert (
        np.bincount(tiny_npz.train_labels[val["indices"]], minlength=10).tolist() == val["counts"]
    )
    remaining = (lt_counts - np.asarray(val["counts"])).tolist()
    assert subset["counts"] == remaining == _read(out / "metrics.json")["train_counts"]


def test_class_balanced_weights_come_from_the_remaining_counts(val_run):
    out, cfg, _ = val_run
    cfg = cfg.resolved()
    data = load_run_data(cfg, DistContext(device=torch.device("cpu")))
    remaining = _read(out / "subset.json")["counts"]
    assert data.counts.tolist() == remaining
    loss_fn, _ = _loss(cfg, DistContext(device=torch.device("cpu")), data)
    expected = class_balanced_weights(remaining, 0.99)
    torch.testing.assert_close(loss_fn.weight.double(), expected.double(), rtol=1e-6, atol=0)


def test_val_metrics_equal_a_float64_reevaluation(val_run, tiny_npz):
    out, cfg, returned = val_run
    subset, metrics = _read(out / "subset.json"), _read(out / "metrics.json")
    with np.load(tiny_npz.train) as f:
        x, y = f["x"][subset["validation"]["indices"]], f["y"][subset["validation"]["indices"]]
    state = load_checkpoint(latest_checkpoint(out / "checkpoints"))
    model = build_network(cfg.resolved(), subset["counts"], 3)
    model.load_state_dict(state["model"])
    model.double().eval()
    with torch.no_grad():
        images = normalize_images(torch.from_numpy(x).permute(0, 3, 1, 2)).double()
        logits = model(images)
    labels = torch.from_numpy(y)
    right = (logits.argmax(1) == labels).numpy()
    recall = [right[y == c].mean() for c in range(10) if (y == c).any()]
    assert metrics["val_balanced_accuracy"] == pytest.approx(np.mean(recall), abs=1e-12)
    assert metrics["val_accuracy"] == pytest.approx(right.mean(), abs=1e-12)
    assert metrics["val_loss"] == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-5)
    assert metrics["num_val_images"] == len(y)
    assert returned["val_balanced_accuracy"] == metrics["val_balanced_accuracy"]
    assert "accuracy" in metrics  # the test set too (evaluate_test by default)


def test_every_evaluation_epoch_writes_val_metrics_to_history_and_tensorboard(val_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _, _ = val_run
    history = _read(out / "history.json")
    assert [h["epoch"] for h in history] == [1, 2]
    for entry in history:
        assert set(VAL_METRICS) <= set(entry)
        assert all(math.isfinite(entry[k]) for k in ("val_accuracy", "val_loss"))
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    for key in VAL_METRICS:
        if history[-1][key] is None:  # a shot group without classes
            continue
        scalars = events.Scalars(f"val/{key[4:]}")
        assert [s.step for s in scalars] == [1, 2]
        assert scalars[-1].value == pytest.approx(history[-1][key], rel=1e-6)


def test_no_evaluate_test_never_opens_the_test_file_and_val_data_is_checked(
    tiny_npz, tmp_path, capsys
):
    garbage = tmp_path / "test.npz"
    garbage.write_bytes(b"not an npz: a run that opens it fails")
    val = tmp_path / "val.npz"
    with np.load(tiny_npz.test) as f:
        np.savez(val, x=f["x"][::2], y=f["y"][::2])
    args = train_args(tiny_npz, tmp_path / "run", epochs=1)
    args[args.index("--test-data") + 1] = str(garbage)
    done = cli_result(*args, "--val-data", val, "--no-evaluate-test")
    assert done.returncode == 0, done.stderr
    metrics = _read(tmp_path / "run" / "metrics.json")
    assert "accuracy" not in metrics and metrics["num_val_images"] == 50
    assert _read(tmp_path / "run" / "run.json")["data"]["test"]["fingerprint"] is None
    assert "validation balanced accuracy" in done.stdout + done.stderr
    # with the test set evaluated, the garbage is read and refused
    failed = cli_result(*args[:-2], "--out", tmp_path / "run2", "--val-data", val)
    assert "not" in one_error_line(failed.stderr) and failed.returncode == 2


def test_bad_validation_input_is_one_line(tiny_npz, tmp_path):
    base = train_args(tiny_npz, tmp_path / "run", epochs=1)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((4, 16, 16, 3), np.uint8), y=np.arange(4))
    cases = [
        (["--val-fraction", "0.6"], r"val_fraction must be in \(0, 0.5\], got 0.6"),
        (["--val-fraction", "0"], r"val_fraction must be in \(0, 0.5\], got 0"),
        (["--val-fraction", "0.1", "--val-data", wrong], r"expected one validation source"),
        (["--val-data", wrong], r"--val-data's classes differ from the training set's"),
        (["--no-evaluate-test"], r"evaluate_test false needs a validation set"),
    ]
    for extra, pattern in cases:
        done = cli_result(*base, *extra)
        assert done.returncode == 2, (extra, done.stderr)
        assert pytest.importorskip("re").search(pattern, one_error_line(done.stderr)), done.stderr
    assert not (tmp_path / "run").exists()


def test_a_class_of_one_image_is_named_and_keeps_it(tiny_npz, tmp_path, capsys):
    # IF 30 over 30 images per class: the last two classes keep a single image
    args = train_args(tiny_npz, tmp_path / "run", "--val-fraction", "0.5", epochs=1)
    args[args.index("--imbalance-factor") + 1] = "30"
    done = cli_result(*args)
    assert done.returncode == 0, done.stderr
    assert "single training image" in done.stdout + done.stderr
    subset = _read(tmp_path / "run" / "subset.json")
    assert subset["counts"][-1] == 1 and subset["validation"]["counts"][-1] == 0
    assert subset["validation"]["classes_without_validation_images"] == [8, 9]
    assert [subset["counts"][c] for c in (8, 9)] == [1, 1]
