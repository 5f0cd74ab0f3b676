"""JPEG decoding on the device: the crop is drawn in the loader's workers, the decode runs in batches.

:class:`EncodedRandomResizedCrop` draws the crop of
:class:`~classbalanced.data.pipeline.FastRandomResizedCrop` (torchvision's draws) and hands
back the JPEG's bytes with it; :func:`collate_encoded` gathers them into an
:class:`EncodedBatch`, and :func:`decode_batch` decodes the batch in one call of
``torchvision.io.decode_jpeg`` on the device (nvJPEG on CUDA, libjpeg-turbo on the CPU),
crops, resizes and flips. Files the device cannot take (not JPEG, incomplete) are decoded in
the worker as :class:`~classbalanced.data.pipeline.FastRandomResizedCrop` does.

Example:
    >>> batch, labels, skipped = collate_encoded([(torch.zeros(3, 2, 2, dtype=torch.uint8), 4), None])
    >>> decode_batch(batch, 2, "cpu").shape, labels.tolist(), skipped
    (torch.Size([1, 3, 2, 2]), [4], 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from PIL import Image, ImageFile
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg

from .images import warn_bad_image
from .pipeline import FastRandomResizedCrop, draw_crop, has_end_marker

__all__ = ["EncodedBatch", "EncodedRandomResizedCrop", "collate_encoded", "decode_batch"]


class EncodedBatch(NamedTuple):
    """A batch for :func:`decode_batch`: per image either its JPEG file (``files[i]``, uint8
    bytes) and crop ``params[i]`` = (top, left, height, width, flip), or the finished uint8
    image (``images[i]``, for files the device cannot decode); the other is empty.
    ``names[i]``: the JPEG's file name, for the warning when it cannot be decoded."""

    files: list[Tensor]
    params: Tensor  # (N, 5) int64
    images: list[Tensor]
    names: Sequence[str] = ()

    @property
    def shape(self) -> tuple[int]:  # ``shape[0]``: the number of images, as for a tensor batch
        return (int(self.params.shape[0]),)


class EncodedRandomResizedCrop(FastRandomResizedCrop):
    """The crop of :class:`FastRandomResizedCrop` (same draws), left to the device: a complete
    RGB or greyscale JPEG comes back as its bytes, crop parameters and file name
    (``(bytes, params, name)``), to be decoded in batches by :func:`decode_batch`; other files
    are decoded here."""

    def __call__(self, img: Image.Image) -> Any:
        p = draw_crop(img, self.scale, self.ratio, self.flip)
        fp = img.fp if isinstance(img, ImageFile.ImageFile) else None  # format: files only
        if fp is not None and img.format == "JPEG" and img.mode in ("RGB", "L"):
            fp.seek(0)
            data = fp.read()
            if has_end_marker(data):
                name = str(getattr(img, "filename", "") or "a JPEG")
                return torch.frombuffer(bytearray(data), dtype=torch.uint8), torch.tensor(p), name
        return self.apply(img, p)


def collate_encoded(batch: Sequence[Any]) -> tuple[EncodedBatch, Tensor, int]:
    """Collate :class:`EncodedRandomResizedCrop` items (``None``: unreadable, dropped and counted)."""
    good = [item for item in batch if item is not None]
    empty = torch.empty(0, dtype=torch.uint8)
    files, params, images, names = [], [], [], []
    for value, _ in good:
        encoded = isinstance(value, tuple)
        files.append(value[0] if encoded else empty)
        params.append(value[1] if encoded else torch.zeros(5, dtype=torch.int64))
        images.append(empty if encoded else value)
        names.append(value[2] if encoded else "")
    stacked = torch.stack(params) if params else torch.empty(0, 5, dtype=torch.int64)
    labels = torch.tensor([label for _, label in good], dtype=torch.int64)
    return EncodedBatch(files, stacked, images, names), labels, len(batch) - len(good)


def _decode_jpegs(files: list[Tensor], device: torch.device) -> list[Tensor | RuntimeError]:
    """``decode_jpeg`` of ``files`` on ``device`` in one call; where that fails, one by one on
    the device, then with libjpeg on the host: per file its RGB image or the host's error."""
    try:
        return list(decode_jpeg(files, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        pass
    out: list[Tensor | RuntimeError] = []
    for data in files:
        try:
            out.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            try:
                out.append(decode_jpeg(data, mode=ImageReadMode.RGB).to(device))
            except RuntimeError as exc:
                out.append(exc)
    return out


def decode_batch(
    batch: EncodedBatch, size: int, device: torch.device | str, *, drop_bad: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """uint8 ``(N, 3, size, size)`` (channels-last) on ``device`` from an :class:`EncodedBatch`.

    The JPEGs are decoded in one call of ``torchvision.io.decode_jpeg(..., device=device)``
    (nvJPEG on CUDA, libjpeg-turbo on the CPU), each crop resized (bilinear, antialiased, in
    float32, rounded back to uint8) and flipped as drawn. A JPEG that neither the device nor
    libjpeg on the host decodes (broken data behind a valid header) raises ``OSError``; with
    ``drop_bad`` it is left out with a :class:`~classbalanced.data.images.BadImageWarning`, and
    the result is ``(images, kept)``: the ``M <= N`` others and the ``(N,)`` bool mask of them.
    """
    device = torch.device(device)
    n = batch.shape[0]
    out = torch.empty((n, size, size, 3), dtype=torch.uint8, device=device).permute(0, 3, 1, 2)
    kept = torch.ones(n, dtype=torch.bool)
    todo = [i for i in range(n) if batch.files[i].numel()]
    decoded = _decode_jpegs([batch.files[i] for i in todo], device) if todo else []
    for i, img in zip(todo, decoded, strict=True):
        top, left, h, w, flip = batch.params[i].tolist()
        if isinstance(img, RuntimeError) or img.shape[1] < top + h or img.shape[2] < left + w:
            name = batch.names[i] if i < len(batch.names) else f"image {i} of the batch"
            # torchvision's message: "decode_jpeg, <source file>:<line>, <libjpeg's message>"
            why = str(img).split(", ")[-1] if isinstance(img, RuntimeError) else "its size"
            if not drop_bad:
                raise OSError(f"cannot decode {name} on {device}: {why}")
            warn_bad_image(f"skipping unreadable image {name}: not decoded on {device} ({why})")
            kept[i] = False
            continue
        crop = img[None, :, top : top + h, left : left + w].float()
        resized = F.interpolate(crop, (size, size), mode="bilinear", antialias=True)
        resized = resized.round_().clamp_(0, 255).to(torch.uint8)
        out[i] = resized[0].flip(2) if flip else resized[0]
    for i in range(n):
        if batch.images[i].numel():
            out[i] = batch.images[i].to(device, non_blocking=True)
    if not drop_bad:
        return out
    return (out if bool(kept.all()) else out[kept.to(device)]), kept
