"""``prepare --resize``: the cache of resized copies holds exactly the current images.

A copy is made from one version of its source; a changed source (whatever its mtime), an
unreadable or a missing one must not leave an old copy for training to read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from data_helpers import noise_jpeg
from PIL import Image

from classbalanced.data.prepare import prepare
from classbalanced.data.prepared import load_prepared
from classbalanced.data.resize import resize_copy, resize_images


def _jpeg(path: Path, seed: int) -> Path:
    return noise_jpeg(path, seed, size=(60, 40))


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


def test_a_source_replaced_by_an_older_file_is_copied_again(tmp_path):
    src, dest = _jpeg(tmp_path / "a.jpg", 0), tmp_path / "out" / "a.jpg"
    assert resize_copy(str(src), str(dest), 20)
    before = _pixels(dest)
    _jpeg(src, 1)  # another image, with an mtime older than the copy's (rsync -a, tar, cp -p)
    os.utime(src, ns=(10**18, 10**18 - 1))
    os.utime(dest, ns=(10**18, 10**18))
    assert resize_copy(str(src), str(dest), 20)
    fresh = tmp_path / "fresh" / "a.jpg"
    assert resize_copy(str(src), str(fresh), 20)
    assert np.abs(_pixels(dest) - before).mean() > 20  # not the old copy
    assert dest.read_bytes() == fresh.read_bytes()  # but the new image's
    assert os.stat(dest).st_mtime_ns == os.stat(src).st_mtime_ns  # made from this version


def test_no_copy_is_left_of_an_unreadable_or_missing_source(tmp_path):
    rels = ["img/a.jpg", "img/b.jpg", "img/c.jpg"]
    for seed, rel in enumerate(rels):
        _jpeg(tmp_path / rel, seed)
    out = tmp_path / "out"
    assert resize_images(tmp_path, out, rels, 20) == []
    (tmp_path / "img/a.jpg").write_bytes(b"now broken")
    (tmp_path / "img/b.jpg").unlink()
    assert resize_images(tmp_path, out, rels, 20, workers=2) == ["img/a.jpg", "img/b.jpg"]
    assert sorted(p.name for p in (out / "img").iterdir()) == ["c.jpg"]  # no old a or b


def test_a_source_listed_inside_the_cache_is_never_touched(tmp_path):
    out = tmp_path / "out"
    inside = out / "img" / "x.jpg"
    inside.parent.mkdir(parents=True)
    inside.write_bytes(b"a user's file, not an image")
    assert resize_images(out, out, ["img/x.jpg"], 20) == []  # its own copy
    assert inside.read_bytes() == b"a user's file, not an image"


def test_prepare_resize_after_an_image_broke_or_went_missing(tmp_path):
    for seed, rel in enumerate(["img/0.jpg", "img/1.jpg", "img/2.jpg", "img/3.jpg"]):
        _jpeg(tmp_path / rel, seed)
    (tmp_path / "train.txt").write_text("img/0.jpg 0\nimg/1.jpg 1\nimg/2.jpg 0\n")
    (tmp_path / "val.txt").write_text("img/3.jpg 1\n")
    lists = {"train": tmp_path / "train.txt", "val": tmp_path / "val.txt"}
    logged: list[str] = []
    prepare("list", tmp_path, lists=lists, resize=20, log=logged.append)
    cache = tmp_path / "classbalanced-list" / "resized-20" / "img"
    assert sorted(p.name for p in cache.iterdir()) == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]
    (tmp_path / "img/0.jpg").write_bytes(b"broken")
    (tmp_path / "img/1.jpg").unlink()
    layout = prepare("list", tmp_path, lists=lists, resize=20, check_files=False, log=logged.append)
    assert sorted(p.name for p in cache.iterdir()) == ["2.jpg", "3.jpg"]
    assert "2 unreadable left out (e.g. img/0.jpg, img/1.jpg)" in logged[-2]
    assert layout.root == cache.parent


def test_an_interrupted_resize_leaves_no_prepared_set_behind(tmp_path, monkeypatch):
    from classbalanced.data import resize

    for seed, rel in enumerate(["img/0.jpg", "img/1.jpg", "img/2.jpg", "img/3.jpg"]):
        _jpeg(tmp_path / rel, seed)
    (tmp_path / "train.txt").write_text("img/0.jpg 0\nimg/1.jpg 1\nimg/2.jpg 0\n")
    (tmp_path / "val.txt").write_text("img/3.jpg 1\n")
    lists = {"train": tmp_path / "train.txt", "val": tmp_path / "val.txt"}
    prepare("list", tmp_path, lists=lists, resize=20, log=lambda _m: None)
    for seed, rel in enumerate(["img/0.jpg", "img/1.jpg", "img/2.jpg", "img/3.jpg"]):
        _jpeg(tmp_path / rel, 10 + seed)  # the images change: prepare again, and stop half-way
    calls = []

    def interrupted(src, dest, short_side):
        calls.append(src)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return resize_copy(src, dest, short_side)

    monkeypatch.setattr(resize, "resize_copy", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare("list", tmp_path, lists=lists, resize=20, log=lambda _m: None)
    # two copies are new, two old: no prepared set may name this folder as complete
    with pytest.raises(FileNotFoundError, match=r"list is not prepared in"):
        load_prepared("list", tmp_path)


def test_a_bad_short_side_is_refused_before_anything_changes(tmp_path):
    _jpeg(tmp_path / "img/0.jpg", 0)
    _jpeg(tmp_path / "img/1.jpg", 1)
    (tmp_path / "train.txt").write_text("img/0.jpg 0\n")
    (tmp_path / "val.txt").write_text("img/1.jpg 0\n")
    lists = {"train": tmp_path / "train.txt", "val": tmp_path / "val.txt"}
    prepare("list", tmp_path, lists=lists, log=lambda _m: None)
    for bad in (0, -5, 2.5, True):
        with pytest.raises(
            ValueError, match=rf"^--resize: expected a short side >= 1 pixel, got {bad}$"
        ):
            prepare("list", tmp_path, lists=lists, resize=bad, log=lambda _m: None)
    assert load_prepared("list", tmp_path).root == tmp_path  # the earlier set is still there


def test_a_sixteen_bit_greyscale_image_keeps_its_grey_levels(tmp_path):
    levels = np.linspace(0, 65535, 60 * 40).reshape(40, 60).astype(np.uint16)
    src, dest = tmp_path / "deep.png", tmp_path / "out" / "deep.png"
    Image.fromarray(levels).save(src)
    assert resize_copy(str(src), str(dest), 20)
    with Image.open(dest) as img:
        copy = np.asarray(img.convert("L"), dtype=np.float64)
    assert copy.shape == (20, 30)
    assert abs(copy.mean() - levels.mean() / 257) < 2  # not clipped to white (255)


def test_a_camera_jpeg_read_as_mpo_is_re_encoded_like_any_jpeg(tmp_path):
    # PIL opens JPEGs with a multi-picture extension (many phone cameras) as format MPO
    yy, xx = np.mgrid[0:90, 0:120]
    photo = Image.fromarray(np.stack([xx * 2, yy * 2, xx + yy], -1).astype(np.uint8))
    photo.save(tmp_path / "plain.jpg", "JPEG", quality=95)
    photo.save(
        tmp_path / "camera.jpg", "MPO", quality=95, save_all=True, append_images=[photo.rotate(90)]
    )
    assert Image.open(tmp_path / "camera.jpg").format == "MPO"
    assert np.array_equal(_pixels(tmp_path / "camera.jpg"), _pixels(tmp_path / "plain.jpg"))
    for name in ("plain.jpg", "camera.jpg"):
        assert resize_copy(str(tmp_path / name), str(tmp_path / "out" / name), 30)
    # the same pixels in, the same encoder settings (quality 90): the same copy
    np.testing.assert_array_equal(
        _pixels(tmp_path / "out" / "camera.jpg"), _pixels(tmp_path / "out" / "plain.jpg")
    )
