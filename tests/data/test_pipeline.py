"""Reduced-size JPEG decoding with torchvision's augmentation draws, uint8 out, device normalisation."""

from __future__ import annotations

import io
import os
import shlex
import shutil
import subprocess
import sysconfig
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from classbalanced.data import pipeline
from classbalanced.data.loaders import (
    MEAN_STD,
    ImageFileDataset,
    build_transforms,
    collate_skip_bad,
    make_datasets,
)
from classbalanced.data.pipeline import (
    DraftRandomResizedCrop,
    DraftResizeCenterCrop,
    draft_factor,
    normalize_uint8,
)
from classbalanced.data.prepare import prepare
from classbalanced.data.prepared import load_prepared

MEAN, STD = MEAN_STD["inat"]


def _photo(path: Path, w: int, h: int, seed: int) -> Path:
    """A smooth colour field plus noise, saved as a JPEG (like a photo, not white noise)."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    img = np.asarray(small.resize((w, h), Image.BICUBIC), dtype=np.int16)
    img = np.clip(img + rng.integers(-10, 11, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path, "JPEG", quality=90)
    return path


def _reference_train(size: int):
    return v2.Compose(
        [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(), v2.PILToTensor()]
    )


def _reference_eval(size: int):
    return v2.Compose(
        [v2.Resize(int(size * 256 / 224), antialias=True), v2.CenterCrop(size), v2.PILToTensor()]
    )


def test_draft_factor():
    assert draft_factor(800, 600, 224) == 2  # 600 / 4 < 224
    assert draft_factor(1792, 1792, 224) == 8 and draft_factor(1791, 1792, 224) == 4
    assert draft_factor(100, 100, 224) == 1  # an upsampled crop is never reduced further


def test_train_crop_equals_torchvision_when_not_reduced(tmp_path):
    path = _photo(tmp_path / "a.jpg", 300, 260, 0)
    with Image.open(path) as img:
        decoded = img.convert("RGB")
    transform = DraftRandomResizedCrop(224)
    for seed in range(12):
        torch.manual_seed(seed)
        expected = _reference_train(224)(decoded)
        after_reference = torch.rand(1)
        torch.manual_seed(seed)
        with Image.open(path) as img:
            got = transform(img)
        assert got.dtype == torch.uint8 and torch.equal(got, expected)
        assert torch.equal(torch.rand(1), after_reference)  # the same random draws, no more


def test_train_crop_reduced_is_close_to_torchvision(tmp_path):
    path = _photo(tmp_path / "b.jpg", 800, 600, 1)
    with Image.open(path) as img:
        decoded = img.convert("RGB")
    transform = DraftRandomResizedCrop(64)
    reduced = 0
    for seed in range(20):
        torch.manual_seed(seed)
        expected = _reference_train(64)(decoded).float()
        torch.manual_seed(seed)
        with Image.open(path) as img:
            got = transform(img).float()
            reduced += img.size[0] < 800  # decoded at a reduced size
        assert got.shape == (3, 64, 64)
        assert (got - expected).abs().mean() < 3.0  # of 255: the same crop, another resampling
    assert reduced >= 10  # most 64 px crops of an 800x600 image allow a reduction


def test_eval_equals_torchvision_and_reduced_is_close(tmp_path):
    small = _photo(tmp_path / "s.jpg", 500, 375, 2)
    big = _photo(tmp_path / "l.jpg", 1200, 900, 3)
    transform = DraftResizeCenterCrop(224)
    with Image.open(small) as img:
        expected = _reference_eval(224)(img.convert("RGB"))
    with Image.open(small) as img:
        assert torch.equal(transform(img), expected)
    with Image.open(big) as img:
        expected = _reference_eval(224)(img.convert("RGB")).float()
    with Image.open(big) as img:
        got = transform(img).float()
        assert img.size == (600, 450)  # decoded at half size: its short side still >= 256
    assert got.shape == (3, 224, 224) and (got - expected).abs().mean() < 3.0


def test_float_output_and_device_normalisation(tmp_path):
    path = _photo(tmp_path / "c.jpg", 320, 240, 4)
    x = torch.randint(0, 256, (2, 3, 5, 4), dtype=torch.uint8)
    expected = (x.double() / 255 - torch.tensor(MEAN).double()[:, None, None]) / torch.tensor(
        STD
    ).double()[:, None, None]
    got = normalize_uint8(x, MEAN, STD)
    assert got.dtype == torch.float32 and torch.allclose(got.double(), expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"expected images \(N, 3, H, W\)"):
        normalize_uint8(x[0], MEAN, STD)
    torch.manual_seed(0)
    with Image.open(path) as img:
        as_uint8 = DraftRandomResizedCrop(32)(img)
    torch.manual_seed(0)
    with Image.open(path) as img:
        as_float = build_transforms(True, 32, MEAN, STD)(img)
    assert torch.allclose(as_float, normalize_uint8(as_uint8[None], MEAN, STD)[0])


def test_dataset_with_draft_transform_skips_truncated_files(tmp_path):
    good = _photo(tmp_path / "good.jpg", 400, 300, 5)
    bad = _photo(tmp_path / "bad.jpg", 400, 300, 6)
    bad.write_bytes(bad.read_bytes()[:2000])
    transform = build_transforms(True, 32, MEAN, STD, output="uint8")
    data = ImageFileDataset(tmp_path, [("good.jpg", 1), ("bad.jpg", 0)], transform)
    x, y = data[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8 and y == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert data[1] is None
    assert any("skipping unreadable image" in str(w.message) for w in caught)
    with pytest.raises(ValueError, match=r"output: expected 'float' or 'uint8', got 'half'"):
        build_transforms(True, 32, output="half")
    assert good.is_file()


# --------------------------------------------------------------------------- prepare --resize


def test_resize_copy(tmp_path):
    from classbalanced.data.resize import resize_copy

    big = _photo(tmp_path / "big.jpg", 120, 90, 7)
    assert resize_copy(str(big), str(tmp_path / "out" / "big.jpg"), 48)
    with Image.open(tmp_path / "out" / "big.jpg") as img:
        assert img.size == (64, 48) and img.format == "JPEG"
    tall = tmp_path / "tall.png"
    Image.new("RGB", (30, 50), (9, 99, 199)).save(tall)
    assert resize_copy(str(tall), str(tmp_path / "out" / "tall.png"), 20)
    with Image.open(tmp_path / "out" / "tall.png") as img:
        assert img.size == (20, 33) and img.format == "PNG" and img.getpixel((5, 5)) == (9, 99, 199)
    small = _photo(tmp_path / "small.jpg", 40, 30, 8)
    assert resize_copy(str(small), str(tmp_path / "out" / "small.jpg"), 48)
    assert (tmp_path / "out" / "small.jpg").read_bytes() == small.read_bytes()  # copied as is
    stamp = (tmp_path / "out" / "big.jpg").stat().st_mtime_ns
    assert resize_copy(str(big), str(tmp_path / "out" / "big.jpg"), 48)  # up to date: kept
    assert (tmp_path / "out" / "big.jpg").stat().st_mtime_ns == stamp
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    assert not resize_copy(str(tmp_path / "broken.jpg"), str(tmp_path / "out" / "broken.jpg"), 48)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "big.jpg",
        "small.jpg",
        "tall.png",
    ]


def test_resize_copy_of_a_format_pil_cannot_write_is_a_png_under_the_same_name(tmp_path):
    """XPM (like PSD) is read by PIL, not written: the copy is a lossless PNG, not a KeyError."""
    from classbalanced.data.resize import resize_copy

    rows = ["".join("ab"[(x // 5 + y // 5) % 2] for x in range(40)) for y in range(30)]
    text = '"40 30 2 1",\n"a c #FF0000",\n"b c #0000FF",\n' + ",\n".join(f'"{r}"' for r in rows)
    src = tmp_path / "t.xpm"
    src.write_text("/* XPM */\nstatic char *t[] = {\n" + text + "\n};\n")
    assert resize_copy(str(src), str(tmp_path / "out" / "t.xpm"), 10)
    with Image.open(src) as img:
        expected = np.asarray(img.convert("RGB").resize((13, 10), Image.BICUBIC))
    with Image.open(tmp_path / "out" / "t.xpm") as copy:
        assert copy.format == "PNG" and np.array_equal(np.asarray(copy), expected)


def test_prepare_resize_cache(tmp_path):
    lines = []
    for i in range(4):
        rel = f"images/c{i % 2}/{i:04d}.jpg"
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        _photo(tmp_path / rel, 120, 90, 10 + i)
        lines.append(f"{rel} {i % 2}\n")
    (tmp_path / "train.txt").write_text("".join(lines[:3]))
    (tmp_path / "val.txt").write_text(lines[3])
    lists = {"train": tmp_path / "train.txt", "val": tmp_path / "val.txt"}
    quiet = lambda _m: None  # noqa: E731
    layout = prepare("list", tmp_path, lists=lists, resize=48, workers=2, log=quiet)
    cache = tmp_path / "classbalanced-list" / "resized-48"
    assert layout.root == cache and load_prepared("list", tmp_path).root == cache
    for rel, _ in layout.train_samples + layout.val_samples:
        with Image.open(cache / rel) as img:
            assert img.size == (64, 48)
    train, _ = make_datasets(load_prepared("list", tmp_path), image_size=32)
    assert train[0][0].shape == (3, 32, 32)
    assert prepare("list", tmp_path, lists=lists, log=quiet).root == tmp_path  # back
    assert load_prepared("list", tmp_path).root == tmp_path
    prepare("list", tmp_path, lists=lists, resize=48, log=quiet)
    import shutil

    shutil.rmtree(cache)
    with pytest.raises(FileNotFoundError, match=r"resized-48 \(resized copies\) is gone"):
        load_prepared("list", tmp_path)
    with pytest.raises(ValueError, match=r"resize: expected a short side >= 1 pixel, got 0"):
        prepare("list", tmp_path, lists=lists, resize=0, log=quiet)


# --------------------------------------------------------------------------- the fast path


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("kind", ["baseline", "progressive"])
def test_jpeg_rows_are_the_top_rows_of_the_full_decode(tmp_path, k, kind):
    from classbalanced.data.pipeline import jpeg_rows

    path = _photo(tmp_path / "r.jpg", 640, 480, 20)
    if kind == "progressive":
        Image.open(path).convert("RGB").save(path, "JPEG", quality=90, progressive=True)
    with Image.open(path) as img:
        img.draft("RGB", (640 // k, 480 // k))
        full = np.asarray(img.convert("RGB"))
    for bottom in (1, 37, 300, 480):
        with Image.open(path) as img:
            top = jpeg_rows(img, k, bottom)
        rows = max(1, int(bottom / k + 0.5))  # the nearest reduced row, halves up
        assert top.size == (640 // k, rows)
        assert np.array_equal(np.asarray(top), full[:rows])  # bit for bit


def test_jpeg_rows_leaves_other_files_and_truncated_ones_to_the_full_decode(tmp_path):
    from classbalanced.data.pipeline import FastRandomResizedCrop, jpeg_rows

    png = tmp_path / "p.png"
    Image.new("RGB", (300, 300), (1, 2, 3)).save(png)
    with Image.open(png) as img:
        assert jpeg_rows(img, 1, 10) is None
        torch.manual_seed(0)
        x = FastRandomResizedCrop(16)(img)
    assert (
        x.shape == (3, 16, 16) and x.dtype == torch.uint8 and set(x[:, 0, 0].tolist()) == {1, 2, 3}
    )
    bad = _photo(tmp_path / "t.jpg", 400, 300, 21)
    bad.write_bytes(bad.read_bytes()[:3000])
    with Image.open(bad) as img:
        assert jpeg_rows(img, 1, 5) is None  # no end marker: not trusted
    data = ImageFileDataset(tmp_path, [("t.jpg", 0)], FastRandomResizedCrop(16))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert data[0] is None  # skipped, as with the other transforms
    assert any("skipping unreadable image" in str(w.message) for w in caught)


def test_jpeg_with_bytes_after_its_end_marker_gives_the_same_crops(tmp_path):
    """Camera trailers after the end marker send the file to the full decode, which must
    crop the same region (the header's pixel grid), not a shifted one nor fail."""
    from classbalanced.data.pipeline import CropParams, FastRandomResizedCrop

    left_black = np.zeros((600, 800, 3), dtype=np.uint8)
    left_black[:, 400:] = 255
    clean = tmp_path / "clean.jpg"
    Image.fromarray(left_black).save(clean, "JPEG", quality=95)
    trailer = tmp_path / "trailer.jpg"
    trailer.write_bytes(clean.read_bytes() + bytes(200))
    crop = FastRandomResizedCrop(64)
    for p in (CropParams(50, 50, 280, 400, False), CropParams(300, 300, 250, 480, True)):
        with Image.open(clean) as a, Image.open(trailer) as b:
            x, y = crop.apply(a, p), crop.apply(b, p)
        assert torch.equal(x, y)
    with Image.open(trailer) as b:
        assert crop.apply(b, CropParams(50, 50, 280, 300, False)).float().mean() < 8  # all black


def test_fast_crop_has_torchvisions_draws_and_pixels(tmp_path):
    from classbalanced.data.pipeline import FastRandomResizedCrop

    small = _photo(tmp_path / "s.jpg", 300, 260, 22)  # every 224 crop at full scale (k = 1)
    big = _photo(tmp_path / "b.jpg", 800, 600, 23)
    for path, size, mean_tol, max_tol in ((small, 224, 0.5, 4), (big, 224, 3.0, 255)):
        with Image.open(path) as img:
            decoded = img.convert("RGB")
        flips = 0
        for seed in range(16):
            torch.manual_seed(seed)
            expected = _reference_train(size)(decoded).float()
            after_reference = torch.rand(1)
            torch.manual_seed(seed)
            with Image.open(path) as img:
                got = FastRandomResizedCrop(size)(img)
            assert torch.equal(torch.rand(1), after_reference)  # the same draws, no more
            assert got.dtype == torch.uint8 and got.shape == (3, size, size)
            assert got.permute(1, 2, 0).is_contiguous()  # stored HWC (channels-last)
            diff = (got.float() - expected).abs()
            assert diff.mean() < mean_tol and diff.max() <= max_tol  # resampling rounding only
            torch.manual_seed(seed)
            with Image.open(path) as img:
                plain = FastRandomResizedCrop(size, flip=False)(img)
            flipped = not torch.equal(got, plain)
            assert torch.equal(got, plain.flip(2) if flipped else plain)
            flips += flipped
        assert 3 <= flips <= 13  # the flip is applied, about half the time


def test_collate_channels_last_equals_collate_skip_bad():
    from classbalanced.data.pipeline import collate_channels_last

    g = torch.Generator().manual_seed(0)
    items = [
        (torch.randint(0, 256, (3, 5, 4), generator=g, dtype=torch.uint8), i) for i in range(3)
    ]
    items = [items[0], None, items[1], items[2]]
    a, ya, sa = collate_channels_last(items)
    b, yb, sb = collate_skip_bad(items)
    assert torch.equal(a, b) and torch.equal(ya, yb) and sa == sb == 1
    assert a.is_contiguous(memory_format=torch.channels_last)
    assert collate_channels_last([None])[0].shape == (0,)


# --------------------------------------------------------------------------- decoding on the device


def test_encoded_crop_carries_the_file_and_the_fast_crops_draws(tmp_path):
    from classbalanced.data.encoded import EncodedRandomResizedCrop, collate_encoded, decode_batch
    from classbalanced.data.pipeline import FastRandomResizedCrop

    jpg = _photo(tmp_path / "e.jpg", 300, 260, 30)  # k = 1 for every 224 crop
    png = tmp_path / "e.png"
    Image.open(jpg).save(png)
    encoded, fast = EncodedRandomResizedCrop(224), FastRandomResizedCrop(224)
    items, expected = [], []
    for seed, path in enumerate([jpg, png, jpg, jpg]):
        torch.manual_seed(seed)
        with Image.open(path) as img:
            items.append((encoded(img), seed))
        after = torch.rand(1)
        torch.manual_seed(seed)
        with Image.open(path) as img:
            expected.append(fast(img))
        assert torch.equal(torch.rand(1), after)  # the same draws
    data, params, name = items[0][0]
    assert name == str(jpg)
    assert torch.equal(data, torch.frombuffer(bytearray(jpg.read_bytes()), dtype=torch.uint8))
    assert params.tolist()[2:4] != [0, 0] and params.dtype == torch.int64
    assert isinstance(items[1][0], torch.Tensor)  # a PNG is decoded in the worker
    batch, labels, skipped = collate_encoded([items[0], None, items[1], items[2], items[3]])
    assert labels.tolist() == [0, 1, 2, 3] and skipped == 1 and batch.shape == (4,)
    assert [f.numel() > 0 for f in batch.files] == [True, False, True, True]
    out = decode_batch(batch, 224, "cpu")
    assert out.dtype == torch.uint8 and out.shape == (4, 3, 224, 224)
    assert out.is_contiguous(memory_format=torch.channels_last)
    for got, want in zip(out, expected, strict=True):
        diff = (got.float() - want.float()).abs()
        assert diff.mean() < 0.5 and diff.max() <= 2  # float vs uint8 resize rounding
    assert torch.equal(out[1], expected[1])  # the worker's own crop, as is


def test_encoded_crop_skips_truncated_files(tmp_path):
    from classbalanced.data.encoded import EncodedRandomResizedCrop

    bad = _photo(tmp_path / "t.jpg", 300, 200, 31)
    bad.write_bytes(bad.read_bytes()[:2500])
    data = ImageFileDataset(tmp_path, [("t.jpg", 0)], EncodedRandomResizedCrop(32))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert data[0] is None  # no end marker: decoded here, which fails: skipped


def test_sixteen_bit_greyscale_images_keep_their_grey_levels(tmp_path):
    """A 16-bit greyscale PNG (PIL mode I;16) reads as its 8-bit version (value / 257) in every
    transform and without one; PIL's ``convert("RGB")`` clips it to 255: a white image."""
    from classbalanced.data.encoded import EncodedRandomResizedCrop
    from classbalanced.data.pipeline import FastRandomResizedCrop

    levels = np.linspace(0, 255, 40 * 30).reshape(30, 40).round().astype(np.uint16)
    Image.fromarray(levels * 257).save(tmp_path / "deep.png")
    Image.fromarray(levels.astype(np.uint8)).save(tmp_path / "flat.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    transforms = [
        None,
        DraftRandomResizedCrop(8),
        DraftResizeCenterCrop(8),
        FastRandomResizedCrop(8),
        EncodedRandomResizedCrop(8),
    ]
    for transform in transforms:
        got = []
        for name in ("deep.png", "flat.png"):
            torch.manual_seed(3)
            image = ImageFileDataset(tmp_path, [(name, 0)], transform)[0][0]
            got.append(torch.as_tensor(np.asarray(image)))
        assert torch.equal(got[0], got[1]), transform
        assert 40 < got[0].float().mean() < 215  # a grey ramp, not white


def test_eval_of_an_extreme_aspect_ratio_resizes_only_the_centre(tmp_path, monkeypatch):
    """A 3 x 3000 strip: torchvision's resize to short side 256 then centre crop would make a
    256 x 256000 image (200 MB; 12 GB for 1 x 60000); only the centre is resized, to
    torchvision's pixels up to a level or two."""
    strip = np.tile(np.linspace(0, 255, 3000).astype(np.uint8)[None, :, None], (3, 1, 3))
    strip[1, :, 1] = 255 - strip[1, :, 1]
    Image.fromarray(strip).save(tmp_path / "strip.png")
    with Image.open(tmp_path / "strip.png") as img:
        expected = _reference_eval(16)(img.convert("RGB")).int()
    made = []
    resize = Image.Image.resize

    def recording_resize(self, size, *args, **kwargs):
        made.append(size[0] * size[1])
        return resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", recording_resize)
    with Image.open(tmp_path / "strip.png") as img:
        got = DraftResizeCenterCrop(16)(img).int()
    assert max(made) <= 16 * 18**2  # not the 18 x 18000 of the full resize
    assert got.shape == (3, 16, 16) and (got - expected).abs().max() <= 2


@pytest.mark.parametrize("progressive", [False, True])
def test_fast_crop_skips_a_jpeg_broken_above_the_crops_last_row(tmp_path, progressive):
    """A marker written over the scan data makes the full decode fail; the decode stopped at
    the crop's last row never reached that error and returned grey fill instead."""
    from classbalanced.data.pipeline import FastRandomResizedCrop, jpeg_rows

    path = _photo(tmp_path / "b.jpg", 320, 240, 40)
    Image.open(path).save(path, "JPEG", quality=90, progressive=progressive)
    data = path.read_bytes()
    at = data.find(b"\xff\xda") + 40  # in the first scan's data
    path.write_bytes(data[:at] + b"\xff\xc4" + data[at + 2 :])
    with Image.open(path) as img, pytest.raises(OSError):
        img.load()  # the full decode: broken
    with Image.open(path) as img:
        assert jpeg_rows(img, 1, 200) is None  # not trusted: the caller's full decode raises
    dataset = ImageFileDataset(tmp_path, [("b.jpg", 0)], FastRandomResizedCrop(16))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert all(dataset[0] is None for _ in range(3))


def test_reduced_decoding_is_limited_where_chroma_subsampling_spoils_it(tmp_path, monkeypatch):
    """libjpeg's 1/8 decode of 4:2:2 / 4:4:0 JPEGs and its every reduced decode of 4:1:1 ones
    move colours by 5-10 levels on average (max 30-90; 4:2:0 and 4:4:4: under 1): 4:2:2 and
    4:4:0 are decoded at 1/4 at most, 4:1:1 and other samplings at full size."""
    from classbalanced.data.pipeline import FastRandomResizedCrop, jpeg_factor_limit

    assert jpeg_factor_limit([(1, 2, 2, 0), (2, 1, 1, 1), (3, 1, 1, 1)]) == 8  # 4:2:0
    assert jpeg_factor_limit([(1, 1, 1, 0), (2, 1, 1, 1), (3, 1, 1, 1)]) == 8  # 4:4:4
    assert jpeg_factor_limit([(1, 1, 1, 0)]) == 8  # greyscale
    assert jpeg_factor_limit([(1, 2, 1, 0), (2, 1, 1, 1), (3, 1, 1, 1)]) == 4  # 4:2:2
    assert jpeg_factor_limit([(1, 1, 2, 0), (2, 1, 1, 1), (3, 1, 1, 1)]) == 4  # 4:4:0
    assert jpeg_factor_limit([(1, 4, 1, 0), (2, 1, 1, 1), (3, 1, 1, 1)]) == 1  # 4:1:1
    assert jpeg_factor_limit([(1, 2, 2, 0), (2, 2, 1, 1), (3, 1, 1, 1)]) == 1
    path = _photo(tmp_path / "p.jpg", 640, 480, 41)
    Image.open(path).save(path, "JPEG", quality=90, subsampling=1)  # 4:2:2
    kw = dict(scale=(1, 1), ratio=(4 / 3, 4 / 3), flip=False)
    with Image.open(path) as img:
        assert jpeg_factor_limit(img.layer) == 4
        pil = FastRandomResizedCrop(32, partial=False, **kw)(img)
        assert img.size == (160, 120)  # decoded at 1/4, not 1/8 (60 rows >= 32)
    if pipeline.PARTIAL_JPEG_DECODING:  # the libjpeg extension's decode: also at 1/4
        scales = []

        def recording(data, k, *box):
            scales.append(k)
            return extension.decode_region(data, k, *box)

        extension = pipeline._jpegcrop
        fake = SimpleNamespace(decode_region=recording, well_formed=extension.well_formed)
        monkeypatch.setattr(pipeline, "_jpegcrop", fake)
        with Image.open(path) as img:
            assert torch.equal(FastRandomResizedCrop(32, **kw)(img), pil)
        assert scales == [4]


# --------------------------------------------------------------------------- partial decoding

needs_extension = pytest.mark.skipif(
    not pipeline.PARTIAL_JPEG_DECODING, reason="the libjpeg extension (_jpegcrop) is not built"
)


def _libjpeg_turbo_builds(tmp_path: Path) -> bool:
    """Whether the C compiler setuptools uses (``$CC``, else Python's) compiles and links a
    program against libjpeg-turbo's headers and library, wherever they are (``CPATH``, ...)."""
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    python_h = Path(sysconfig.get_paths()["include"], "Python.h")
    if not cc or shutil.which(cc[0]) is None or not python_h.exists():
        return False
    probe = tmp_path / "probe.c"
    probe.write_text(
        "#include <stdio.h>\n#include <jpeglib.h>\n#ifndef LIBJPEG_TURBO_VERSION\n#error\n"
        "#endif\nint main(void) { struct jpeg_error_mgr e; jpeg_std_error(&e); return 0; }\n"
    )
    args = [*cc, str(probe), "-ljpeg", "-o", str(tmp_path / "probe")]
    return subprocess.run(args, capture_output=True).returncode == 0


def test_the_libjpeg_extension_is_built_where_it_can_be(tmp_path):
    """pip builds ``_jpegcrop`` where a C compiler and libjpeg-turbo's headers exist (CI
    installs libjpeg-dev): there, the trainer's fast path must not silently fall back to PIL."""
    if not _libjpeg_turbo_builds(tmp_path):
        pytest.skip("no C compiler, Python headers or libjpeg-turbo: the extension is optional")
    assert pipeline.PARTIAL_JPEG_DECODING, (
        "_jpegcrop is not built, or built from an older _jpegcrop.c: reinstall (pip install -e .)"
        " or rebuild it in place (python setup.py build_ext --inplace)"
    )


def test_an_extension_built_from_an_older_source_is_not_used(monkeypatch):
    """An in-place build is not redone by a checkout: a stale _jpegcrop (its decode_region
    took 6 arguments) would raise TypeError in every worker; PIL's decoder is used instead."""
    import sys

    monkeypatch.setitem(sys.modules, "classbalanced.data._jpegcrop", SimpleNamespace())
    assert pipeline._extension() is None
    current = SimpleNamespace(API_VERSION=pipeline._EXTENSION_API)
    monkeypatch.setitem(sys.modules, "classbalanced.data._jpegcrop", current)
    assert pipeline._extension() is current


def _variants(tmp_path: Path) -> list[Path]:
    """JPEGs of each kind libjpeg decodes differently: chroma subsamplings, odd sizes (partial
    iMCUs), greyscale, progressive, restart markers."""
    base = np.asarray(Image.open(_photo(tmp_path / "base.jpg", 203, 157, 50)))
    out = []
    for name, kwargs, mode in (
        ("420", {}, "RGB"),
        ("444", {"subsampling": 0}, "RGB"),
        ("422", {"subsampling": 1}, "RGB"),
        ("grey", {}, "L"),
        ("progressive", {"progressive": True}, "RGB"),
        ("restarts", {"restart_marker_blocks": 3}, "RGB"),
        ("adobe-rgb", {"keep_rgb": True, "subsampling": 0}, "RGB"),  # no YCbCr: Adobe marker
    ):
        path = tmp_path / f"{name}.jpg"
        Image.fromarray(base).convert(mode).save(path, "JPEG", quality=90, **kwargs)
        out.append(path)
    return out


@needs_extension
def test_partial_decoding_gives_the_regions_of_the_full_decode(tmp_path):
    """Every region (on and off iMCU boundaries, at the image's edges, one pixel wide or
    tall) at every scale is bit for bit that region of PIL's (libjpeg's) full decode: the
    edges of a cropped decode see no image edge in the chroma upsampling."""
    from classbalanced.data.pipeline import jpeg_region

    rng = np.random.default_rng(0)
    for path in _variants(tmp_path):
        for k in (1, 2, 4, 8):
            with Image.open(path) as img:
                img.draft("RGB", (img.size[0] // k, img.size[1] // k))
                full = np.asarray(img.convert("RGB"))
            h, w = full.shape[:2]
            boxes = [(0, 0, w, h), (w - 1, h - 1, w, h), (0, 5 % h, 1, h)]
            for _ in range(12):
                x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
                x0 = x0 // 16 * 16 if rng.random() < 0.4 else x0  # an iMCU boundary
                boxes.append(
                    (x0, y0, int(rng.integers(x0 + 1, w + 1)), int(rng.integers(y0 + 1, h + 1)))
                )
            for x0, y0, x1, y1 in boxes:
                with Image.open(path) as img:
                    got = jpeg_region(img, k, (x0, y0, x1, y1))
                assert got.shape == (y1 - y0, x1 - x0, 3), (path.name, k)
                assert np.array_equal(got.numpy(), full[y0:y1, x0:x1]), (
                    path.name,
                    k,
                    (x0, y0, x1, y1),
                )


@needs_extension
def test_fast_crop_is_the_same_with_and_without_the_extension(tmp_path):
    from classbalanced.data.pipeline import FastRandomResizedCrop

    for path in _variants(tmp_path)[:4] + [_photo(tmp_path / "big.jpg", 640, 480, 51)]:
        for seed in range(6):
            out = []
            for partial in (True, False):
                torch.manual_seed(seed)
                with Image.open(path) as img:
                    out.append(FastRandomResizedCrop(24, partial=partial)(img))
            assert torch.equal(out[0], out[1]), (path.name, seed)


@needs_extension
def test_partial_decoding_leaves_what_libjpeg_warns_about_to_the_usual_decode(tmp_path):
    from classbalanced.data.pipeline import jpeg_region

    extension = pipeline._jpegcrop
    path = _photo(tmp_path / "c.jpg", 160, 120, 52)
    clean = path.read_bytes()
    # a file that ends early: libjpeg warns and would fill the missing rows with grey
    assert extension.decode_region(clean[: len(clean) // 2], 1, 0, 0, 160, 120) is None
    assert extension.decode_region(clean[: len(clean) // 2], 1, 0, 0, 160, 8) is not None
    cmyk = tmp_path / "k.jpg"
    Image.new("CMYK", (64, 48), (1, 2, 3, 4)).save(cmyk, "JPEG")
    with Image.open(cmyk) as img:
        assert jpeg_region(img, 1, (0, 0, 8, 8)) is None  # not RGB or greyscale: PIL's decode
    with pytest.raises(OSError, match=r"^broken JPEG data: Not a JPEG file"):
        extension.decode_region(b"GIF89a" + bytes(100), 1, 0, 0, 1, 1)
    with pytest.raises(
        ValueError, match=r"expected a region inside the RGB image at 1/2, got x 0\.\.81"
    ):
        extension.decode_region(clean, 2, 0, 0, 81, 60)  # 80 x 60 at 1/2
    with pytest.raises(ValueError, match=r"inside the RGB image at 1/1, got x 0\.\.2147483647"):
        extension.decode_region(clean, 1, 0, 0, 2**31 - 1, 2**31 - 1)  # no 13 EB bytearray
    with pytest.raises(
        ValueError, match=r"expected k in 1, 2, 4, 8 and 0 <= x0 < x1, 0 <= y0 < y1, got k=3"
    ):
        extension.decode_region(clean, 3, 0, 0, 1, 1)
    with pytest.raises(ValueError, match=r"got k=1, x 5\.\.5"):
        extension.decode_region(clean, 1, 5, 0, 5, 1)


@needs_extension
def test_the_extensions_segment_walk_agrees_with_the_python_one(tmp_path):
    """``_jpegcrop.well_formed`` is ``_well_formed`` in C: the same answer for clean files of
    every kind, for each one cut short, and with markers, fill and stuffing bytes written over
    the segment lengths and the scan data."""
    from classbalanced.data.pipeline import _well_formed

    rng = np.random.default_rng(1)
    cases = []
    for path in _variants(tmp_path):
        data = path.read_bytes()
        cases += [data, data[:-2], data[: len(data) // 2], data[:3], b"", data + bytes(9)]
        sos = data.find(b"\xff\xda")
        for at in [4, 20, sos + 2, sos + 3] + rng.integers(2, len(data) - 2, 40).tolist():
            for patch in (
                b"\xff\xd9",
                b"\xff\xc4",
                b"\xff\x00",
                b"\xff\xff",
                b"\xff\xd3",
                b"\x00\x01",
            ):
                cases.append(data[:at] + patch + data[at + 2 :])
    answers = [(_well_formed(c), pipeline._jpegcrop.well_formed(c)) for c in cases]
    assert all(py == c for py, c in answers)
    assert 20 < sum(py for py, _ in answers) < len(answers) - 20  # both kinds of answer occur


def test_resized_crop_is_interpolates_kernel_stored_channels_last(monkeypatch):
    """Bit for bit F.interpolate's result, for crops larger, thinner and smaller than the
    output (one pixel upscaled), and the same through the fallback of a torch whose
    ``_upsample_bilinear2d_aa.out`` raises."""
    import torch.nn.functional as F

    from classbalanced.data.pipeline import _resized_crop

    def no_overload(*args, **kwargs):
        raise RuntimeError("no such overload")

    g = torch.Generator().manual_seed(0)
    sizes = ((37, 90, 24), (300, 260, 224), (5, 7, 16), (1, 1, 24), (2, 300, 224), (97, 3, 8))
    for fallback in (False, True):
        if fallback:
            monkeypatch.setattr(
                torch.ops.aten, "_upsample_bilinear2d_aa", SimpleNamespace(out=no_overload)
            )
        for h, w, size in sizes:
            hwc = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8)
            got = _resized_crop(hwc, size)
            want = F.interpolate(
                hwc.permute(2, 0, 1)[None], size=(size, size), mode="bilinear", antialias=True
            )
            assert torch.equal(got, want[0]) and got.permute(1, 2, 0).is_contiguous()


# JPEGs that PIL cannot write. 32 x 16, luma sampled 2x4 (`cjpeg -optimize -quality 30
# -sample 2x4`, libjpeg-turbo 2.1.5): at 1/2 and 1/4 libjpeg decodes its chroma at twice the
# luma's scaled size, where jpeg_crop_scanline sets a wrong chroma width.
_SAMPLED_2X4 = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb0043001b12141714111b1716171e1c1b2028422b2825"
    "2528513a3d3042605565645f555d5b6a7899816a7190735b5d85b586909ea3abadab6780bcc9baa6c799a8ab"
    "a4ffdb0043011c1e1e2823284e2b2b4ea46e5d6ea4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4"
    "a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4ffc000110800100020030124000211010311"
    "01ffc40017000101010100000000000000000000000000040503ffc4001c1000030101010101010000000000"
    "000000000102031104310512ffc4001501010100000000000000000000000000000403ffc4001a1100020301"
    "01000000000000000000000001020003211113ffda000c03010002110311003f00bf4f6c73e90edeb9a6cc98"
    "f4ddbe3659192a9e80008b1117792d4a613d33a46ca6fa5f9fe96733c6cc8d67f94f841a6ad3fa00017d7d71"
    "c030e2e772434fffd9"
)
# 4 x 4 RGB lossless JPEG (SOF3; imagecodecs.jpeg8_encode(lossless=True), libjpeg-turbo 3):
# Pillow's own libjpeg-turbo 3 decodes it, Debian's 2.1.5 (the extension's) does not.
_LOSSLESS = bytes.fromhex(
    "ffd8ffee000e41646f626500640000000000ffc30011080004000403521100471100421100ffc4001a000003"
    "010101010000000000000000000006070805030402ffda000c035200470042000100001efa613e99a531a89c"
    "6b641b386993b9364ce56c51095009bcbe60890cccbca0b885126ea6b5b5e06da273db0279337b61bbb3d1e1"
    "ffd9"
)


@needs_extension
def test_partial_decoding_is_exact_where_libjpeg_cannot_crop():
    """Every column range of a 2x4-sampled JPEG at 1/2 and 1/4 is that of the full decode
    (libjpeg-turbo's cropped decode moved its colours by up to 190 levels)."""
    for k in (2, 4):
        with Image.open(io.BytesIO(_SAMPLED_2X4)) as img:
            img.draft("RGB", (32 // k, 16 // k))
            full = np.asarray(img)
        h, w = full.shape[:2]
        for x0 in range(w):
            for x1 in range(x0 + 1, w + 1):
                got = pipeline._jpegcrop.decode_region(_SAMPLED_2X4, k, x0, 1, x1, h)
                got = np.frombuffer(got, dtype=np.uint8).reshape(h - 1, x1 - x0, 3)
                assert np.array_equal(got, full[1:, x0:x1]), (k, x0, x1)


def _fast_outcome(data: bytes, mode: str, **crop) -> list:
    """FastRandomResizedCrop(8)'s result with and without the extension ("skipped" where it
    raises, as the dataset skips), for the whole image (``crop`` empty) or ``crop``."""
    from classbalanced.data.pipeline import CropParams, FastRandomResizedCrop

    out = []
    for partial in (True, False):
        with Image.open(io.BytesIO(data)) as img:
            assert img.mode == mode
            w, h = img.size
            p = CropParams(**{"top": 0, "left": 0, "height": h, "width": w, **crop}, flip=False)
            try:
                out.append(FastRandomResizedCrop(8, partial=partial).apply(img, p))
            except OSError:
                out.append("skipped")
    return out


def test_fast_crop_decodes_and_skips_what_the_full_decode_does(tmp_path):
    """Parity with the full decode for damaged files whose segments chain to the end marker:
    a file it refuses is skipped (a bogus Huffman table, a progressive file broken anywhere:
    libjpeg fails before the first row, which the decode stopped at the crop's last row took
    for its stop and returned black; a second frame header after the scan where the crop
    reaches the last row, or, for greyscale, whose usual decode is whole, anywhere); a file
    it decodes is decoded (a lossless JPEG, which only Pillow's libjpeg knows)."""
    buf = io.BytesIO()
    Image.open(_photo(tmp_path / "a.jpg", 48, 32, 60)).save(buf, "JPEG", progressive=True)
    progressive, baseline = buf.getvalue(), _photo(tmp_path / "b.jpg", 48, 32, 61).read_bytes()
    buf = io.BytesIO()
    Image.open(io.BytesIO(baseline)).convert("L").save(buf, "JPEG")
    grey = buf.getvalue()
    at = baseline.find(b"\xff\xc4") + 5  # the first Huffman table's code counts: too many
    bogus_table = baseline[:at] + b"\xff" * 16 + baseline[at + 16 :]
    second_sof = b"\xff\xc0\x00\x04\x00\x00\xff\xd9"  # before the end marker
    for data, mode, crop, decodes in (
        (bogus_table, "RGB", {}, False),
        (bogus_table, "RGB", {"height": 8, "width": 8}, False),
        (progressive[:-2] + second_sof, "RGB", {"height": 8, "width": 8}, False),
        (baseline[:-2] + second_sof, "RGB", {}, False),
        (grey[:-2] + second_sof, "L", {"height": 8, "width": 8}, False),
        (grey, "L", {"height": 8, "width": 8}, True),
        (_LOSSLESS, "RGB", {}, None),
    ):
        with Image.open(io.BytesIO(data)) as img:
            try:
                img.load()
                whole = True
            except OSError:
                whole = False
        assert decodes in (whole, None)  # None: whatever this PIL's libjpeg does
        got = _fast_outcome(data, mode, **crop)
        assert [isinstance(x, torch.Tensor) for x in got] == [whole, whole], (mode, crop, got)
        if whole:
            assert torch.equal(got[0], got[1])


@needs_extension
def test_a_progressive_jpeg_cut_at_a_scan_boundary_is_left_to_pils_decoder(tmp_path):
    """Cut before its last scans (an end marker after a whole scan: libjpeg does not warn),
    a progressive file has coefficients left to libjpeg's estimate (block smoothing), which
    Debian's libjpeg-turbo 2.1 and Pillow's 3.x make differently (by a level at some
    pixels): the extension leaves it to PIL's decoder, so the pixels do not depend on
    which path decoded them."""
    from classbalanced.data.pipeline import FastRandomResizedCrop, jpeg_region

    buf = io.BytesIO()
    Image.open(_photo(tmp_path / "a.jpg", 160, 120, 62)).save(buf, "JPEG", progressive=True)
    data = buf.getvalue()
    scans = [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xda"]
    assert len(scans) > 4
    cut = data[: scans[4]] + b"\xff\xd9"
    for box in ((0, 0, 160, 120), (40, 30, 90, 70)):
        with Image.open(io.BytesIO(cut)) as img:
            assert jpeg_region(img, 1, box) is None
        with Image.open(io.BytesIO(data)) as img:  # the whole file: decoded in part
            assert jpeg_region(img, 1, box) is not None
    for seed in range(4):
        out = []
        for partial in (True, False):
            torch.manual_seed(seed)
            with Image.open(io.BytesIO(cut)) as img:
                out.append(FastRandomResizedCrop(24, partial=partial)(img))
        assert torch.equal(out[0], out[1])


# 40 x 36 RGB lossless JPEG (SOF3) of the pixels (3 x, 3 y, 200 - x - y)
# (imagecodecs.jpeg8_encode(lossless=True), libjpeg-turbo 3)
_LOSSLESS_40X36 = bytes.fromhex(
    "ffd8ffee000e41646f626500640000000000ffc30011080024002803521100471100421100ffc40018000003"
    "01010000000000000000000000000001020807ffda000c03520047004200010000cff9ff00a458ac562b158a"
    "c562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac5622d58ac562b15"
    "8ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac5622d58ac562b"
    "158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac5622d58ac56"
    "2b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac5622d58ac"
    "562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac5622d58"
    "ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac5622d"
    "58ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562"
    "2d58ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac5"
    "622d58ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158a"
    "c5622d58ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b15"
    "8ac5622d58ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b"
    "158ac5622d58ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac56"
    "2b158ac5622d58ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac"
    "562b158ac5622d58ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158"
    "ac562b158ac5622d58ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b1"
    "58ac562b158ac5622d58ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562"
    "b158ac562b158ac5622d58ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac5"
    "62b158ac562b158ac5622d58ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158a"
    "c562b158ac562b158ac5622d58ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b15"
    "8ac562b158ac562b158ac5622d58ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562b"
    "158ac562b158ac562b158ac5622d58ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac56"
    "2b158ac562b158ac562b158ac5622d58ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac"
    "562b158ac562b158ac562b158ac5622d58ac562b158ac562b158ac562b158ac562b158ac562b158ac562b158"
    "ac562b158ac562b158ac562b158ac5622d58ac562b158ac562b158ac562b158ac562b158ac562b158ac562b1"
    "58ac562b158ac562b158ac562b158ac5622d58ac562b158ac562b158ac562b158ac562b158ac562b158ac562"
    "b158ac562b158ac562b158ac562b158ac5622d58ac562b158ac562b158ac562b158ac562b158ac562b158ac5"
    "62b158ac562b158ac562b158ac562b158ac5622d58ac562b158ac562b158ac562b158ac562b158ac562b158a"
    "c562b158ac562b158ac562b158ac562b158ac5622d58ac562b158ac562b158ac562b158ac562b158ac562b15"
    "8ac562b158ac562b158ac562b158ac562b158ac5622d58ac562b158ac562b158ac562b158ac562b158ac562b"
    "158ac562b158ac562b158ac562b158ac562b158ac5622d58ac562b158ac562b158ac562b158ac562b158ac56"
    "2b158ac562b158ac562b158ac562b158ac562b158ac5622d58ac562b158ac562b158ac562b158ac562b158ac"
    "562b158ac562b158ac562b158ac562b158ac562b158ac5622d58ac562b158ac562b158ac562b158ac562b158"
    "ac562b158ac562b158ac562b158ac562b158ac562b158ac5622d58ac562b158ac562b158ac562b158ac562b1"
    "58ac562b158ac562b158ac562b158ac562b158ac562b158ac5622d58ac562b158ac562b158ac562b158ac562"
    "b158ac562b158ac562b158ac562b158ac562b158ac562b158ac5622d58ac562b158ac562b158ac562b158ac5"
    "62b158ac562b158ac562b158ac562b158ac562b158ac562b158ac5622d58ac562b158ac562b158ac562b158a"
    "c562b158ac562b158ac562b158ac562b158ac562b158ac562b158ac562ffd9"
)


def test_a_lossless_jpeg_larger_than_its_crop_is_decoded_at_full_size(tmp_path):
    """libjpeg cannot decode a lossless JPEG reduced (no DCT to scale): every path skipped one
    more than twice the output size, in training and in evaluation, where torchvision's path
    decodes it. Now it is decoded at full size: torchvision's pixels (draft), within the two
    resize kernels' rounding (fast)."""
    from classbalanced.data.pipeline import FastRandomResizedCrop

    path = tmp_path / "l.jpg"
    path.write_bytes(_LOSSLESS_40X36)
    y, x = np.mgrid[0:36, 0:40]
    pixels = np.stack([x * 3, y * 3, 200 - x - y], -1).astype(np.uint8)
    with Image.open(path) as img:
        assert np.array_equal(np.asarray(img), pixels)  # PIL decodes it at full size
    reference = Image.fromarray(pixels)
    crop = {"scale": (0.9, 1.0)}  # >= 32 px: a reduced decode would be tried
    train = v2.Compose(
        [
            v2.RandomResizedCrop(16, antialias=True, **crop),
            v2.RandomHorizontalFlip(),
            v2.PILToTensor(),
        ]
    )
    for seed in range(4):
        got = []
        for transform in (
            DraftRandomResizedCrop(16, **crop),
            FastRandomResizedCrop(16, **crop),
            FastRandomResizedCrop(16, partial=False, **crop),
        ):
            torch.manual_seed(seed)
            with Image.open(path) as img:
                got.append(transform(img).int())
        torch.manual_seed(seed)
        expected = train(reference).int()
        assert torch.equal(got[0], expected)
        assert torch.equal(got[1], got[2]) and (got[1] - expected).abs().max() <= 4
    evaluate = v2.Compose([v2.Resize(18, antialias=True), v2.CenterCrop(16), v2.PILToTensor()])
    with Image.open(path) as img:
        assert torch.equal(DraftResizeCenterCrop(16)(img), evaluate(reference))
