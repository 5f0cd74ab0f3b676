"""Batched, on-device image augmentation (CIFAR recipe, the paper's Sec. 5.2 and the authors' release).

Everything works on whole batches ``(B, C, H, W)`` with vectorised indexing, on
whatever device the batch lives on, for any dtype (uint8 before normalisation,
or float after). Random numbers come only from an explicit ``torch.Generator``
on the images' device (``None`` uses PyTorch's default generator for it), so the
same generator state gives the same output.

Typical use on a uint8 batch already on the GPU::

    x = normalize_images(random_crop_flip(batch_uint8, padding=4, generator=g))
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["crop_flip", "normalize_images", "random_crop_flip"]


def _check_images(images: object) -> Tensor:
    if not isinstance(images, Tensor):
        raise TypeError(f"expected images to be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(images.shape)}")
    return images


def _check_padding(padding: object) -> int:
    if isinstance(padding, bool) or not isinstance(padding, numbers.Integral):
        raise TypeError(f"expected padding to be an int, got {type(padding).__name__}")
    if padding < 0:
        raise ValueError(f"expected padding >= 0, got {padding}")
    return int(padding)


def crop_flip(
    images: Tensor,
    top: Tensor,
    left: Tensor,
    flips: Tensor | None = None,
    *,
    padding: int,
    validate: bool = True,
) -> Tensor:
    """Deterministic crop + flip with explicit per-image parameters.

    Equivalent to, for every image ``b``: zero-pad by ``padding`` on all sides,
    take ``padded[:, top[b]:top[b]+H, left[b]:left[b]+W]``, then flip it
    horizontally if ``flips[b]`` -- but computed for the whole batch at once by
    gathering from the zero-padded batch with per-image pixel index tensors.

    Args:
        images: ``(B, C, H, W)``, any dtype and device.
        top, left: integer tensors ``(B,)`` with values in ``[0, 2 * padding]``.
        flips: bool tensor ``(B,)``, or ``None`` for no flipping.
        padding: the zero padding (pixels) on each side.
        validate: check shapes and offset ranges (reads the offsets on the host);
            pass False for parameters you drew yourself, e.g. on an accelerator.

    Returns:
        ``(B, C, H, W)`` tensor of the same dtype, device and memory format.

    >>> import torch
    >>> x = torch.arange(1, 10, dtype=torch.uint8).view(1, 1, 3, 3)
    >>> crop_flip(x, torch.tensor([0]), torch.tensor([2]), torch.tensor([True]), padding=1)[0, 0]
    tensor([[0, 0, 0],
            [0, 3, 2],
            [0, 6, 5]], dtype=torch.uint8)
    """
    if not validate:
        return _crop_flip(images, top, left, flips, padding)
    images = _check_images(images)
    padding = _check_padding(padding)
    b = images.shape[0]
    for name, t in (("top", top), ("left", left)):
        if not isinstance(t, Tensor):
            raise TypeError(f"expected {name} to be a torch.Tensor, got {type(t).__name__}")
        if (
            t.shape != (b,)
            or t.dtype.is_floating_point
            or t.dtype.is_complex
            or t.dtype == torch.bool
        ):
            raise ValueError(
                f"expected {name} to be an integer tensor of shape ({b},), got {t.dtype} {tuple(t.shape)}"
            )
        if t.numel() and (int(t.min()) < 0 or int(t.max()) > 2 * padding):
            raise ValueError(
                f"expected {name} offsets in [0, {2 * padding}], got [{int(t.min())}, {int(t.max())}]"
            )
    if flips is not None:
        if not isinstance(flips, Tensor):
            raise TypeError(f"expected flips to be a torch.Tensor, got {type(flips).__name__}")
        if flips.shape != (b,) or flips.dtype != torch.bool:
            raise ValueError(
                f"expected flips to be a bool tensor of shape ({b},), got {flips.dtype} {tuple(flips.shape)}"
            )

    return _crop_flip(images, top, left, flips, padding)


def _crop_flip(
    images: Tensor, top: Tensor, left: Tensor, flips: Tensor | None, padding: int
) -> Tensor:
    """:func:`crop_flip` without validation (no device synchronisation)."""
    b, c, h, w = images.shape
    device = images.device
    channels_last = not images.is_contiguous() and images.is_contiguous(
        memory_format=torch.channels_last
    )
    src = images.contiguous()
    if padding:
        src = F.pad(src, (padding, padding, padding, padding))
    hp, wp = h + 2 * padding, w + 2 * padding
    # Per image, the padded-plane row of each output row and column of each output column.
    rows = top.to(device=device, dtype=torch.long)[:, None] + torch.arange(h, device=device)
    cols = left.to(device=device, dtype=torch.long)[:, None] + torch.arange(w, device=device)
    if flips is not None:
        cols = torch.where(flips.to(device)[:, None], cols.flip(1), cols)
    index = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    out = src.reshape(b, c, hp * wp).gather(2, index).view(b, c, h, w)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


def _sample_crop_flip_params(
    batch_size: int,
    padding: int,
    flip: bool,
    generator: torch.Generator | None,
    device: torch.device,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Draw ``top``, ``left`` (uniform in ``[0, 2*padding]``) and flips (p = 0.5), in that order."""
    top = torch.randint(0, 2 * padding + 1, (batch_size,), generator=generator, device=device)
    left = torch.randint(0, 2 * padding + 1, (batch_size,), generator=generator, device=device)
    flips = None
    if flip:
        flips = torch.rand(batch_size, generator=generator, device=device) < 0.5
    return top, left, flips


def random_crop_flip(
    images: Tensor,
    *,
    padding: int = 4,
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random zero-padded crop and random horizontal flip of every image in a batch.

    Each image is zero-padded by ``padding``, cropped back to ``H x W`` at offsets
    drawn uniformly from ``[0, 2 * padding]`` (rows and columns independently), and
    flipped horizontally with probability 0.5 when ``flip`` is true. Offsets and
    flips are independent per image. See :func:`crop_flip` for the computation.

    Args:
        images: ``(B, C, H, W)``, any dtype (uint8 or float), any device.
        padding: pixels of zero padding per side (4 in the CIFAR recipe).
        flip: whether to apply random horizontal flips.
        generator: ``torch.Generator`` on ``images.device``; ``None`` uses the default one.

    Returns:
        ``(B, C, H, W)`` tensor of the same dtype, device and memory format.

    >>> import torch
    >>> x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8,
    ...                   generator=torch.Generator().manual_seed(0))
    >>> a = random_crop_flip(x, generator=torch.Generator().manual_seed(1))
    >>> b = random_crop_flip(x, generator=torch.Generator().manual_seed(1))
    >>> a.shape, a.dtype, torch.equal(a, b)
    (torch.Size([4, 3, 32, 32]), torch.uint8, True)
    """
    images = _check_images(images)
    padding = _check_padding(padding)
    if not isinstance(flip, bool):
        raise TypeError(f"expected flip to be a bool, got {type(flip).__name__}")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(
                f"expected generator to be a torch.Generator, got {type(generator).__name__}"
            )
        gdev, idev = generator.device, images.device
        if gdev.type != idev.type or (gdev.index is not None and gdev.index != idev.index):
            raise ValueError(f"expected a generator on device {idev}, got one on {gdev}")
    top, left, flips = _sample_crop_flip_params(
        images.shape[0], padding, flip, generator, images.device
    )
    return _crop_flip(images, top, left, flips, padding)


def normalize_images(images: Tensor, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """Scale uint8 pixels to ``x / 128 - 1`` (range ``[-1, 127/128]``), as in the reference recipe.

    Args:
        images: uint8 tensor of any shape (typically ``(B, C, H, W)``), any device.
        dtype: floating output dtype (float32 by default).

    Returns:
        Tensor of the same shape, device and memory format, of dtype ``dtype``.

    >>> import torch
    >>> normalize_images(torch.tensor([0, 128, 255], dtype=torch.uint8))
    tensor([-1.0000,  0.0000,  0.9922])
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"expected images to be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"expected a floating dtype, got {dtype}")
    # Exact in every float format with >= 8 significand bits (k/128 - 1, k <= 255).
    return images.to(dtype).mul_(1.0 / 128.0).sub_(1.0)
