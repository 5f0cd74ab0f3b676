"""Large-scale path end to end on a generated iNaturalist-2018-style layout (CPU, gloo)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from engine_cli import cli_result
from PIL import Image

from classbalanced.data.prepared import load_prepared

pytestmark = pytest.mark.slow

PER_CLASS_TRAIN = [12, 6, 3, 2]  # long-tailed
PER_CLASS_VAL = 3
CATEGORY_IDS = [7, 3, 11, 5]  # not contiguous, not sorted


def _write_layout(root: Path) -> None:
    rng = np.random.default_rng(0)
    image_id = 0
    for split, per_class in (("train", PER_CLASS_TRAIN), ("val", [PER_CLASS_VAL] * 4)):
        images, annotations = [], []
        for cat, count in zip(CATEGORY_IDS, per_class, strict=True):
            folder = root / "train_val2018" / f"cat{cat}"
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                image_id += 1
                name = f"train_val2018/cat{cat}/{split}_{k}.jpg"
                colour = (cat * 20 % 256, 255 - cat * 15, 80)
                pixels = np.clip(np.array(colour) + rng.normal(0, 20, (40, 48, 3)), 0, 255).astype(
                    np.uint8
                )
                Image.fromarray(pixels).save(root / name, quality=90)
                images.append({"id": image_id, "file_name": name, "width": 48, "height": 40})
                annotations.append({"id": image_id, "image_id": image_id, "category_id": cat})
        categories = [{"id": c, "name": f"species {c}"} for c in CATEGORY_IDS]
        doc = {"images": images, "annotations": annotations, "categories": categories}
        (root / f"{split}2018.json").write_text(json.dumps(doc))
    # a truncated JPEG in the training set: skipped and counted, never a crash
    bad = root / "train_val2018" / "cat7" / "train_0.jpg"
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])


def _cli(*args, runner=None, timeout=300):
    """``classbalanced ARGS``: in this process, or as a subprocess under ``runner`` (torchrun)."""
    if runner is None:
        return cli_result(*args)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    cmd = (runner or [sys.executable]) + ["-m", "classbalanced", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


TRAIN = [
    "train",
    "--dataset",
    "inat2018",
    "--model",
    "simple_cnn",
    "--loss",
    "focal",
    "--beta",
    "0.999",
    "--gamma",
    "0.5",
    "--image-size",
    "32",
    "--epochs",
    "2",
    "--batch-size",
    "8",
    "--eval-every",
    "1",
    "--num-workers",
    "0",
    "--device",
    "cpu",
    "--no-progress",
]


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("inat")
    _write_layout(root)
    result = _cli("prepare", "--dataset", "inat2018", "--data-dir", str(root))
    assert result.returncode == 0, result.stderr
    # an unreadable val (test) image: left out of the metrics and counted; the second of
    # the list, evaluated by rank 1 of two processes (rank 0 writes: the count is summed)
    prepared = load_prepared("inat2018", str(root))
    (Path(prepared.root) / prepared.val_samples[1][0]).write_bytes(b"not a JPEG")
    return root


def test_prepare_writes_counts_from_the_annotations(layout):
    folder = layout / "classbalanced-inat2018"
    counts = [int(line) for line in (folder / "train_counts.txt").read_text().split()]
    # classes ordered by category id: 3, 5, 7, 11
    by_id = dict(zip(CATEGORY_IDS, PER_CLASS_TRAIN, strict=True))
    assert counts == [by_id[c] for c in sorted(CATEGORY_IDS)]


def test_train_skips_the_truncated_image_and_evaluates_every_image_once(layout, tmp_path):
    out = tmp_path / "run"
    result = _cli(*TRAIN, "--data-dir", str(layout), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_test_images"] == 4 * PER_CLASS_VAL - 1
    assert metrics["num_unreadable_test_images"] == 1
    assert (
        metrics["skipped_unreadable_images"] >= 1
    )  # the truncated file, once per epoch it is drawn
    assert metrics["train_counts"] == [
        PER_CLASS_TRAIN[CATEGORY_IDS.index(c)] for c in sorted(CATEGORY_IDS)
    ]
    evaluated = _cli("evaluate", str(out), "--device", "cpu")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["accuracy"] == metrics["accuracy"]


def test_the_skipped_image_count_survives_a_resume(layout, tmp_path):
    # the truncated training image is drawn in epoch 2 (not 1: the remainder is dropped)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    args = [*TRAIN, "--data-dir", str(layout)]
    assert _cli(*args, "--out", str(whole), "--epochs", "3").returncode == 0
    assert _cli(*args, "--out", str(resumed)).returncode == 0  # 2 epochs
    again = _cli(*args, "--out", str(resumed), "--epochs", "3", "--resume", "--force")
    assert again.returncode == 0, again.stderr[-3000:]
    counts = [
        [h["skipped_unreadable_images"] for h in json.loads((run / "history.json").read_text())]
        for run in (whole, resumed)
    ]
    assert counts[0] == counts[1] and counts[0][1] > 0  # skipped before the resume, counted on


@pytest.mark.skipif(
    shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="no torchrun"
)
def test_two_process_torchrun_epoch_writes_metrics_once(layout, tmp_path):
    out = tmp_path / "ddp"
    torchrun = [
        shutil.which("torchrun", path=str(Path(sys.executable).parent)),
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    result = _cli(*TRAIN, "--data-dir", str(layout), "--out", str(out), runner=torchrun)
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    # summed over ranks, none twice; the unreadable one (rank 1's) counted by rank 0
    assert history[-1]["num_test_images"] == 4 * PER_CLASS_VAL - 1
    assert [h["num_unreadable_test_images"] for h in history] == [1, 1]
    assert result.stderr.count("final: error") == 1


def test_prepare_refuses_missing_images(tmp_path):
    root = tmp_path / "inat"
    _write_layout(root)
    (root / "train_val2018" / "cat3" / "train_1.jpg").unlink()
    result = _cli("prepare", "--dataset", "inat2018", "--data-dir", str(root))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "missing" in result.stderr and "--skip-missing" in result.stderr
    assert (
        _cli(
            "prepare", "--dataset", "inat2018", "--data-dir", str(root), "--skip-missing"
        ).returncode
        == 0
    )


def test_persistent_workers_train_exactly_as_rebuilt_loaders(layout, tmp_path):
    """Two epochs with two loader workers: the same metrics and history either way."""
    runs = {}
    for flag in ("--persistent-workers", "--no-persistent-workers"):
        out = tmp_path / flag
        args = [*TRAIN, "--data-dir", str(layout), "--out", str(out), flag]
        args[args.index("--num-workers") + 1] = "2"
        result = _cli(*args)
        assert result.returncode == 0, result.stderr[-3000:]
        metrics = json.loads((out / "metrics.json").read_text())
        history = json.loads((out / "history.json").read_text())
        runs[flag] = [
            {k: v for k, v in m.items() if "second" not in k and "time" not in k}
            for m in [metrics, *history]
        ]
    assert runs["--persistent-workers"] == runs["--no-persistent-workers"]
    assert runs["--persistent-workers"][0]["train_loss"] > 0
