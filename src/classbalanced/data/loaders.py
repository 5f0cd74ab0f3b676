"""The file-backed Dataset and its loaders: prepared samples -> batches of image tensors.

:class:`ImageFileDataset` decodes ``root / path`` of each ``(path, class index)`` sample of a
:class:`~classbalanced.data.prepared.PreparedLayout` and skips (and counts) unreadable images
instead of crashing a long run; :func:`build_transforms` gives the standard ImageNet
preprocessing (the reduced-decoding transforms of :mod:`~classbalanced.data.pipeline`, or
torchvision's), :func:`make_loader` the DataLoader (distributed sampling for training, this
rank's share in order for evaluation), :func:`make_datasets` both splits with the dataset's
mean / std.

Example:
    >>> mean_std("inat2018")
    ((0.466, 0.471, 0.38), (0.195, 0.194, 0.192))
    >>> list(eval_indices(5, 1, 2))
    [1, 3]
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence, Sized
from typing import Any

import torch
from PIL import Image, ImageFile
from torch.utils.data import DataLoader, Dataset, DistributedSampler, SequentialSampler, Subset
from torchvision.transforms import v2

from ..files import PathLike
from .images import BadImageWarning, to_rgb, warn_bad_image
from .pipeline import DraftRandomResizedCrop, DraftResizeCenterCrop
from .prepared import LARGE_DATASETS, LIST_DATASETS, PreparedLayout

__all__ = [
    "MEAN_STD",
    "ImageFileDataset",
    "build_transforms",
    "collate_skip_bad",
    "eval_indices",
    "make_datasets",
    "make_loader",
    "mean_std",
]


MEAN_STD: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "inat": ((0.466, 0.471, 0.380), (0.195, 0.194, 0.192)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
#: which MEAN_STD entry each dataset uses (ImageNet-LT, Places-LT and lists: ImageNet's, as in
#: the recipes of Liu et al. 2019 and Kang et al. 2020)
_MEAN_STD_OF = {
    "inat2017": "inat",
    "inat2018": "inat",
    "inat": "inat",
    **{name: "imagenet" for name in ("imagenet", *LIST_DATASETS)},
}


def mean_std(dataset: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel ``(mean, std)`` of ``dataset`` (iNaturalist's, or ImageNet's for the others)."""
    key = _MEAN_STD_OF.get(dataset)
    if key is None:
        raise ValueError(
            f"no mean/std for dataset {dataset!r}: expected one of {', '.join(LARGE_DATASETS)}"
        )
    return MEAN_STD[key]


class ImageFileDataset(Dataset):
    """Decodes ``root / path`` with PIL (RGB, :func:`~classbalanced.data.images.to_rgb`) and
    applies ``transform``.

    ``__getitem__`` returns ``(image, label)``, or ``None`` when the file is
    missing, unreadable or truncated (a full decode is forced with
    ``img.load()``); each such file is warned about once per process
    (one :class:`BadImageWarning`, :func:`~classbalanced.data.images.warn_bad_image`). Use :func:`collate_skip_bad` as the
    DataLoader's ``collate_fn`` to drop the ``None`` items and count them.
    """

    def __init__(
        self,
        root: PathLike,
        samples: Sequence[tuple[str, int]],
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        self.root = str(root)
        self.samples = samples
        self.transform = transform
        self._warned: set[str] = set()
        if ImageFile.LOAD_TRUNCATED_IMAGES:
            warnings.warn(
                "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is enabled: truncated images will be "
                "padded with grey instead of being skipped",
                BadImageWarning,
                stacklevel=2,
            )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int] | None:
        rel, label = self.samples[index]
        path = os.path.join(self.root, rel)
        decodes = getattr(self.transform, "decodes", False)
        try:
            with Image.open(path) as img:
                if decodes and self.transform is not None:  # decodes (e.g. reduced), raises alike
                    return self.transform(img), int(label)
                img.load()  # full decode: a truncated file raises here
                rgb = to_rgb(img)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            if path not in self._warned:
                self._warned.add(path)
                msg = f"skipping unreadable image {path}: {' '.join(str(exc).split()) or type(exc).__name__}"
                warn_bad_image(msg, stacklevel=2)
            return None
        if self.transform is not None:
            rgb = self.transform(rgb)
        return rgb, int(label)


def collate_skip_bad(batch: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Drop ``None`` items; return ``(images, labels, num_skipped)``.

    ``images`` is the stacked tensor of the good items (shape ``(0,)`` when all
    were bad: callers skip an empty batch), ``labels`` int64.

    >>> x, y, skipped = collate_skip_bad([(torch.zeros(3, 2, 2), 1), None, (torch.ones(3, 2, 2), 0)])
    >>> tuple(x.shape), y.tolist(), skipped
    ((2, 3, 2, 2), [1, 0], 1)
    """
    good = [item for item in batch if item is not None]
    skipped = len(batch) - len(good)
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.int64), skipped
    images = torch.stack([torch.as_tensor(img) for img, _ in good])
    labels = torch.tensor([label for _, label in good], dtype=torch.int64)
    return images, labels, skipped


def build_transforms(
    train: bool,
    image_size: int = 224,
    mean: Sequence[float] = MEAN_STD["imagenet"][0],
    std: Sequence[float] = MEAN_STD["imagenet"][1],
    *,
    draft: bool = True,
    output: str = "float",
) -> Callable[[Image.Image], torch.Tensor]:
    """Standard ImageNet preprocessing of a PIL image into a (3, S, S) tensor.

    Train: ``RandomResizedCrop(S)`` + ``RandomHorizontalFlip``. Eval:
    ``Resize(int(S * 256 / 224))`` + ``CenterCrop(S)``. ``output="float"``: scaled to
    [0, 1] and ``Normalize(mean, std)``; ``"uint8"``: raw pixels, to be normalised on the
    device with :func:`classbalanced.data.pipeline.normalize_uint8`.

    ``draft=True`` (default): the transforms of :mod:`classbalanced.data.pipeline`, which
    decode JPEGs at a reduced size where the crop allows (same random draws as torchvision;
    1.3-1.5x the throughput of the full decode at 800x600, docs/benchmarks.md); ``False``: torchvision's v2
    transforms on the fully decoded image.
    """
    if image_size < 1:
        raise ValueError(f"image_size: expected a positive integer, got {image_size}")
    if output not in ("float", "uint8"):
        raise ValueError(f"output: expected 'float' or 'uint8', got {output!r}")
    if draft:
        cls = DraftRandomResizedCrop if train else DraftResizeCenterCrop
        return cls(image_size, output=output, mean=mean, std=std)
    to_tensor: list[Any] = [v2.PILToTensor()]
    if output == "float":
        to_tensor += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if train:
        spatial = [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        spatial = [
            v2.Resize(int(image_size * 256 / 224), antialias=True),
            v2.CenterCrop(image_size),
        ]
    return v2.Compose([*spatial, *to_tensor])


def eval_indices(n: int, rank: int, world_size: int) -> range:
    """The items rank ``rank`` evaluates: ``range(rank, n, world_size)`` (no padding, no overlap).

    >>> [list(eval_indices(5, r, 2)) for r in range(2)]
    [[0, 2, 4], [1, 3]]
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"expected 0 <= rank < world_size, got rank {rank}, world_size {world_size}"
        )
    return range(rank, n, world_size)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    num_workers: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    epoch: int = 0,
) -> DataLoader:
    """A DataLoader yielding ``(images, labels, num_skipped)`` (see :func:`collate_skip_bad`).

    Train: ``DistributedSampler(shuffle=True, seed=seed, drop_last=True)`` for any
    ``world_size`` (call ``loader.sampler.set_epoch(e)`` each epoch; ``epoch`` sets
    the first one). Eval: this rank's ``eval_indices`` in order (a ``Subset`` with a
    ``SequentialSampler``), so no item is padded in or counted twice.
    ``pin_memory`` when CUDA is available; ``persistent_workers`` when ``num_workers > 0``.
    """
    if not isinstance(dataset, Sized):
        raise TypeError(f"dataset: expected one with a length, got {type(dataset).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers: expected >= 0, got {num_workers}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"expected 0 <= rank < world_size, got rank {rank}, world_size {world_size}"
        )
    common: dict[str, Any] = {
        "batch_size": batch_size,
        "num_workers": num_workers,
        "collate_fn": collate_skip_bad,
        "pin_memory": torch.cuda.is_available(),
        "persistent_workers": num_workers > 0,
    }
    if train:
        sampler: DistributedSampler[int] = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        sampler.set_epoch(epoch)
        # distinct augmentation streams per rank; the workers' seeds derive from this generator
        generator = torch.Generator().manual_seed(seed * 1009 + rank)
        return DataLoader(dataset, sampler=sampler, generator=generator, **common)
    shard = Subset(dataset, eval_indices(len(dataset), rank, world_size))
    return DataLoader(shard, sampler=SequentialSampler(shard), **common)


def make_datasets(
    layout: PreparedLayout, image_size: int = 224
) -> tuple[ImageFileDataset, ImageFileDataset]:
    """``(train, val)`` :class:`ImageFileDataset` with the dataset's mean/std transforms."""
    mean, std = mean_std(layout.dataset)
    return (
        ImageFileDataset(
            layout.root, layout.train_samples, build_transforms(True, image_size, mean, std)
        ),
        ImageFileDataset(
            layout.root, layout.val_samples, build_transforms(False, image_size, mean, std)
        ),
    )
