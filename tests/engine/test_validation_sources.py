"""The validation split on every kind of data: image-file lists (--val-fraction and the
prepared --val-list) and under DDP (two torchrun ranks give one process's val_* metrics)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classbalanced.config import TrainConfig
from classbalanced.data.validation import validation_counts
from classbalanced.engine import train

pytestmark = pytest.mark.slow
TRAIN = [12, 6, 4, 2]
SIZE = 16
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent))


def _quiet(_line: str) -> None:
    pass


@pytest.fixture(scope="module")
def list_root(tmp_path_factory) -> Path:
    """A list data set of JPEGs: train (long-tailed), val (2 per class) and test lists."""
    return _prepared_lists(tmp_path_factory.mktemp("lists"))


def _prepared_lists(root: Path, unreadable: str | None = None) -> Path:
    """:func:`list_root`'s data set in ``root``; the image ``unreadable`` (relative to
    ``root``) replaced by bytes that are not an image before it is prepared."""
    rng = np.random.default_rng(7)
    colours = rng.integers(30, 226, size=(len(TRAIN), 3))
    for split, per_class in (("train", TRAIN), ("val", [2] * 4), ("test", [3] * 4)):
        lines = []
        for label, n in enumerate(per_class):
            for j in range(n):
                rel = f"images/{split}/c{label}/{j:03d}.jpg"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                pixels = np.clip(colours[label] + rng.normal(0, 20, (SIZE, SIZE, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(root / rel, quality=95)
                lines.append(f"{rel} {label}\n")
        (root / f"{split}.txt").write_text("".join(lines))
    if unreadable is not None:
        (root / unreadable).write_bytes(b"not a JPEG")
    from classbalanced.data.prepare import prepare

    lists = {s: root / f"{s}.txt" for s in ("train", "val", "test")}
    prepare("list", root, log=_quiet, lists=lists)
    return root


def _list_config(root: Path, out: Path, **extra) -> TrainConfig:
    return TrainConfig(
        dataset="list", data_dir=str(root), model="resnet8", image_size=SIZE, epochs=1,
        batch_size=4, eval_every=1, num_workers=0, device="cpu", progress=False, out=str(out),
        **extra,
    )  # fmt: skip


def test_list_data_val_fraction_holds_out_training_images(list_root, tmp_path):
    out = tmp_path / "frac"
    metrics = train(_list_config(list_root, out, val_fraction=0.25), log=_quiet)
    subset = json.loads((out / "subset.json").read_text())
    held = validation_counts(TRAIN, 0.25).tolist()
    assert subset["validation"]["counts"] == held == [3, 2, 1, 1]
    assert subset["counts"] == [n - v for n, v in zip(TRAIN, held, strict=True)]
    assert not set(subset["indices"]) & set(subset["validation"]["indices"])
    assert metrics["num_val_images"] == sum(held) and metrics["num_test_images"] == 12
    assert 0 <= metrics["val_balanced_accuracy"] <= 1


def test_list_data_val_list_yields_val_metrics_without_the_test_set(list_root, tmp_path):
    out = tmp_path / "list"
    cfg = _list_config(list_root, out, val_list=str(list_root / "val.txt"), evaluate_test=False)
    metrics = train(cfg, log=_quiet)
    assert metrics["num_val_images"] == 8 and "accuracy" not in metrics
    subset = json.loads((out / "subset.json").read_text())
    assert subset["counts"] == TRAIN and subset["validation"]["counts"] == [2, 2, 2, 2]


def test_an_unreadable_val_image_is_counted_apart(tmp_path):
    """A val image that cannot be decoded is skipped, left out of ``num_val_images`` (every
    val_* denominator) and counted in ``num_unreadable_val_images``, as test images are."""
    root = _prepared_lists(tmp_path / "lists", unreadable="images/val/c0/000.jpg")
    cfg = _list_config(root, tmp_path / "run", val_list=str(root / "val.txt"), evaluate_test=False)
    with pytest.warns(UserWarning, match="unreadable"):
        metrics = train(cfg, log=_quiet)
    assert (metrics["num_val_images"], metrics["num_unreadable_val_images"]) == (7, 1)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [entry["num_unreadable_val_images"] for entry in history] == [1]


def _train_args(out: Path, batch: int) -> list[str]:
    return [
        "-m", "classbalanced", "train", "--dataset", "digits", "--imbalance-factor", "10",
        "--model", "simple_cnn", "--epochs", "1", "--batch-size", str(batch), "--pad", "1",
        "--no-flip", "--device", "cpu", "--no-progress", "--eval-every", "1",
        "--val-fraction", "0.2", "--out", str(out),
    ]  # fmt: skip


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not installed next to this Python")
def test_two_ranks_give_one_process_val_metrics(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    single, double = tmp_path / "single", tmp_path / "double"
    commands = [
        [sys.executable, *_train_args(single, 214)],
        [TORCHRUN, "--standalone", "--nproc_per_node", "2", *_train_args(double, 214)],
    ]
    for cmd in commands:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
    a = json.loads((single / "metrics.json").read_text())
    b = json.loads((double / "metrics.json").read_text())
    assert a["num_val_images"] == b["num_val_images"] > 0  # every validation image once
    assert json.loads((single / "subset.json").read_text()) == json.loads(
        (double / "subset.json").read_text()
    )
    n = a["num_val_images"]
    assert b["val_accuracy"] == pytest.approx(a["val_accuracy"], abs=1 / n)
    assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-3)
