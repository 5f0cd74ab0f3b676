"""Images in every form a trained model takes, through the run's evaluation transform.

An *image* is a file path, a PIL image or a uint8 array ``(H, W[, C])``; *images* are one
image, a sequence of them, or a uint8 batch ``(N, H, W[, C])`` laid out as the run's
training data. :class:`Preprocess` turns each into what evaluation fed the network:

* runs on data held in memory (npz, class folders, digits): a file is decoded as the
  folder loader decodes it (RGB, :func:`~classbalanced.data.arrays.read_image`), resized
  (bilinear) to the run's image size; a greyscale image for an RGB model is converted
  as training converted it (``to_rgb``), an RGB image for a greyscale model by PIL's
  luminance (``convert("L")``); an array already of the run's shape is taken as it is;
  then ``x / 128 - 1`` (``normalize_images``);
* runs on prepared image files (iNaturalist, ImageNet): the run's resize + centre crop
  and mean / std normalisation (``engine.run_data.eval_pipeline``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..config import LARGE_DATASETS, TrainConfig
from ..data.arrays import IMG_EXTENSIONS, read_image
from ..data.augment import normalize_images
from ..data.images import to_rgb
from ..engine.run_data import eval_pipeline

__all__ = ["Preprocess", "as_items", "ImageItems", "collate_items"]

_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def _as_array(image: Any) -> np.ndarray | None:
    """A uint8 numpy view of an array or tensor (``None`` for anything else)."""
    if isinstance(image, Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        return None
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got an array of {image.dtype}")
    return image


def as_items(images: Any, image_shape: Sequence[int] | None) -> list:
    """``images`` as a list of single images (paths, PIL images, uint8 arrays ``(H, W[, C])``).

    A 4-D array is a batch; a 3-D one is a batch ``(N, H, W)`` when its last two axes
    are the run's ``image_shape`` height and width and the run is greyscale, else one
    image ``(H, W, C)``.

    >>> len(as_items(np.zeros((5, 8, 8), np.uint8), [8, 8, 1])), len(as_items("a.png", None))
    (5, 1)
    """
    array = _as_array(images)
    if array is not None:
        grey_batch = (
            image_shape is not None
            and array.ndim == 3
            and image_shape[2] == 1
            and tuple(array.shape[1:]) == tuple(image_shape[:2])
        )
        if array.ndim == 4 or grey_batch:
            return list(array)
        if array.ndim in (2, 3):
            return [array]
        raise ValueError(
            f"expected an image (H, W[, C]) or a batch (N, H, W[, C]), got shape {array.shape}"
        )
    if isinstance(images, str | os.PathLike | Image.Image):
        return [images]
    if isinstance(images, Sequence):
        return list(images)
    raise TypeError(
        "expected images as paths, PIL images, uint8 arrays or a sequence of them, "
        f"got {type(images).__name__}"
    )


class Preprocess:
    """The run's evaluation transform: :meth:`one` (an image -> ``(C, H, W)``, in loader
    workers) and :meth:`finish` (a stacked batch -> float ``(N, C, H, W)``)."""

    def __init__(self, cfg: TrainConfig, record: dict) -> None:
        self.channels = int(record["in_channels"])
        shape = record.get("image_shape")
        self.image_shape = None if shape is None else tuple(int(v) for v in shape)
        self.large = cfg.dataset in LARGE_DATASETS
        self.transform: Any
        self.normalize: Callable[[Tensor], Tensor] | None
        self.transform, self.normalize = eval_pipeline(cfg) if self.large else (None, None)

    def __call__(self, images: Any) -> Tensor:
        """Float ``(N, C, H, W)`` of ``images`` (every form of the module docstring)."""
        items = as_items(images, self.image_shape)
        if not items:
            raise ValueError("expected at least one image, got none")
        return self.finish(torch.stack([self.one(item) for item in items]))

    def one(self, image: Any) -> Tensor:
        """One image as evaluation saw it before normalisation; a file that cannot be read
        is a one-line ValueError."""
        if self.large:
            return self._large(image)
        array = np.ascontiguousarray(self._array(image))
        if not array.flags.writeable:  # a PIL image's buffer: torch wants its own copy
            array = array.copy()
        return torch.from_numpy(array).permute(2, 0, 1)

    def finish(self, batch: Tensor) -> Tensor:
        """A stacked batch of :meth:`one` -> the network's float input."""
        if not self.large:
            return normalize_images(batch)
        return self.normalize(batch) if self.normalize is not None else batch.float()

    def _array(self, image: Any) -> np.ndarray:
        hw = None if self.image_shape is None else (self.image_shape[0], self.image_shape[1])
        array = _as_array(image)
        if array is not None:
            if array.ndim == 2:
                array = array[..., None]
            if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
                raise ValueError(
                    f"expected an image (H, W) or (H, W, C) with C in 1/3/4, got shape {array.shape}"
                )
            if array.shape[2] == self.channels and (hw is None or array.shape[:2] == hw):
                return array
            image = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
        elif not isinstance(image, str | os.PathLike | Image.Image):
            raise TypeError(
                f"expected an image as a path, a PIL image or a uint8 array, got {type(image).__name__}"
            )
        rgb = read_image(image, hw)
        if self.channels == 3:
            return rgb
        if self.channels == 1:
            return np.asarray(Image.fromarray(rgb).convert("L"))[..., None]
        raise ValueError(f"expected an image of {self.channels} channels as an array, got {image}")

    def _large(self, image: Any) -> Tensor:
        array = _as_array(image)
        if array is not None:
            image = Image.fromarray(
                array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array
            )
        try:
            with contextlib.ExitStack() as stack:
                img = (
                    image
                    if isinstance(image, Image.Image)
                    else stack.enter_context(Image.open(image))
                )
                if getattr(self.transform, "decodes", False):
                    return torch.as_tensor(self.transform(img))
                img.load()  # full decode: a truncated file raises here
                return torch.as_tensor(self.transform(to_rgb(img)))
        except _IMAGE_ERRORS as exc:
            raise ValueError(f"cannot read image {image}: {' '.join(str(exc).split())}") from None


class ImageItems(torch.utils.data.Dataset):
    """``(tensor, index)`` of each item, or ``(None, index, reason)`` for one that cannot be
    read (counted and listed, never fatal)."""

    def __init__(self, items: Sequence[Any], preprocess: Preprocess) -> None:
        self.items, self.preprocess = items, preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        try:
            return self.preprocess.one(self.items[index]), index
        except ValueError as exc:
            return None, index, str(exc)


def collate_items(batch: Sequence[tuple]) -> tuple[Tensor, Tensor, list[tuple[int, str]]]:
    """``(images, indices, bad)``: the readable items stacked, their positions, and
    ``(position, reason)`` of the others."""
    good = [item for item in batch if item[0] is not None]
    bad = [(item[1], item[2]) for item in batch if item[0] is None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.int64), bad
    images = torch.stack([image for image, _ in good])
    return images, torch.tensor([i for _, i in good], dtype=torch.int64), bad


def is_image_file(path: Path) -> bool:
    """By extension, as the folder loaders decide (``IMG_EXTENSIONS``)."""
    return path.suffix.lower() in IMG_EXTENSIONS
