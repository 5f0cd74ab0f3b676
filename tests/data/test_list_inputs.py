"""Adversarial inputs to the list-file and flat-val readers: what users' files really look like.

Each test builds a tiny data folder, feeds one malformed or unusual input and checks the
outcome: the right samples, or a one-line error naming the file and line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from data_helpers import noise_jpeg as _jpeg
from data_helpers import quiet as _quiet

from classbalanced.data import lists
from classbalanced.data.prepare import prepare
from classbalanced.data.prepared import PreparedLayout, load_prepared, prepared_dir


def _tree(root: Path) -> list[tuple[str, int]]:
    """Six images ``img/c<k>/<j>.jpg`` of classes 0, 0, 0, 1, 1, 2 (the train list's)."""
    samples = [(f"img/c{c}/{j}.jpg", c) for c, n in enumerate([3, 2, 1]) for j in range(n)]
    for seed, (rel, _) in enumerate(samples):
        _jpeg(root / rel, seed)
    for c in range(3):  # one val image per class
        _jpeg(root / f"val/{c}.jpg", 50 + c)
    (root / "val.txt").write_text("".join(f"val/{c}.jpg {c}\n" for c in range(3)))
    return samples


def _prepare(root: Path, train_text: str | bytes, **kwargs) -> PreparedLayout:
    path = root / "train.txt"
    if isinstance(train_text, bytes):
        path.write_bytes(train_text)
    else:
        path.write_text(train_text, newline="")
    given = {"train": path, "val": root / "val.txt"}
    return prepare("list", root, lists=given, log=kwargs.pop("log", _quiet), **kwargs)


def _text(samples, end: str = "\n") -> str:
    return "".join(f"{rel} {label}{end}" for rel, label in samples)


# --------------------------------------------------------------------------- encodings, line ends


def test_utf8_bom_crlf_blank_lines_and_trailing_spaces_are_read(tmp_path):
    samples = _tree(tmp_path)
    text = "\ufeff" + _text(samples, end=" \r\n") + "\r\n  \r\n"
    layout = _prepare(tmp_path, text.encode("utf-8"))
    assert layout.train_samples == samples  # no BOM glued to the first path
    assert lists.read_list(tmp_path / "train.txt") == samples


# names with characters str.splitlines() also breaks lines at (form feed, file separator,
# NEL, the Unicode line and paragraph separators): legal in Linux file names
ODD_NAMES = ["a\x0cb.jpg", "c\x1cd.jpg", "e\x85f.jpg", "photo\u2028copy.jpg", "g\u2029h.jpg"]


def test_a_list_breaks_lines_only_at_line_ends(tmp_path):
    samples = [(f"img/{name}", k % 2) for k, name in enumerate(ODD_NAMES)]
    (tmp_path / "train.txt").write_text(_text(samples, end="\r\n"), newline="")
    assert lists.read_list(tmp_path / "train.txt") == samples


def test_prepared_files_read_back_names_with_unicode_line_separators(tmp_path):
    # prepare wrote them; training then refused its own train.tsv
    for split in ("train", "val"):
        for c, wnid in enumerate(["n01", "n02"]):
            for k, name in enumerate(ODD_NAMES):
                _jpeg(tmp_path / split / wnid / f"{wnid}_{name}", 10 * c + k)
    layout = prepare("imagenet", tmp_path, log=_quiet)
    assert len(layout.train_samples) == 2 * len(ODD_NAMES)
    loaded = load_prepared("imagenet", tmp_path)
    assert loaded.train_samples == layout.train_samples
    assert loaded.val_samples == layout.val_samples


# --------------------------------------------------------------------------- paths


def test_paths_are_normalised_so_one_image_cannot_be_listed_twice(tmp_path):
    samples = _tree(tmp_path)
    spelled = [("./img//c0/./0.jpg", 0), *samples[1:]]
    assert _prepare(tmp_path, _text(spelled)).train_samples == samples
    for other in ("img//c0/0.jpg", "img/./c0/0.jpg", "./img/c0/0.jpg", "img/c0/0.jpg/"):
        with pytest.raises(
            ValueError,
            match=rf"^train.txt: line 7: duplicated path {other} = img/c0/0.jpg \(already listed at line 1\)$",
        ):
            _prepare(tmp_path, _text([*samples, (other, 0)]))


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize("label", ["1_0", "+1", "\uff11", "\u0661", "1.0", "1e0", "0x1", "one"])
def test_a_label_is_ascii_digits_only(tmp_path, label):
    samples = _tree(tmp_path)
    with pytest.raises(
        ValueError,
        match=rf"^train.txt: line 7: expected an integer class index, got '{re.escape(label)}'$",
    ):
        _prepare(tmp_path, _text(samples) + f"img/c0/extra.jpg {label}\n")


def test_a_train_label_beyond_one_class_per_image_is_refused_before_counting(tmp_path):
    samples = _tree(tmp_path)
    # a typo'd label once made np.bincount allocate C counts (10**12 classes: 8 TB)
    text = _text([*samples[:-1], (samples[-1][0], 10**12)])
    with pytest.raises(
        ValueError,
        match=r"^train.txt: line 6: label 1000000000000 makes 1000000000001 classes for 6 training "
        r"images: expected a class index below 6 \(every class needs training images\)$",
    ):
        _prepare(tmp_path, text)
    # a gap below one class per image stays a warning (training refuses empty classes)
    logged: list[str] = []
    layout = _prepare(tmp_path, _text([*samples[:-1], (samples[-1][0], 5)]), log=logged.append)
    assert layout.train_counts.tolist() == [3, 2, 0, 0, 0, 1]
    assert any(m.startswith("warning: 3 of 6 classes have no training images") for m in logged)


# --------------------------------------------------------------------------- missing images


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_split_left_empty_by_skip_missing_is_refused(tmp_path, split):
    samples = _tree(tmp_path)
    _prepare(tmp_path, _text(samples))  # an earlier, good prepare
    if split == "train":
        text = _text([(f"gone/{c}.jpg", c) for c in range(3)])
    else:
        text = _text(samples)
        (tmp_path / "val.txt").write_text(_text([(f"gone/{c}.jpg", c) for c in range(3)]))
    with pytest.raises(
        ValueError,
        match=rf"^no {split} images: expected at least one, got none \(3 listed images are missing: "
        r"--skip-missing left them out\)$",
    ):
        _prepare(tmp_path, text, skip_missing=True)
    # the earlier prepared files are untouched (and noticed as stale)
    with pytest.raises(ValueError, match=r"changed since it was prepared"):
        load_prepared("list", tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"lists": ', r"corrupt prepared file in .*: Expecting value at line 2"),
        ('{"dataset": "places_lt"}', r"prepared\.json: expected dataset 'list', got 'places_lt'"),
    ],
)
def test_train_with_a_list_reads_a_damaged_prepared_json_like_load_prepared(
    tmp_path, content, message
):
    samples = _tree(tmp_path)
    _prepare(tmp_path, _text(samples))
    given = {"train": tmp_path / "train.txt", "val": tmp_path / "val.txt"}
    lists.check_prepared_lists("list", tmp_path, given)  # as prepared
    (prepared_dir("list", tmp_path) / "prepared.json").write_text(content + "\n")
    with pytest.raises(ValueError, match=message) as info:
        lists.check_prepared_lists("list", tmp_path, given)
    assert "run `classbalanced prepare --dataset list" in str(info.value)


# --------------------------------------------------------------------------- ImageNet's flat val/

WNIDS = ["n01440764", "n01443537", "n01484850"]
TRUTH = [WNIDS[k] for k in (2, 0, 1, 1)]  # the class of val image 1, 2, 3, 4


def _flat_imagenet(root: Path) -> list[tuple[str, int]]:
    """train/<wnid>/ with one image per class and a flat val/ of 4; the expected val samples."""
    for i, wnid in enumerate(WNIDS):
        _jpeg(root / "train" / wnid / f"{wnid}_{i}.JPEG", i)
    for k in range(1, len(TRUTH) + 1):
        _jpeg(root / "val" / f"ILSVRC2012_val_{k:08d}.JPEG", 10 + k)
    return [(f"val/ILSVRC2012_val_{k:08d}.JPEG", WNIDS.index(w)) for k, w in enumerate(TRUTH, 1)]


def _loc_rows(truth) -> list[str]:
    return [f"ILSVRC2012_val_{k:08d},{w} 1 2 30 40" for k, w in enumerate(truth, 1)]


def test_loc_csv_with_a_byte_order_mark_and_crlf_is_read(tmp_path):
    expected = _flat_imagenet(tmp_path)
    text = "\ufeffImageId,PredictionString\r\n" + "\r\n".join(_loc_rows(TRUTH)) + "\r\n"
    (tmp_path / "LOC_val_solution.csv").write_bytes(text.encode("utf-8"))
    assert prepare("imagenet", tmp_path, log=_quiet).val_samples == expected


def test_hidden_files_in_a_flat_val_folder_are_skipped_like_in_class_folders(tmp_path):
    # macOS copies leave AppleDouble files ``._<name>`` next to every image
    expected = _flat_imagenet(tmp_path)
    for rel, _ in expected:
        (tmp_path / "val" / f"._{Path(rel).name}").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (tmp_path / "train" / WNIDS[0] / f"._{WNIDS[0]}_0.JPEG").write_bytes(b"\x00\x05\x16\x07")
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n" + "\n".join(_loc_rows(TRUTH)) + "\n"
    )
    layout = prepare("imagenet", tmp_path, log=_quiet)
    assert layout.val_samples == expected
    assert len(layout.train_samples) == len(WNIDS)


@pytest.mark.parametrize("wnid", [TRUTH[0], WNIDS[0]])  # the same label again, or another one
def test_loc_csv_listing_an_image_twice_is_refused(tmp_path, wnid):
    _flat_imagenet(tmp_path)
    rows = [
        "ImageId,PredictionString",
        *_loc_rows(TRUTH),
        f"ILSVRC2012_val_00000001,{wnid} 5 6 7 8",
    ]
    (tmp_path / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(
        ValueError,
        match=r"^LOC_val_solution.csv: line 6: duplicated ImageId ILSVRC2012_val_00000001 "
        r"\(already listed at line 2\)$",
    ):
        prepare("imagenet", tmp_path, log=_quiet)


# --------------------------------------------------------------------------- prepare's options


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"workers": -1, "resize": 20}, r"^--workers: expected an integer >= 0, got -1$"),
        (
            {"workers": 2},
            r"^--workers: the processes that write resized copies: expected 0 without --resize, got 2$",
        ),
        (
            {"skip_missing": True, "check_files": False},
            r"^--skip-missing: missing images are found by the file check: expected it on, got "
            r"--no-check-files$",
        ),
        (
            {"allow_size_mismatch": True},
            r"^--allow-size-mismatch: for --dataset imagenet_lt / places_lt \(published sizes\), got --dataset list$",
        ),
    ],
)
def test_an_option_prepare_would_ignore_is_refused(tmp_path, options, message):
    samples = _tree(tmp_path)
    with pytest.raises(ValueError, match=message):
        _prepare(tmp_path, _text(samples), **options)
    assert not (tmp_path / "classbalanced-list").exists()


# --------------------------------------------------------------------------- across splits


def test_an_image_with_another_label_in_another_split_is_refused(tmp_path):
    samples = _tree(tmp_path)
    (tmp_path / "val.txt").write_text("val/0.jpg 0\nimg/c0/1.jpg 2\n")
    with pytest.raises(
        ValueError,
        match=r"^val.txt: img/c0/1.jpg has label 2, but train.txt gives it label 0: "
        r"expected one class per image$",
    ):
        _prepare(tmp_path, _text(samples))


def test_training_images_in_the_evaluated_split_are_reported(tmp_path):
    samples = _tree(tmp_path)
    (tmp_path / "val.txt").write_text("val/0.jpg 0\nimg/c0/1.jpg 0\nval/2.jpg 2\n")
    logged: list[str] = []
    layout = _prepare(tmp_path, _text(samples), log=logged.append)
    assert layout.val_samples == [("val/0.jpg", 0), ("img/c0/1.jpg", 0), ("val/2.jpg", 2)]
    assert "warning: 1 of 3 images of val.txt are in train.txt too (e.g. img/c0/1.jpg)" in logged
    logged.clear()
    (tmp_path / "val.txt").write_text("val/0.jpg 0\nval/1.jpg 1\n")
    _prepare(tmp_path, _text(samples), log=logged.append)
    assert not any("too" in m for m in logged)


def test_missing_test_images_do_not_change_the_benchmarks_training_set(tmp_path):
    samples = _tree(tmp_path)
    (tmp_path / "ImageNet_LT_train.txt").write_text(_text(samples))
    (tmp_path / "ImageNet_LT_test.txt").write_text("val/0.jpg 0\nval/1.jpg 1\nval/gone.jpg 2\n")
    logged: list[str] = []
    prepare("imagenet_lt", tmp_path, allow_size_mismatch=True, skip_missing=True, log=logged.append)
    assert any("1 of 3 images referenced by ImageNet_LT_test.txt are missing" in m for m in logged)
    assert not any("training set" in m for m in logged)
    (tmp_path / "img/c0/0.jpg").unlink()
    logged.clear()
    prepare("imagenet_lt", tmp_path, allow_size_mismatch=True, skip_missing=True, log=logged.append)
    assert (
        "warning: 1 training images are missing: the training set no longer has ImageNet-LT's "
        "published size" in logged
    )


def test_an_eval_label_beyond_the_train_lists_classes_says_where_they_come_from(tmp_path):
    samples = _tree(tmp_path)
    (tmp_path / "val.txt").write_text("val/0.jpg 0\nval/1.jpg 3\n")
    with pytest.raises(
        ValueError,
        match=r"^val.txt: line 2: label out of range: expected 0 <= label < 3 "
        r"\(the classes of train.txt: 0 to its largest label\), got 3$",
    ):
        _prepare(tmp_path, _text(samples))


def test_a_windows_path_is_refused_as_such(tmp_path):
    samples = _tree(tmp_path)
    with pytest.raises(
        ValueError,
        match=r"^train.txt: line 7: expected a path with / separators, got 'img\\\\c0\\\\0.jpg'$",
    ):
        _prepare(tmp_path, _text(samples) + "img\\c0\\0.jpg 0\n")


@pytest.mark.parametrize("split", ["train", "val"])
def test_class_folders_next_to_loose_images_are_refused(tmp_path, split):
    _flat_imagenet(tmp_path)
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n" + "\n".join(_loc_rows(TRUTH)) + "\n"
    )
    if split == "val":  # half sorted into class folders: the loose images were not evaluated
        _jpeg(tmp_path / "val" / WNIDS[0] / "ILSVRC2012_val_00000009.JPEG", 9)
    else:
        _jpeg(tmp_path / "train" / "stray.JPEG", 9)
    with pytest.raises(
        ValueError,
        match=rf"^ImageNet layout: expected either class folders or loose images in {split}/, got "
        + (
            r"1 class folders and 4 loose images \(e.g. ILSVRC2012_val_00000001.JPEG, "
            if split == "val"
            else r"3 class folders and 1 loose images \(e.g. stray.JPEG\)"
        ),
    ):
        prepare("imagenet", tmp_path, log=_quiet)


# --------------------------------------------------------------------------- command line


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("img/c0/gone.jpg 0", r"1 of 7 images referenced by train.txt are missing"),
        ("img/c0/0.jpg 7", r"train.txt: line 7: label 7 makes 8 classes for 7 training images"),
        ("img//c0/0.jpg 0", r"train.txt: line 7: duplicated path img//c0/0.jpg = img/c0/0.jpg"),
        ("img/c0/0.jpg 1_0", r"train.txt: line 7: expected an integer class index, got '1_0'"),
    ],
)
def test_cli_prepare_bad_list_is_one_line_and_exit_2(tmp_path, capsys, line, message):
    from classbalanced import cli

    samples = _tree(tmp_path)
    (tmp_path / "train.txt").write_text(_text(samples) + line + "\n")
    argv = ["prepare", "--dataset", "list", "--data-dir", str(tmp_path)]
    argv += ["--train-list", str(tmp_path / "train.txt"), "--val-list", str(tmp_path / "val.txt")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert re.match(rf"classbalanced: error: {message}", err)
    assert not (tmp_path / "classbalanced-list").exists()


@pytest.mark.parametrize("content", [b"", b"garbage", "dict", "one"])
def test_a_corrupt_meta_bin_is_a_one_line_error(tmp_path, content):
    import torch

    _flat_imagenet(tmp_path)
    if content == "dict":
        torch.save({"a": 1}, tmp_path / "meta.bin")
    elif content == "one":
        torch.save(({}, [1, 2, 3, 4]), tmp_path / "meta.bin")  # ints, not wnids
    else:
        (tmp_path / "meta.bin").write_bytes(content)
    with pytest.raises(
        ValueError,
        match=r"^meta.bin: expected torchvision's ImageNet meta file \(wnid -> classes, "
        r"validation wnids\), got ",
    ) as info:
        prepare("imagenet", tmp_path, log=_quiet)
    assert "\n" not in str(info.value)


def test_a_loc_csv_that_is_not_utf8_is_named(tmp_path):
    _flat_imagenet(tmp_path)
    text = "ImageId,PredictionString\n" + "\n".join(_loc_rows(TRUTH)) + "\n"
    (tmp_path / "LOC_val_solution.csv").write_bytes(
        text.encode() + b"ILSVRC2012_val_00000009,n\xff 1\n"
    )
    with pytest.raises(
        ValueError, match=r"^LOC_val_solution.csv: expected UTF-8 text, got invalid start byte$"
    ):
        prepare("imagenet", tmp_path, log=_quiet)
