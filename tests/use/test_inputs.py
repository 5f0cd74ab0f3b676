"""The run's evaluation transform on every image form, without a run: greyscale for an
RGB model, RGB for a greyscale model, 16-bit greyscale, resizing, and bad arrays."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from classbalanced.use.inputs import Preprocess, as_items


def _pre(channels: int, size: int = 4) -> Preprocess:
    record = {"in_channels": channels, "image_shape": [size, size, channels]}
    return Preprocess(SimpleNamespace(dataset="npz"), record)


def _scaled(array: np.ndarray) -> torch.Tensor:  # x / 128 - 1, NCHW
    return torch.from_numpy(array.astype(np.float32)).permute(2, 0, 1)[None] / 128 - 1


def test_rgb_image_for_a_greyscale_model_is_its_luminance(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    luminance = np.asarray(Image.fromarray(rgb).convert("L"))[..., None]
    pre = _pre(1)
    assert torch.equal(pre(tmp_path / "c.png"), _scaled(luminance))
    assert torch.equal(pre(rgb), _scaled(luminance))  # an RGB array alike


def test_greyscale_and_16_bit_images_for_an_rgb_model(tmp_path):
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    Image.fromarray(grey).save(tmp_path / "g.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    expected = _scaled(np.repeat(grey[..., None], 3, axis=2))
    pre = _pre(3)
    assert torch.equal(pre(tmp_path / "g.png"), expected)
    assert torch.equal(pre(tmp_path / "g16.png"), expected)  # 16 bits scaled, not clipped
    assert torch.equal(pre(grey), expected)


def test_other_sizes_are_resized_bilinear_as_the_folder_loader_does(tmp_path):
    big = np.random.default_rng(1).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(big).resize((4, 4), Image.Resampling.BILINEAR))
    assert torch.equal(_pre(3)(big), _scaled(expected))


def test_batches_and_bad_arrays():
    pre = _pre(1)
    batch = np.random.default_rng(2).integers(0, 256, (5, 4, 4), dtype=np.uint8)
    assert len(as_items(batch, pre.image_shape)) == 5  # (N, H, W) of a greyscale run
    x = pre(batch)
    assert x.shape == (5, 1, 4, 4) and torch.equal(x[2:3], pre(batch[2]))
    with pytest.raises(ValueError, match="expected uint8 images, got an array of float32"):
        pre(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match=r"C in 1/3/4, got shape \(4, 4, 5\)"):
        pre(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(TypeError, match="expected images as paths"):
        pre(42)
