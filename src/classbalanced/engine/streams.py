"""Where training batches come from: tensors held on the device, or image files.

Both streams give, for an epoch and a starting step, the normalised batches of
this process (rank) in order. The global batch of step ``s`` is the same
whatever the number of ranks: rank ``r`` of ``W`` takes its ``r``-th slice of
``batch / W`` images, so ``W`` ranks with batch ``b`` see exactly what one
process with batch ``W * b`` sees.

* :class:`InMemoryStream` (CIFAR, digits, arrays, small class folders): uint8
  images live on the device; the permutation and every crop / flip parameter of
  an epoch are drawn up front from a generator seeded by ``(seed, epoch)``, and
  augmentation runs on whole batches on the device.
* :class:`LoaderStream` (iNaturalist, ImageNet): a ``DataLoader`` over image
  files with decoding and augmentation in worker processes, a
  ``DistributedSampler`` re-seeded each epoch with ``set_epoch``, and unreadable
  images skipped and counted rather than crashing a long run; optionally persistent
  workers (each batch seeded by its position: the same batches) and uint8 batches decoded and / or
  normalised on the device.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data.distributed import DistributedSampler

from .._seeding import epoch_generator
from ..data.augment import crop_flip, normalize_images
from ..data.images import warn_bad_image
from .distributed import DistContext

try:  # numpy's worker seed as torch derives it (a private function of torch's worker loop)
    from torch.utils.data._utils.worker import _generate_state
except ImportError:  # pragma: no cover - a torch without it: a seed of our own
    _generate_state = None  # type: ignore[assignment]  # the except branch of an import

__all__ = [
    "EpochPlan",
    "epoch_plan",
    "InMemoryStream",
    "LoaderStream",
    "draw_loader_seed",
    "loader_generator",
    "seed_worker",
]


@dataclass
class EpochPlan:
    order: Tensor  # (steps * batch,) positions into the training set
    top: Tensor
    left: Tensor
    flips: Tensor | None


def epoch_plan(
    n: int, batch: int, steps: int, seed: int, epoch: int, pad: int, flip: bool
) -> EpochPlan:
    """The permutation and every augmentation parameter of one epoch, drawn up front.

    Only ``steps * batch`` of the ``n`` entries are used (the remainder is dropped).

    >>> a = epoch_plan(10, 4, 2, seed=0, epoch=3, pad=4, flip=True)
    >>> b = epoch_plan(10, 4, 2, seed=0, epoch=3, pad=4, flip=True)
    >>> torch.equal(a.order, b.order), a.order.shape, int(a.top.max()) <= 8
    (True, torch.Size([10]), True)
    """
    g = epoch_generator(seed, epoch, rule="affine")
    # drawn for all n images whatever the batch: the same epoch for any batch split
    # (gradient accumulation) or number of processes; the steps use the first steps * batch
    order = torch.randperm(n, generator=g)
    size = n
    top = torch.randint(0, 2 * pad + 1, (size,), generator=g)
    left = torch.randint(0, 2 * pad + 1, (size,), generator=g)
    flips = torch.rand(size, generator=g) < 0.5 if flip else None
    return EpochPlan(order, top, left, flips)


class InMemoryStream:
    """Batches from uint8 ``images (N, C, H, W)`` and ``labels (N,)`` held on the device."""

    skipped = 0  # nothing can be unreadable in memory

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        batch_size: int,
        seed: int,
        pad: int,
        flip: bool,
        ctx: DistContext,
        sampler=None,
    ) -> None:
        n = images.shape[0]
        self.sampler = (
            sampler  # e.g. ClassBalancedSampler(world_size=1): its global draw is the order
        )
        world = ctx.world_size
        # a global batch larger than the data shrinks to the data (kept divisible by the ranks)
        self.batch = min(batch_size, n - n % world)
        if self.batch < world:
            raise ValueError(
                f"expected at least {world} training images for {world} processes, got {n}"
            )
        self.images, self.labels = images, labels
        # draws per epoch: the sampler's (a class-aware epoch can be longer than the data)
        self.draws = n if sampler is None else len(sampler)
        self.steps_per_epoch = max(1, self.draws // self.batch)
        self.seed, self.pad, self.flip, self.ctx = seed, pad, flip, ctx
        self.local = self.batch // world

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        plan = epoch_plan(
            self.draws,
            self.batch,
            self.steps_per_epoch,
            self.seed,
            epoch,
            self.pad,
            self.flip,
        )
        if self.sampler is not None:
            plan.order = self.sampler.global_indices(epoch)
        device = self.images.device
        # one copy of the epoch's plan to the device; offsets are in range by construction
        order, top, left = (t.to(device) for t in (plan.order, plan.top, plan.left))
        flips_all = None if plan.flips is None else plan.flips.to(device)
        for s in range(start_step, self.steps_per_epoch):
            lo = s * self.batch + self.ctx.rank * self.local
            part = slice(lo, lo + self.local)
            idx = order[part]
            flips = None if flips_all is None else flips_all[part]
            x = crop_flip(
                self.images[idx], top[part], left[part], flips, padding=self.pad, validate=False
            )
            yield normalize_images(x), self.labels[idx]


class _SkipSampler(torch.utils.data.Sampler):
    """The indices of ``sampler`` after the first ``skip`` (to resume mid-epoch), each tagged
    ``(seed, batch, index)`` (``batch``: its position in the epoch // ``batch_size``) for
    :class:`_ReseededDataset`."""

    def __init__(self, sampler, skip: int, batch_size: int, seed: int = 0) -> None:
        self.sampler, self.skip, self.batch_size, self.seed = sampler, skip, batch_size, seed

    def __iter__(self):
        for i, index in enumerate(self.sampler):
            if i >= self.skip:
                yield self.seed, i // self.batch_size, index

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


def loader_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """The generator a loader of ``epoch`` draws its workers' base seed from (one draw: worker
    ``w`` is seeded with ``base + w``); a function of ``(seed, epoch, rank)`` only."""
    return epoch_generator(seed, epoch, rule="seedsequence", key=(rank, 1))


def draw_loader_seed(generator: torch.Generator) -> int:
    """The base seed a new ``DataLoader`` iterator draws from its ``generator``."""
    return int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())


def seed_worker(base_seed: int, stream: int | None = None) -> None:
    """Seed this process's ``random``, ``torch`` and ``numpy`` RNGs exactly as PyTorch seeds a
    fresh ``DataLoader`` worker number ``stream`` (default: this worker's id) for ``base_seed``
    (``base_seed + stream``)."""
    if stream is None:
        info = torch.utils.data.get_worker_info()
        stream = 0 if info is None else info.id
    random.seed(base_seed + stream)
    torch.manual_seed(base_seed + stream)
    if _generate_state is not None:  # numpy's seed as torch's worker loop derives it
        np.random.seed(_generate_state(base_seed, stream))  # noqa: NPY002 (as torch does)
    else:  # pragma: no cover - a torch without it: a seed of our own
        np.random.seed((base_seed + stream) % 2**32)  # noqa: NPY002


def _rng_states() -> tuple:
    return random.getstate(), torch.get_rng_state(), np.random.get_state()  # noqa: NPY002


def _set_rng_states(states: tuple) -> None:
    random.setstate(states[0])
    torch.set_rng_state(states[1])
    np.random.set_state(states[2])  # noqa: NPY002


class _ReseededDataset(torch.utils.data.Dataset):
    """``dataset`` indexed by ``(seed, batch, index)``: the transforms of each batch draw from
    the global RNGs seeded by :func:`seed_worker` ``(seed, batch)``, whichever process (a
    worker, persistent or not, or the main one) and whichever batch it decoded before, so a
    batch depends only on ``(seed, batch)``; the process's own RNG states are left as they were.
    """

    def __init__(self, dataset) -> None:
        self.dataset, self._key, self._states = dataset, None, None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        seed, batch, index = item
        if torch.utils.data.get_worker_info() is not None:  # a worker: its RNGs are the batch's
            if (seed, batch) != self._key:  # a batch's items come one after the other
                self._key = seed, batch
                seed_worker(seed, batch)
            return self.dataset[index]
        saved = _rng_states()  # this process: the trainer's RNGs, to be left as they were
        try:
            if (seed, batch) != self._key:
                self._key = seed, batch
                seed_worker(seed, batch)
            else:  # the next item of the same batch: go on with its streams
                _set_rng_states(self._states)
            return self.dataset[index]
        finally:
            self._states = _rng_states()
            _set_rng_states(saved)


class LoaderStream:
    """Batches decoded from image files by ``DataLoader`` workers (large-scale datasets).

    ``dataset[i]`` returns ``(image, label)`` or ``None`` for an unreadable file;
    ``collate`` drops those and returns ``(images, labels, num_skipped)``; :attr:`skipped`
    counts them over the run. ``images`` arrive on the device and pass through ``on_device``
    (e.g. decoding and normalising uint8 batches there; default: as they come), which may
    return ``(images, kept)`` instead: the images it could decode and the ``(N,)`` bool mask
    of them (the others are dropped with their labels and counted).

    The transforms of batch ``b`` of epoch ``e`` draw from RNGs seeded by ``(seed, e, rank,
    b)`` (:func:`loader_generator`, :class:`_ReseededDataset`), so a run's augmentation
    replays, a run resumed mid-epoch gets the batches of the uninterrupted one, and the
    batches are the same for any ``num_workers`` (0: decoded in this process, whose global
    RNG is left alone). ``persistent``: the workers live for the whole run; every batch is the
    same as with ``persistent=False`` (a new loader, new workers, every epoch).
    """

    def __init__(
        self,
        dataset,
        *,
        batch_size: int,
        seed: int,
        ctx: DistContext,
        num_workers: int,
        collate,
        sampler=None,
        persistent: bool = False,
        on_device: Callable[[Any], Tensor] | None = None,
    ) -> None:
        if batch_size % ctx.world_size:
            raise ValueError(
                f"batch_size must divide over {ctx.world_size} processes, got {batch_size}"
            )
        self.dataset, self.ctx, self.collate = dataset, ctx, collate
        # a rank-aware sampler with set_epoch (class-balanced), or each image once per epoch
        self.sampler = sampler or DistributedSampler(
            dataset,
            num_replicas=ctx.world_size,
            rank=ctx.rank,
            shuffle=True,
            seed=seed,
            drop_last=True,
        )
        if len(self.sampler) < 1:
            raise ValueError(
                f"expected at least {ctx.world_size} training images for {ctx.world_size} "
                f"processes, got {len(dataset)}"
            )
        # a global batch larger than the data shrinks to the data (as InMemoryStream's)
        self.local = min(batch_size // ctx.world_size, len(self.sampler))
        self.batch = self.local * ctx.world_size
        self.steps_per_epoch = len(self.sampler) // self.local
        self.num_workers, self.seed = num_workers, seed
        self.persistent = persistent and num_workers > 0
        self.on_device = on_device
        self.skipped = 0
        self._loader: tuple[torch.utils.data.DataLoader, _SkipSampler] | None = None

    def _make_loader(self, sampler, dataset, **extra) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            dataset,
            generator=torch.Generator().manual_seed(0),  # the base seed: not the global RNG
            batch_size=self.local,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=self.collate,
            pin_memory=self.ctx.device.type == "cuda",
            drop_last=True,
            **extra,
        )

    def _epoch_loader(self, epoch: int, start_step: int) -> torch.utils.data.DataLoader:
        skip = start_step * self.local
        seed = draw_loader_seed(loader_generator(self.seed, epoch, self.ctx.rank))
        if not self.persistent:
            sampler = _SkipSampler(self.sampler, skip, self.local, seed)
            return self._make_loader(sampler, _ReseededDataset(self.dataset))
        if self._loader is None:  # the persistent loader and its sampler
            tagged = _SkipSampler(self.sampler, skip, self.local, seed)
            loader = self._make_loader(
                tagged, _ReseededDataset(self.dataset), persistent_workers=True
            )
            self._loader = loader, tagged
        loader, tagged = self._loader
        tagged.skip = skip
        tagged.seed = seed
        return loader

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches of steps ``start_step`` to ``steps_per_epoch - 1``: one per step. A batch
        whose images are all unreadable is replaced by the previous batch of this iteration
        (before the first readable one: by that one); none left readable: ``ValueError``."""
        self.sampler.set_epoch(epoch)
        loader = self._epoch_loader(epoch, start_step)
        last, unreadable = None, []  # the last readable batch; the steps still waiting for one
        for step, (images, labels, skipped) in enumerate(loader, start=start_step):
            if step >= self.steps_per_epoch:
                break
            self.skipped += int(skipped)
            batch = self._on_device(images, labels)
            if batch is None:
                warn_bad_image(
                    f"every image of the batch of step {step} was unreadable", stacklevel=2
                )
                unreadable.append(step)
                if last is None:
                    continue
                batch = last
            for _ in range(len(unreadable) - (batch is last)):  # the steps waiting for one
                yield batch
            unreadable, last = [], batch
            yield batch
        if unreadable and last is None:
            raise ValueError(
                f"every image of the batches of steps {unreadable[0]} to {unreadable[-1]} of "
                f"epoch {epoch + 1} was unreadable ({self.skipped} images skipped so far): "
                "nothing to train on"
            )

    def _on_device(self, images, labels) -> tuple[Tensor, Tensor] | None:
        """The batch on the device, through ``on_device``; ``None``: no image was readable."""
        device = self.ctx.device
        if images.shape[0] == 0:
            return None
        if isinstance(images, Tensor):
            images = images.to(device, non_blocking=True)
        if self.on_device is not None:
            images = self.on_device(images)
            if isinstance(images, tuple):  # (images, kept): some could not be decoded
                images, kept = images
                self.skipped += int((~kept).sum())
                labels = labels[kept.cpu()]
                if images.shape[0] == 0:
                    return None
        return images, labels.to(device, non_blocking=True)
