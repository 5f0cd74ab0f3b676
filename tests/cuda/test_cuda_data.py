"""The CUDA branches of the data path: on-device augmentation, the training streams,
pinned host memory with non-blocking copies, and evaluation on the device.

The training stream draws every crop / flip parameter of an epoch on the CPU from a
generator seeded by ``(seed, epoch)`` and applies them on the images' device, so the
same seed must give bit-identical batches on CUDA and on the CPU.
"""

from __future__ import annotations

import pytest
import torch

from classbalanced.data import augment
from classbalanced.data.loaders import make_loader
from classbalanced.engine import evaluate
from classbalanced.engine.distributed import DistContext
from classbalanced.engine.streams import InMemoryStream, LoaderStream
from classbalanced.models import build_model

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _images(n=40, channels=3, size=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 5, (n,), generator=g)
    return x, y


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_crop_flip_on_cuda_equals_cpu(dtype, channels_last):
    x, _ = _images()
    x = x.to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(5)
    top = torch.randint(0, 9, (x.shape[0],), generator=g)
    left = torch.randint(0, 9, (x.shape[0],), generator=g)
    flips = torch.rand(x.shape[0], generator=g) < 0.5
    cpu = augment.crop_flip(x, top, left, flips, padding=4)
    gpu = augment.crop_flip(x.cuda(), top.cuda(), left.cuda(), flips.cuda(), padding=4)
    assert gpu.device.type == "cuda" and gpu.dtype == dtype
    assert gpu.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert torch.equal(gpu.cpu(), cpu)
    # the unvalidated path the streams use (no host read of the offsets) gives the same
    fast = augment.crop_flip(
        x.cuda(), top.cuda(), left.cuda(), flips.cuda(), padding=4, validate=False
    )
    assert torch.equal(fast.cpu(), cpu)


def _reference_crop_flip(images, top, left, flips, padding):
    """Per image: pad, slice, flip (the straightforward definition, on the CPU)."""
    h, w = images.shape[2:]
    out = []
    for b in range(images.shape[0]):
        padded = torch.nn.functional.pad(images[b], (padding,) * 4)
        crop = padded[:, int(top[b]) : int(top[b]) + h, int(left[b]) : int(left[b]) + w]
        out.append(torch.flip(crop, dims=[-1]) if bool(flips[b]) else crop)
    return torch.stack(out)


def test_random_crop_flip_with_a_cuda_generator_matches_the_reference():
    """(Moved from tests/data/test_augment.py.) The CUDA generator's draws, applied by the
    batched kernel on the GPU, equal the per-image definition on the CPU."""
    images, _ = _images(n=16, size=32)
    images = images.cuda()
    out = augment.random_crop_flip(images, generator=torch.Generator("cuda").manual_seed(0))
    assert out.is_cuda
    top, left, flips = augment._sample_crop_flip_params(
        16, 4, True, torch.Generator("cuda").manual_seed(0), images.device
    )
    expected = _reference_crop_flip(images.cpu(), top.cpu(), left.cpu(), flips.cpu(), 4)
    assert torch.equal(out.cpu(), expected)


def test_random_crop_flip_with_a_cuda_generator_is_reproducible_and_a_crop():
    x, _ = _images(n=64)
    xc = x.cuda()
    a = augment.random_crop_flip(xc, generator=torch.Generator("cuda").manual_seed(7))
    b = augment.random_crop_flip(xc, generator=torch.Generator("cuda").manual_seed(7))
    c = augment.random_crop_flip(xc, generator=torch.Generator("cuda").manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # every output image is one of the (9 x 9 offsets x 2 flips) crops of its padded input
    for i in range(4):
        candidates = [
            augment.crop_flip(
                x[i : i + 1], torch.tensor([t]), torch.tensor([l]), torch.tensor([f]), padding=4
            )
            for t in range(9)
            for l in range(9)  # noqa: E741
            for f in (False, True)
        ]
        assert any(torch.equal(a[i : i + 1].cpu(), cand) for cand in candidates)
    with pytest.raises(ValueError, match="generator on device"):
        augment.random_crop_flip(xc, generator=torch.Generator().manual_seed(0))


def test_normalize_images_on_cuda_equals_cpu():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert torch.equal(
            augment.normalize_images(x.cuda(), dtype=dtype).cpu(),
            augment.normalize_images(x, dtype=dtype),
        )


@pytest.mark.parametrize("world", [1, 2])
def test_in_memory_stream_on_cuda_gives_the_cpu_batches(world):
    x, y = _images(n=50)
    kwargs = dict(batch_size=16, seed=11, pad=4, flip=True)
    for rank in range(world):
        cpu = InMemoryStream(x, y, ctx=DistContext(rank=rank, world_size=world), **kwargs)
        gpu = InMemoryStream(
            x.cuda(), y.cuda(), ctx=DistContext(rank=rank, world_size=world, device=CUDA), **kwargs
        )
        for epoch in (0, 3):
            pairs = list(zip(cpu.epoch(epoch), gpu.epoch(epoch), strict=True))
            assert len(pairs) == 3
            for (xa, ya), (xb, yb) in pairs:
                assert xb.device.type == "cuda"
                assert torch.equal(xb.cpu(), xa) and torch.equal(yb.cpu(), ya)
        # resuming mid-epoch on the device continues exactly
        tail = [xb.cpu() for xb, _ in gpu.epoch(3, start_step=1)]
        assert all(
            torch.equal(a, b) for a, b in zip(tail, [xa for xa, _ in cpu.epoch(3)][1:], strict=True)
        )


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i].float(), int(self.y[i])


def test_make_loader_pins_host_memory_and_non_blocking_copies_arrive_intact():
    x, y = _images(n=48)
    loader = make_loader(_ListDataset(x, y), 16, train=False, num_workers=0, seed=0)
    assert loader.pin_memory  # CUDA is available: batches are page-locked
    stream = torch.cuda.Stream()
    seen = []
    for images, labels, skipped in loader:
        assert skipped == 0 and images.is_pinned() and labels.is_pinned()
        with torch.cuda.stream(stream):
            on_gpu = images.to("cuda", non_blocking=True)
        stream.synchronize()
        seen.append((on_gpu.cpu(), labels))
    assert torch.equal(torch.cat([s for s, _ in seen]), x.float())
    assert torch.equal(torch.cat([lab for _, lab in seen]), y)


def test_loader_stream_on_cuda_pins_and_equals_the_cpu_stream(monkeypatch):
    from classbalanced.data.loaders import collate_skip_bad

    pinned = []
    original = torch.utils.data.DataLoader.__init__

    def spy(self, *args, **kwargs):
        pinned.append(kwargs.get("pin_memory", False))
        original(self, *args, **kwargs)

    monkeypatch.setattr(torch.utils.data.DataLoader, "__init__", spy)
    x, y = _images(n=48)
    data = _ListDataset(x, y)
    common = dict(batch_size=8, seed=4, num_workers=0, collate=collate_skip_bad)
    cpu = list(LoaderStream(data, ctx=DistContext(), **common).epoch(2))
    gpu = list(LoaderStream(data, ctx=DistContext(device=CUDA), **common).epoch(2))
    assert pinned == [False, True]
    assert len(cpu) == len(gpu) == 6
    for (xa, ya), (xb, yb) in zip(cpu, gpu, strict=True):
        assert xb.device.type == "cuda" and yb.device.type == "cuda"
        assert torch.equal(xb.cpu(), xa) and torch.equal(yb.cpu(), ya)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_evaluate_on_cuda_counts_like_the_cpu(precision):
    x, y = _images(n=200, size=16)
    torch.manual_seed(0)
    model = build_model("resnet8", 5).eval()
    cpu = evaluate(model, x, y, batch_size=64, num_classes=5)
    gpu_model = build_model("resnet8", 5)
    gpu_model.load_state_dict(model.state_dict())
    gpu_model.cuda().to(memory_format=torch.channels_last)
    gpu = evaluate(
        gpu_model,
        x.cuda(),
        y.cuda(),
        batch_size=64,
        num_classes=5,
        precision=precision,
        channels_last=True,
    )
    assert torch.equal(gpu.total.cpu(), cpu.total)
    # logits differ by rounding (reduced precision): a near-tie may flip, no more than that
    slack = 0 if precision == "fp32" else 4
    assert (gpu.correct.cpu() - cpu.correct).abs().sum() <= max(slack, 1)
