"""Batch streams: every image once per epoch, rank slices of one global batch, samplers."""

import torch

from classbalanced.engine.distributed import DistContext
from classbalanced.engine.streams import InMemoryStream, epoch_plan
from classbalanced.sampling import ClassBalancedSampler


def _data(n=100, classes=4):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    labels = torch.tensor([min(i // 40, classes - 1) for i in range(n)])  # 40/40/20 + tail
    return images, labels


def _ids(x):
    # pixels hold the image index (x / 128 - 1 normalisation undone); pad 0 keeps them intact
    return ((x[:, 0, 0, 0] + 1) * 128).round().long()


def test_one_epoch_sees_each_image_once():
    images, labels = _data()
    stream = InMemoryStream(
        images, labels, batch_size=16, seed=3, pad=0, flip=False, ctx=DistContext()
    )
    seen = torch.cat([_ids(x) for x, _ in stream.epoch(0)])
    assert stream.steps_per_epoch == 6 and seen.numel() == 96
    assert seen.unique().numel() == 96  # no repeats; the 4 left over are dropped
    again = torch.cat([_ids(x) for x, _ in stream.epoch(0)])
    other = torch.cat([_ids(x) for x, _ in stream.epoch(1)])
    assert torch.equal(seen, again) and not torch.equal(seen, other)
    # resuming at step 2 yields exactly the remaining batches
    tail = torch.cat([_ids(x) for x, _ in stream.epoch(0, start_step=2)])
    assert torch.equal(tail, seen[32:])


def test_ranks_take_slices_of_the_same_global_batch():
    images, labels = _data()
    single = InMemoryStream(
        images, labels, batch_size=16, seed=0, pad=2, flip=True, ctx=DistContext()
    )
    ranks = [
        InMemoryStream(
            images,
            labels,
            batch_size=16,
            seed=0,
            pad=2,
            flip=True,
            ctx=DistContext(rank=r, world_size=2),
        )
        for r in range(2)
    ]
    for (x, y), (x0, y0), (x1, y1) in zip(
        single.epoch(0), ranks[0].epoch(0), ranks[1].epoch(0), strict=True
    ):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


def test_class_balanced_sampler_balances_the_classes():
    images, labels = _data(n=200)  # classes of 40, 40, 40, 80 images
    sampler = ClassBalancedSampler(labels, 0.999999, seed=0, num_samples=20000)
    order = epoch_plan(200, 16, 1, seed=0, epoch=0, pad=0, flip=False).order
    assert order.numel() == 200
    stream = InMemoryStream(
        images.repeat(100, 1, 1, 1)[:20000],
        labels.repeat(100)[:20000],
        batch_size=500,
        seed=0,
        pad=0,
        flip=False,
        ctx=DistContext(),
        sampler=sampler,
    )
    drawn = torch.cat([y for _, y in stream.epoch(0)])
    share = torch.bincount(drawn, minlength=4).double() / drawn.numel()
    torch.testing.assert_close(
        share, torch.full((4,), 0.25, dtype=torch.float64), atol=0.02, rtol=0
    )
