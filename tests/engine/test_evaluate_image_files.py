"""``evaluate RUN --test-data FOLDER`` on a run of image files (a prepared list data set)
evaluates the folder's files as the run evaluates its own test files: the run's
evaluation transform (resize, centre crop) on each file, so the same files give the same
metrics; ``predict`` agrees with both, and ``export`` gives the run's model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import classbalanced as cb
from classbalanced import cli
from classbalanced.config import TrainConfig
from classbalanced.data.prepare import prepare
from classbalanced.engine import train
from classbalanced.engine.evaluate_run import evaluate_run

pytestmark = pytest.mark.slow
TRAIN = [10, 5, 3]


def _quiet(_line: str) -> None:
    pass


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> tuple[Path, Path]:
    """A list data set of 12x10 PNGs (class colour + noise) whose test files sit in class
    folders ``test/c0 ..``, a run of it trained at image size 8 (so every evaluation resizes
    and crops), and that test folder."""
    root = tmp_path_factory.mktemp("image_run")
    data, rng = root / "data", np.random.default_rng(0)
    colours = rng.integers(30, 226, (len(TRAIN), 3))
    lists: dict[str, list[str]] = {"train": [], "test": []}
    for label, n_train in enumerate(TRAIN):
        for split, count in (("train", n_train), ("test", 4)):
            for k in range(count):
                rel = f"{split}/c{label}/{k}.png"
                (data / rel).parent.mkdir(parents=True, exist_ok=True)
                pixels = np.clip(colours[label] + rng.normal(0, 25, (12, 10, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(data / rel)
                lists[split].append(f"{rel} {label}\n")
    for split, lines in lists.items():
        (data / f"{split}.txt").write_text("".join(lines))
    prepare("list", data, log=_quiet, lists={s: data / f"{s}.txt" for s in lists})
    cfg = TrainConfig(
        dataset="list", data_dir=str(data), model="simple_cnn", image_size=8, epochs=15,
        batch_size=4, eval_every=15, num_workers=0, device="cpu", progress=False,
        out=str(root / "run"),
    )  # fmt: skip
    train(cfg, log=_quiet)
    return root / "run", data / "test"


def test_a_test_folder_is_evaluated_with_the_runs_own_transform(image_run):
    run, folder = image_run
    own = evaluate_run(run, device="cpu", log=_quiet)
    given = evaluate_run(run, test_data=str(folder), device="cpu", log=_quiet)
    assert own["num_test_images"] == given["num_test_images"] == 12
    for key in ("accuracy", "ece", "confusion_matrix", "per_class_f1"):
        assert given[key] == own[key], key
    assert own["accuracy"] > 0.5  # a model that learned something: the keys can differ


def test_predict_on_the_folder_agrees_with_evaluate(image_run, tmp_path, capsys):
    run, folder = image_run
    out = tmp_path / "p.csv"
    argv = ["predict", str(run), str(folder), "--output", str(out), "--device", "cpu"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    predicted = json.loads((tmp_path / "p.metrics.json").read_text())
    given = evaluate_run(run, test_data=str(folder), device="cpu", log=_quiet)
    assert predicted["accuracy"] == given["accuracy"]
    assert predicted["confusion_matrix"] == given["confusion_matrix"]


def test_torchscript_export_of_the_image_run_matches_its_model(image_run, tmp_path, capsys):
    """``export`` of a run of image files: the scripted model on the run's own
    preprocessing of the test files gives the loaded model's logits (within 1e-5)."""
    run, folder = image_run
    out = tmp_path / "m.pt"
    argv = ["export", str(run), "--format", "torchscript", "--output", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    classifier = cb.load_run(run)
    x = classifier.preprocess(sorted(str(p) for p in folder.rglob("*.png")))
    assert x.shape == (12, 3, 8, 8)  # resized and cropped to the run's image size
    with torch.no_grad():
        expected = classifier.model(x)
    assert (torch.jit.load(str(out))(x) - expected).abs().max() <= 1e-5
