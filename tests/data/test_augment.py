"""Batched crop/flip augmentation and uint8 normalisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from classbalanced.data.augment import (
    _sample_crop_flip_params,
    crop_flip,
    normalize_images,
    random_crop_flip,
)


def reference_crop_flip(images, top, left, flips, padding):
    """Straightforward per-image implementation: pad, slice, flip."""
    _, _, h, w = images.shape
    out = []
    for b in range(images.shape[0]):
        padded = F.pad(images[b], (padding, padding, padding, padding))
        t, lft = int(top[b]), int(left[b])
        crop = padded[:, t : t + h, lft : lft + w]
        if flips is not None and bool(flips[b]):
            crop = torch.flip(crop, dims=[-1])
        out.append(crop)
    return torch.stack(out)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_images(shape, dtype, seed=0):
    if dtype == torch.uint8:
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen(seed))
    return torch.randn(shape, generator=gen(seed)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("shape", "padding"),
    [((6, 3, 8, 8), 4), ((5, 1, 5, 7), 2), ((4, 2, 3, 3), 5), ((3, 3, 4, 4), 0)],
)
@pytest.mark.parametrize("with_flips", [True, False])
def test_crop_flip_matches_reference(dtype, shape, padding, with_flips):
    images = make_images(shape, dtype)
    g = gen(1)
    b = shape[0]
    top = torch.randint(0, 2 * padding + 1, (b,), generator=g)
    left = torch.randint(0, 2 * padding + 1, (b,), generator=g)
    flips = (torch.arange(b) % 2 == 0) if with_flips else None
    out = crop_flip(images, top, left, flips, padding=padding)
    assert out.dtype == dtype and out.shape == images.shape
    assert torch.equal(out, reference_crop_flip(images, top, left, flips, padding))


def test_crop_flip_extreme_offsets():
    images = make_images((4, 2, 6, 6), torch.uint8)
    top = torch.tensor([0, 8, 0, 8])
    left = torch.tensor([0, 0, 8, 8])
    flips = torch.tensor([False, True, False, True])
    out = crop_flip(images, top, left, flips, padding=4)
    assert torch.equal(out, reference_crop_flip(images, top, left, flips, 4))
    assert out[0, :, :4, :].eq(0).all() and out[0, :, 4:, 4:].eq(images[0, :, :2, :2]).all()


def test_random_is_crop_flip_with_sampled_params():
    images = make_images((16, 3, 8, 8), torch.float32)
    out = random_crop_flip(images, padding=3, generator=gen(7))
    top, left, flips = _sample_crop_flip_params(16, 3, True, gen(7), images.device)
    assert torch.equal(out, reference_crop_flip(images, top, left, flips, 3))


def test_random_outputs_are_valid_crops_covering_all_offsets_and_flips():
    # A single image with unique nonzero pixels: every candidate crop is distinct.
    h = w = 5
    padding = 2
    image = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, 1, h, w)
    offsets = range(2 * padding + 1)
    params = [(t, c, f) for t in offsets for c in offsets for f in (False, True)]
    candidates = torch.cat(
        [
            reference_crop_flip(image, [t], [c], torch.tensor([f]), padding).flatten(1)
            for t, c, f in params
        ]
    )
    assert len(torch.unique(candidates, dim=0)) == len(params)

    batch = 1000
    out = random_crop_flip(image.expand(batch, 1, h, w), padding=padding, generator=gen(0))
    matches = (out.flatten(1)[:, None, :] == candidates[None]).all(-1)  # (batch, candidates)
    assert torch.equal(matches.sum(1), torch.ones(batch, dtype=torch.long))  # each is one crop
    hits = matches.sum(0)
    assert (hits > 0).all()  # every offset pair, flipped and not, occurs
    flipped = hits[1::2].sum().item()
    assert 0.4 * batch < flipped < 0.6 * batch


def test_sampled_param_distribution():
    top, left, flips = _sample_crop_flip_params(4000, 4, True, gen(3), torch.device("cpu"))
    for t in (top, left):
        assert t.min() == 0 and t.max() == 8
        counts = torch.bincount(t, minlength=9).float()
        assert (counts > 4000 / 9 * 0.7).all()
    assert 0.45 < flips.float().mean().item() < 0.55
    assert not torch.equal(top, left)
    assert _sample_crop_flip_params(4, 4, False, gen(3), torch.device("cpu"))[2] is None


def test_reproducible_and_seed_dependent():
    images = make_images((32, 3, 16, 16), torch.uint8)
    a = random_crop_flip(images, generator=gen(11))
    b = random_crop_flip(images, generator=gen(11))
    c = random_crop_flip(images, generator=gen(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    g = gen(11)  # successive calls on one generator advance it
    assert torch.equal(random_crop_flip(images, generator=g), a)
    assert not torch.equal(random_crop_flip(images, generator=g), a)


def test_default_generator_works():
    images = make_images((4, 3, 8, 8), torch.uint8)
    assert random_crop_flip(images).shape == images.shape


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float16, torch.float32])
def test_dtype_preserved_and_identity(dtype):
    images = make_images((8, 3, 8, 8), dtype)
    out = random_crop_flip(images, padding=0, flip=False, generator=gen(0))
    assert out.dtype == dtype
    assert torch.equal(out, images)
    assert out.data_ptr() != images.data_ptr()  # a new tensor, never the input


def test_flip_only():
    images = make_images((64, 1, 4, 6), torch.uint8)
    out = random_crop_flip(images, padding=0, generator=gen(5))
    same = (out == images).flatten(1).all(1)
    mirrored = (out == images.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all()
    assert same.any() and mirrored.any()


def test_channels_last_input():
    images = make_images((8, 3, 12, 12), torch.uint8)
    cl = images.contiguous(memory_format=torch.channels_last)
    out_cl = random_crop_flip(cl, generator=gen(9))
    out = random_crop_flip(images, generator=gen(9))
    assert torch.equal(out_cl, out)
    assert out_cl.is_contiguous(memory_format=torch.channels_last)
    assert out.is_contiguous()


def test_empty_batch():
    images = torch.zeros(0, 3, 8, 8, dtype=torch.uint8)
    assert random_crop_flip(images, generator=gen(0)).shape == (0, 3, 8, 8)


def test_validation_errors():
    images = make_images((2, 3, 8, 8), torch.uint8)
    with pytest.raises(
        ValueError, match=r"expected images of shape \(B, C, H, W\), got \(3, 8, 8\)"
    ):
        random_crop_flip(images[0])
    with pytest.raises(TypeError, match="expected images to be a torch.Tensor"):
        random_crop_flip(images.numpy())
    with pytest.raises(ValueError, match="expected padding >= 0, got -1"):
        random_crop_flip(images, padding=-1)
    with pytest.raises(TypeError, match="expected padding to be an int"):
        random_crop_flip(images, padding=2.0)
    with pytest.raises(TypeError, match="expected flip to be a bool"):
        random_crop_flip(images, flip=1)
    with pytest.raises(TypeError, match="expected generator to be a torch.Generator"):
        random_crop_flip(images, generator=0)
    with pytest.raises(ValueError, match="expected a generator on device meta, got one on cpu"):
        random_crop_flip(torch.empty(2, 3, 8, 8, device="meta"), generator=gen(0))
    zeros = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"expected top offsets in \[0, 2\], got \[0, 3\]"):
        crop_flip(images, torch.tensor([0, 3]), zeros, padding=1)
    with pytest.raises(ValueError, match="expected left to be an integer tensor of shape"):
        crop_flip(images, zeros, zeros.float(), padding=1)
    with pytest.raises(ValueError, match="expected flips to be a bool tensor"):
        crop_flip(images, zeros, zeros, zeros, padding=1)


def test_normalize_images():
    x = torch.tensor([[0, 1, 127, 128, 255]], dtype=torch.uint8)
    out = normalize_images(x)
    assert out.dtype == torch.float32
    assert torch.equal(out, x.double().div(128).sub(1).float())
    assert out[0, 0] == -1 and out[0, 3] == 0 and out[0, 4] == 127 / 128
    for dtype in (torch.float64, torch.bfloat16, torch.float16):
        assert torch.equal(normalize_images(x, dtype=dtype).double(), x.double() / 128 - 1)
    cl = make_images((2, 3, 4, 4), torch.uint8).contiguous(memory_format=torch.channels_last)
    assert normalize_images(cl).is_contiguous(memory_format=torch.channels_last)
    assert x[0, 4] == 255  # input untouched


def test_normalize_validation():
    with pytest.raises(TypeError, match="expected uint8 images, got torch.float32"):
        normalize_images(torch.zeros(2))
    with pytest.raises(TypeError, match="expected a floating dtype, got torch.int32"):
        normalize_images(torch.zeros(2, dtype=torch.uint8), dtype=torch.int32)
    with pytest.raises(TypeError, match="expected images to be a torch.Tensor"):
        normalize_images([1, 2])


def test_padding_is_exact_zero_even_next_to_non_finite_pixels():
    images = torch.full((2, 1, 4, 4), float("inf"))
    images[1] = float("nan")
    top, left = torch.tensor([0, 4]), torch.tensor([4, 0])
    out = crop_flip(images, top, left, torch.tensor([True, False]), padding=2)
    expected = reference_crop_flip(images, top, left, torch.tensor([True, False]), 2)
    torch.testing.assert_close(out, expected, equal_nan=True, rtol=0, atol=0)
    assert out[0, 0, :2].eq(0).all() and out[1, 0, 2:].eq(0).all()
