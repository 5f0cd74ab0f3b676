"""List-file datasets (ImageNet-LT, Places-LT, any list) and ImageNet's flat val/ layout.

Every layout is generated here with the official file-name shapes; no real data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import noise_jpeg as _jpeg
from data_helpers import quiet as _quiet

from classbalanced.data import lists
from classbalanced.data.loaders import MEAN_STD, mean_std
from classbalanced.data.prepare import prepare
from classbalanced.data.prepared import load_prepared

WNIDS = ["n01440764", "n01443537", "n01484850"]  # class index order of the lists
LT_TRAIN = [6, 3, 1]  # long-tailed
PLACES = ["airfield", "bedroom", "corridor"]


def _write_list(path: Path, samples) -> None:
    path.write_text("".join(f"{rel} {label}\n" for rel, label in samples))


def _imagenet_lt(root: Path) -> dict[str, list[tuple[str, int]]]:
    """An ImageNet root with the three ImageNet-LT lists (test = val/<wnid>/ILSVRC2012_val_*)."""
    splits: dict[str, list[tuple[str, int]]] = {"train": [], "val": [], "test": []}
    seed, val_no = 0, 0
    for label, (wnid, n) in enumerate(zip(WNIDS, LT_TRAIN, strict=True)):
        for j in range(n + 1):  # one more image per class than the train list: the val list's
            seed += 1
            rel = f"train/{wnid}/{wnid}_{10026 + 7 * j}.JPEG"
            _jpeg(root / rel, seed)
            splits["train" if j < n else "val"].append((rel, label))
        for _ in range(2):
            val_no += 1
            seed += 1
            rel = f"val/{wnid}/ILSVRC2012_val_{val_no:08d}.JPEG"
            _jpeg(root / rel, seed)
            splits["test"].append((rel, label))
    for split, samples in splits.items():
        _write_list(root / f"ImageNet_LT_{split}.txt", samples)
    return splits


def _places_lt(root: Path) -> dict[str, list[tuple[str, int]]]:
    """A folder in the official Places-LT lists' layout (train/<scene>/..., the test list's
    val/<scene>/Places365_val_*.jpg) with the three lists."""
    splits: dict[str, list[tuple[str, int]]] = {"train": [], "val": [], "test": []}
    seed = 100
    for label, (scene, n) in enumerate(zip(PLACES, [5, 2, 1], strict=True)):
        for j in range(n + 1):
            seed += 1
            rel = f"train/{scene}/{j + 1:08d}.jpg"
            _jpeg(root / rel, seed)
            splits["train" if j < n else "val"].append((rel, label))
        for j in range(2):
            seed += 1
            rel = f"val/{scene}/Places365_val_{label * 2 + j + 1:08d}.jpg"
            _jpeg(root / rel, seed)
            splits["test"].append((rel, label))
    for split, samples in splits.items():
        _write_list(root / f"Places_LT_{split}.txt", samples)
    return splits


# --------------------------------------------------------------------------- benchmarks


def test_imagenet_lt_prepare_and_load(tmp_path):
    splits = _imagenet_lt(tmp_path)
    layout = prepare("imagenet_lt", tmp_path, log=_quiet, allow_size_mismatch=True)
    assert layout.class_names == WNIDS
    assert layout.train_counts.tolist() == LT_TRAIN
    assert layout.splits == splits
    assert layout.eval_split == "test" and layout.val_samples == splits["test"]
    assert layout.tune_samples == splits["val"]
    out = tmp_path / "classbalanced-imagenet_lt"
    assert (out / "train_counts.txt").read_text() == "6\n3\n1\n"
    assert (out / "test.tsv").read_text().splitlines()[
        0
    ] == "val/n01440764/ILSVRC2012_val_00000001.JPEG\t0"
    loaded = load_prepared("imagenet_lt", tmp_path)
    assert loaded.splits == splits and loaded.eval_split == "test"
    assert loaded.val_samples == splits["test"] and loaded.tune_samples == splits["val"]
    assert mean_std("imagenet_lt") == MEAN_STD["imagenet"]
    # an edited list is noticed
    with open(tmp_path / "ImageNet_LT_val.txt", "a") as f:
        f.write("train/n01440764/n01440764_99.JPEG 0\n")
    with pytest.raises(ValueError, match=r"ImageNet_LT_val.txt changed since it was prepared"):
        load_prepared("imagenet_lt", tmp_path)


def test_imagenet_lt_test_list_over_imagenet_s_flat_val(tmp_path):
    """The test list names val/<wnid>/ILSVRC2012_val_N.JPEG; ImageNet's own val/ is flat."""
    splits = _imagenet_lt(tmp_path)
    for rel, _ in splits["test"]:  # move the test images into the flat folder
        src = tmp_path / rel
        src.rename(tmp_path / "val" / src.name)
    for wnid in WNIDS:
        (tmp_path / "val" / wnid).rmdir()
    layout = prepare("imagenet_lt", tmp_path, log=_quiet, allow_size_mismatch=True)
    flat = [(f"val/{Path(rel).name}", label) for rel, label in splits["test"]]
    assert layout.splits["test"] == flat and layout.splits["train"] == splits["train"]
    assert (tmp_path / "classbalanced-imagenet_lt" / "test.tsv").read_text().splitlines()[
        0
    ] == "val/ILSVRC2012_val_00000001.JPEG\t0"
    assert load_prepared("imagenet_lt", tmp_path).splits["test"] == flat
    # an image in neither place is still missing
    (tmp_path / flat[-1][0]).unlink()
    with pytest.raises(ValueError, match="missing"):
        prepare("imagenet_lt", tmp_path, log=_quiet, allow_size_mismatch=True)


def test_places_lt_prepare(tmp_path):
    splits = _places_lt(tmp_path)
    layout = prepare("places_lt", tmp_path, log=_quiet, allow_size_mismatch=True)
    assert layout.class_names == PLACES
    assert layout.train_counts.tolist() == [5, 2, 1]
    assert layout.val_samples == splits["test"] and layout.tune_samples == splits["val"]
    assert load_prepared("places_lt", tmp_path).splits == splits


def _benchmark_counts(num_classes: int, total: int, high: int, low: int) -> np.ndarray:
    """Per-class counts with the benchmark's number of classes, total, maximum and minimum."""
    counts = np.geomspace(high, low, num_classes).round().astype(np.int64)
    counts[0], counts[-1] = high, low
    k = 1
    while counts.sum() != total:  # nudge the middle classes until the total matches
        step = 1 if counts.sum() < total else -1
        counts[k] = min(high, max(low, counts[k] + step))
        k = k % (num_classes - 2) + 1
    return counts


@pytest.mark.parametrize("dataset", ["imagenet_lt", "places_lt"])
def test_published_sizes_are_checked(tmp_path, dataset):
    bench = lists.BENCHMARKS[dataset]
    counts = _benchmark_counts(
        bench.num_classes, bench.num_train, bench.max_per_class, bench.min_per_class
    )
    samples = [(f"train/c{c}/{c}_{j}.JPEG", c) for c, n in enumerate(counts) for j in range(n)]
    _write_list(tmp_path / bench.files["train"], samples)
    _write_list(tmp_path / bench.files["test"], samples[:: len(samples) // 50])
    layout = prepare(dataset, tmp_path, check_files=False, log=_quiet)
    assert layout.num_classes == bench.num_classes and len(layout.train_samples) == bench.num_train
    # one image fewer: refused, with the published and the found sizes on one line
    _write_list(tmp_path / bench.files["train"], samples[1:])
    with pytest.raises(ValueError) as info:
        prepare(dataset, tmp_path, check_files=False, log=_quiet)
    message = str(info.value)
    assert "\n" not in message
    assert f"does not match {bench.title} (Liu et al., CVPR 2019)" in message
    assert f"expected {bench.num_classes} classes, {bench.num_train} training images" in message
    assert f"got {bench.num_classes} classes, {bench.num_train - 1} images" in message
    assert "--allow-size-mismatch" in message
    logged: list[str] = []
    prepare(dataset, tmp_path, check_files=False, log=logged.append, allow_size_mismatch=True)
    assert any(m.startswith("warning: ") and "does not match" in m for m in logged)


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "train/n01440764/x.JPEG 3",
            r"ImageNet_LT_test.txt: line 7: label out of range: expected 0 <= label < 3 "
            r"\(the classes of ImageNet_LT_train.txt: 0 to its largest label\), got 3",
        ),
        (
            "train/n01440764/x.JPEG -1",
            r"line 7: label out of range: expected 0 <= label < 3 \(the classes of .*\), got -1",
        ),
        ("train/n01440764/x.JPEG zero", r"line 7: expected an integer class index, got 'zero'"),
        ("train/n01440764/x.JPEG", r"line 7: expected 'relative/path label', got"),
        (
            "/abs/x.JPEG 0",
            r"line 7: expected a path relative to the data folder, got '/abs/x.JPEG'",
        ),
        ("../x.JPEG 0", r"line 7: expected a path inside the data folder"),
        (
            "val/n01440764/ILSVRC2012_val_00000001.JPEG 0",
            r"line 7: duplicated path val/n01440764/ILSVRC2012_val_00000001.JPEG \(already listed at line 1\)",
        ),
    ],
)
def test_bad_list_lines_are_one_line_errors(tmp_path, line, message):
    _imagenet_lt(tmp_path)
    with open(tmp_path / "ImageNet_LT_test.txt", "a") as f:
        f.write(line + "\n")
    with pytest.raises(ValueError, match=message) as info:
        prepare("imagenet_lt", tmp_path, log=_quiet, allow_size_mismatch=True)
    assert "\n" not in str(info.value)


def test_missing_listed_image_refused_then_skipped(tmp_path):
    splits = _imagenet_lt(tmp_path)
    gone = splits["train"][1][0]
    (tmp_path / gone).unlink()
    with pytest.raises(
        ValueError,
        match=rf"1 of 10 images referenced by ImageNet_LT_train.txt are missing \(e.g. {gone}\); pass --skip-missing",
    ):
        prepare("imagenet_lt", tmp_path, log=_quiet, allow_size_mismatch=True)
    logged: list[str] = []
    layout = prepare(
        "imagenet_lt", tmp_path, log=logged.append, allow_size_mismatch=True, skip_missing=True
    )
    assert layout.train_counts.tolist() == [5, 3, 1] and layout.num_skipped == 1
    assert gone not in {rel for rel, _ in layout.train_samples}
    assert any("no longer has ImageNet-LT's published size" in m for m in logged)


def test_generic_list_dataset(tmp_path):
    splits = _places_lt(tmp_path)
    given = {"train": tmp_path / "Places_LT_train.txt", "val": tmp_path / "Places_LT_test.txt"}
    layout = prepare("list", tmp_path, lists=given, log=_quiet)
    assert layout.eval_split == "val" and layout.val_samples == splits["test"]
    assert layout.tune_samples == splits["test"]  # no separate split to tune on
    assert layout.num_classes == 3
    with pytest.raises(ValueError, match=r"--dataset list needs --train-list PATH"):
        prepare("list", tmp_path, lists={"val": given["val"]}, log=_quiet)
    with pytest.raises(ValueError, match=r"needs --val-list PATH or --test-list PATH"):
        prepare("list", tmp_path, lists={"train": given["train"]}, log=_quiet)
    with pytest.raises(FileNotFoundError, match=r"list file not found: expected a file at"):
        prepare("list", tmp_path, lists={**given, "test": tmp_path / "nope.txt"}, log=_quiet)
    with pytest.raises(ValueError, match=r"list files are for --dataset list, imagenet_lt"):
        prepare("inat2018", tmp_path, lists=given, log=_quiet)
    # train checks that its --train-list is the prepared one
    lists.check_prepared_lists("list", tmp_path, {"train": str(given["train"])})
    with pytest.raises(ValueError, match=r"--val-list .*: expected the list prepared in"):
        lists.check_prepared_lists("list", tmp_path, {"val": str(given["train"])})


def test_benchmark_without_its_train_list(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ImageNet-LT: expected ImageNet_LT_train.txt in"):
        prepare("imagenet_lt", tmp_path, log=_quiet)


# --------------------------------------------------------------------------- ImageNet flat val/


def _flat_imagenet(root: Path) -> list[str]:
    """train/<wnid>/ class folders and a flat val/ of 6 images; returns each val image's wnid."""
    for i, wnid in enumerate(WNIDS):
        for j in range(2):
            _jpeg(root / "train" / wnid / f"{wnid}_{j}.JPEG", 10 * i + j)
    truth = [WNIDS[k % 3] for k in (2, 0, 1, 1, 0, 2)]
    for k in range(1, 7):
        _jpeg(root / "val" / f"ILSVRC2012_val_{k:08d}.JPEG", 100 + k)
    return truth


def _expected_val(truth: list[str]) -> list[tuple[str, int]]:
    return [(f"val/ILSVRC2012_val_{k:08d}.JPEG", WNIDS.index(w)) for k, w in enumerate(truth, 1)]


def _loc_csv(root: Path, truth: list[str]) -> None:
    rows = ["ImageId,PredictionString"] + [
        f"ILSVRC2012_val_{k:08d},{w} 10 12 100 140 {w} 3 4 50 60"
        for k, w in reversed(list(enumerate(truth, 1)))  # any order
    ]
    (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")


def _devkit(root: Path, truth: list[str]) -> None:
    import scipy.io as sio

    data = root / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    fields = [
        ("ILSVRC2012_ID", "O"),
        ("WNID", "O"),
        ("words", "O"),
        ("gloss", "O"),
        ("num_children", "O"),
    ]
    # ILSVRC2012_IDs are not the sorted-wnid order; one non-leaf synset that must be ignored
    ids = {WNIDS[0]: 3, WNIDS[1]: 1, WNIDS[2]: 2}
    rows = [(ids[w], w, f"word {w}", "gloss", 0) for w in WNIDS] + [
        (4, "n00001740", "entity", "g", 3)
    ]
    synsets = np.array(rows, dtype=fields)
    sio.savemat(data / "meta.mat", {"synsets": synsets})
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text(
        "".join(f"{ids[w]}\n" for w in truth)
    )


def test_flat_val_with_loc_csv(tmp_path):
    truth = _flat_imagenet(tmp_path)
    _loc_csv(tmp_path, truth)
    layout = prepare("imagenet", tmp_path, log=_quiet)
    assert layout.class_names == WNIDS and layout.val_samples == _expected_val(truth)
    assert load_prepared("imagenet", tmp_path).val_samples == _expected_val(truth)
    # a changed label file or val/ folder is noticed
    os.utime(tmp_path / "LOC_val_solution.csv", ns=(0, 5_000_000_000))
    with pytest.raises(ValueError, match=r"^LOC_val_solution.csv changed since it was prepared"):
        load_prepared("imagenet", tmp_path)
    prepare("imagenet", tmp_path, log=_quiet)
    _jpeg(tmp_path / "val" / "ILSVRC2012_val_00000007.JPEG", 7)
    with pytest.raises(ValueError, match=r"ILSVRC2012_val_00000007.JPEG"):
        prepare("imagenet", tmp_path, log=_quiet)
    with pytest.raises(ValueError, match=r"^val/ changed since it was prepared"):
        load_prepared("imagenet", tmp_path)


def test_flat_val_with_devkit(tmp_path):
    truth = _flat_imagenet(tmp_path)
    _devkit(tmp_path, truth)
    layout = prepare("imagenet", tmp_path, log=_quiet)
    assert layout.val_samples == _expected_val(truth)


def test_flat_val_with_torchvision_meta_bin(tmp_path):
    truth = _flat_imagenet(tmp_path)
    torch.save(({w: (w,) for w in WNIDS}, truth), tmp_path / "meta.bin")  # torchvision's format
    layout = prepare("imagenet", tmp_path, log=_quiet)
    assert layout.val_samples == _expected_val(truth)


def test_flat_val_devkit_archive_is_md5_checked(tmp_path):
    _flat_imagenet(tmp_path)
    (tmp_path / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(b"not the devkit")
    with pytest.raises(
        ValueError,
        match=r"^ILSVRC2012_devkit_t12.tar.gz: The archive .* is not present .* or is corrupted",
    ):
        prepare("imagenet", tmp_path, log=_quiet)


def test_flat_val_bad_labels(tmp_path):
    truth = _flat_imagenet(tmp_path)
    _loc_csv(tmp_path, truth[:5])  # image 6 has no label
    with pytest.raises(
        ValueError,
        match=r"^1 images in val/ have no label in LOC_val_solution.csv \(e.g. ILSVRC2012_val_00000006.JPEG\)",
    ):
        prepare("imagenet", tmp_path, log=_quiet)
    _loc_csv(tmp_path, [*truth[:5], "n09999999"])
    with pytest.raises(
        ValueError,
        match=r"ILSVRC2012_val_00000006.JPEG: expected a wnid with a train/ class folder, got 'n09999999'",
    ):
        prepare("imagenet", tmp_path, log=_quiet)
    _loc_csv(tmp_path, truth)
    (tmp_path / "val" / "ILSVRC2012_val_00000002.JPEG").unlink()
    with pytest.raises(
        ValueError, match=r"1 of 6 images labelled in LOC_val_solution.csv are missing from val/"
    ):
        prepare("imagenet", tmp_path, log=_quiet)
    layout = prepare("imagenet", tmp_path, log=_quiet, skip_missing=True)
    assert layout.val_samples == [s for s in _expected_val(truth) if "00000002" not in s[0]]
    (tmp_path / "LOC_val_solution.csv").write_text("id,label\n")
    with pytest.raises(ValueError, match=r"expected the header 'ImageId,PredictionString'"):
        prepare("imagenet", tmp_path, log=_quiet)


# --------------------------------------------------------------------------- command line


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    """``classbalanced ARGS`` in this process: exit status, stdout, stderr."""
    from classbalanced import cli

    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_prepare_train_evaluate_imagenet_lt(tmp_path, capsys):
    data = tmp_path / "imagenet"
    splits = _imagenet_lt(data)
    prepare = ["prepare", "--dataset", "imagenet_lt", "--data-dir", str(data)]
    code, _, err = _cli(capsys, *prepare)
    assert code == 2 and err.count("\n") == 1 and "does not match ImageNet-LT" in err
    code, _, err = _cli(capsys, *prepare, "--allow-size-mismatch")
    assert code == 0, err
    assert "10 training and 6 evaluation (test) images, 3 classes" in err
    run = tmp_path / "run"
    train = [
        "train", "--dataset", "imagenet_lt", "--data-dir", str(data), "--model", "simple_cnn",
        "--image-size", "16", "--epochs", "1", "--batch-size", "4", "--num-workers", "0",
        "--device", "cpu", "--no-progress", "--out", str(run),
    ]  # fmt: skip
    code, _, err = _cli(capsys, *train)
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_test_images"] == len(splits["test"]) and metrics["train_counts"] == LT_TRAIN
    code, out, err = _cli(capsys, "evaluate", str(run), "--device", "cpu")
    assert code == 0, err
    assert json.loads(out)["accuracy"] == metrics["accuracy"]
    other = tmp_path / "other.txt"
    other.write_text((data / "ImageNet_LT_train.txt").read_text())
    code, _, err = _cli(capsys, *train[:-1], str(tmp_path / "run2"), "--train-list", str(other))
    assert code == 2 and "expected the list prepared in" in err
