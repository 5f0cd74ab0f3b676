"""Each official layout, end to end through the command line: prepare, a 1-epoch train, evaluate.

The evaluated split has 1, 2 and 3 images of classes 0, 1 and 2, so the run's accuracy must be
the count-weighted mean of its per-class accuracies for exactly those counts: an image read
with another class's label would break it (unless every class scored alike).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import noise_jpeg

from classbalanced import cli

pytestmark = pytest.mark.slow

EVAL_COUNTS = [1, 2, 3]
WNIDS = ["n01440764", "n01443537", "n01484850"]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _jpeg(path: Path, seed: int) -> None:
    noise_jpeg(path, seed, size=(24, 18))


def _lists(root: Path, names: dict[str, str], samples: dict[str, list]) -> None:
    for seed, (rel, _) in enumerate(s for split in samples.values() for s in split):
        _jpeg(root / rel, seed)
    for split, name in names.items():
        (root / name).write_text("".join(f"{rel} {c}\n" for rel, c in samples[split]))


def _places_lt(root: Path) -> list[str]:
    scenes = ["a/airfield", "b/bedroom", "c/corridor"]
    samples = {
        "train": [(f"data_256/{s}/{j:08d}.jpg", c) for c, s in enumerate(scenes) for j in range(2)],
        "val": [(f"data_256/{s}/{9:08d}.jpg", c) for c, s in enumerate(scenes)],
        "test": [],
    }
    for c, n in enumerate(EVAL_COUNTS):
        for _ in range(n):
            samples["test"].append((f"val_256/Places365_val_{len(samples['test']) + 1:08d}.jpg", c))
    _lists(root, {s: f"Places_LT_{s}.txt" for s in samples}, samples)
    return ["--allow-size-mismatch"]


def _inat2018_list(root: Path) -> list[str]:
    """The iNaturalist 2018 lists of Kang et al.: ``train_val2018/<kingdom>/<id>/<hash>.jpg``."""
    folders = ["Plantae/7477", "Animalia/2412", "Fungi/5210"]

    def rel(c: int, j: int) -> str:
        return f"train_val2018/{folders[c]}/{hashlib.md5(f'{c}-{j}'.encode()).hexdigest()}.jpg"

    samples = {
        "train": [(rel(c, j), c) for c in range(3) for j in range(2)],
        "val": [(rel(c, 10 + j), c) for c, n in enumerate(EVAL_COUNTS) for j in range(n)],
    }
    _lists(root, {"train": "iNaturalist18_train.txt", "val": "iNaturalist18_val.txt"}, samples)
    return [
        "--train-list",
        root / "iNaturalist18_train.txt",
        "--val-list",
        root / "iNaturalist18_val.txt",
    ]


def _flat_imagenet(root: Path) -> list[str]:
    """train/<wnid>/ and the official flat val/, labels shuffled in image-number order."""
    for c, wnid in enumerate(WNIDS):
        for j in range(2):
            _jpeg(root / "train" / wnid / f"{wnid}_{j}.JPEG", 10 * c + j)
    truth = [WNIDS[c] for c in (2, 1, 0, 2, 1, 2)]
    for k in range(1, len(truth) + 1):
        _jpeg(root / "val" / f"ILSVRC2012_val_{k:08d}.JPEG", 100 + k)
    return truth


def _imagenet_loc_csv(root: Path) -> list[str]:
    truth = _flat_imagenet(root)
    rows = [f"ILSVRC2012_val_{k:08d},{w} 1 2 10 12" for k, w in enumerate(truth, 1)]
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows))
    return []


def _imagenet_devkit(root: Path) -> list[str]:
    import scipy.io as sio

    truth = _flat_imagenet(root)
    data = root / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    ids = {WNIDS[0]: 2, WNIDS[1]: 3, WNIDS[2]: 1}  # ILSVRC2012_IDs are not the wnid order
    fields = [(k, "O") for k in ("ILSVRC2012_ID", "WNID", "words", "gloss", "num_children")]
    synsets = np.array([(i, w, w, "g", 0) for w, i in ids.items()], dtype=fields)
    sio.savemat(data / "meta.mat", {"synsets": synsets})
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text(
        "".join(f"{ids[w]}\n" for w in truth)
    )
    return []


LAYOUTS = {
    "places_lt": ("places_lt", _places_lt),
    "inat2018_lists": ("list", _inat2018_list),
    "imagenet_loc_csv": ("imagenet", _imagenet_loc_csv),
    "imagenet_devkit": ("imagenet", _imagenet_devkit),
}


def _main(capsys, *argv) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return code, captured.out


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_prepare_train_evaluate(tmp_path, capsys, layout):
    dataset, build = LAYOUTS[layout]
    data = tmp_path / "data"
    extra = build(data)
    _main(capsys, "prepare", "--dataset", dataset, "--data-dir", data, *extra)
    run = tmp_path / "run"
    _main(
        capsys, "train", "--dataset", dataset, "--data-dir", data, "--model", "simple_cnn",
        "--image-size", "16", "--epochs", "1", "--batch-size", "3", "--num-workers", "0",
        "--device", "cpu", "--no-progress", "--out", run,
    )  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_counts"] == [2, 2, 2]
    assert metrics["num_test_images"] == sum(EVAL_COUNTS)
    weighted = np.dot(metrics["per_class_accuracy"], EVAL_COUNTS) / sum(EVAL_COUNTS)
    assert metrics["accuracy"] == pytest.approx(weighted, abs=1e-12)
    _, out = _main(capsys, "evaluate", run, "--device", "cpu")
    assert json.loads(out)["accuracy"] == metrics["accuracy"]


def test_a_run_resumed_or_evaluated_on_resized_copies_is_told(tmp_path, capsys):
    # prepare --resize keeps the file list (same fingerprint of paths and labels), but the
    # pixels come from smaller copies since: a resume or evaluate must not switch silently
    data, run = tmp_path / "data", tmp_path / "run"
    args = _inat2018_list(data)
    _main(capsys, "prepare", "--dataset", "list", "--data-dir", data, *args)
    train = [
        "train", "--dataset", "list", "--data-dir", data, "--model", "simple_cnn",
        "--image-size", "8", "--batch-size", "3", "--num-workers", "0", "--device", "cpu",
        "--no-progress", "--out", run,
    ]  # fmt: skip
    _main(capsys, *train, "--epochs", "1")
    _main(capsys, "prepare", "--dataset", "list", "--data-dir", data, *args, "--resize", "12")
    copies = "from classbalanced-list/resized-12"
    for argv in (
        [*train, "--epochs", "2", "--resume", "--force"],
        ["evaluate", run, "--device", "cpu"],
    ):
        assert cli.main([str(a) for a in argv]) == 2
        err = capsys.readouterr().err.strip()
        assert copies in err and "--accept-data-change" in err and len(err.splitlines()) == 1
    _main(capsys, *train, "--epochs", "2", "--resume", "--force", "--accept-data-change")
    assert json.loads((run / "metrics.json").read_text())["epoch"] == 2
    recorded = json.loads((run / "run.json").read_text())["data"]["train"]["fingerprint"]
    assert recorded["images_from"] == "classbalanced-list/resized-12"  # the data it now ran on
