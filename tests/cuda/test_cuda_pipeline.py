"""The image-file pipeline on CUDA: JPEGs decoded in batches with nvJPEG
(``decode_batch(..., "cuda")``) against the same batch decoded on the CPU, and a training
stream that decodes and normalises on the device."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from classbalanced.config import TrainConfig
from classbalanced.data.encoded import EncodedRandomResizedCrop, collate_encoded, decode_batch
from classbalanced.data.loaders import ImageFileDataset
from classbalanced.engine.distributed import DistContext
from classbalanced.engine.run_data import train_pipeline
from classbalanced.engine.streams import LoaderStream


def _jpegs(root, n=12):
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        img = np.asarray(small.resize((320 + 16 * i, 256), Image.BICUBIC))
        Image.fromarray(img).save(root / f"{i}.jpg", quality=90)
        samples.append((f"{i}.jpg", i % 3))
    return samples


def test_decode_batch_on_cuda_matches_the_cpu(tmp_path):
    samples = _jpegs(tmp_path)
    crop = EncodedRandomResizedCrop(224)
    torch.manual_seed(0)
    items = []
    for rel, label in samples:
        with Image.open(tmp_path / rel) as img:
            items.append((crop(img), label))
    batch, _, _ = collate_encoded(items)
    cpu = decode_batch(batch, 224, "cpu").float()
    gpu = decode_batch(batch, 224, "cuda")
    assert gpu.device.type == "cuda" and gpu.dtype == torch.uint8
    diff = (gpu.cpu().float() - cpu).abs()
    assert diff.mean() < 1.5  # nvJPEG's IDCT and upsampling differ from libjpeg's by a level or so


def test_stream_decodes_and_normalises_on_cuda(tmp_path):
    samples = _jpegs(tmp_path)
    ctx = DistContext(device=torch.device("cuda"))
    cfg = TrainConfig(dataset="inat2018", image_size=64, image_decode="device").resolved()
    transform, collate, on_device = train_pipeline(cfg, ctx)
    stream = LoaderStream(
        ImageFileDataset(tmp_path, samples, transform),
        batch_size=4,
        seed=0,
        ctx=ctx,
        num_workers=2,
        collate=collate,
        persistent=True,
        on_device=on_device,
    )
    torch.manual_seed(1)
    batches = [x for x, _ in stream.epoch(0)]
    cpu_ctx = DistContext()
    _, _, cpu_device = train_pipeline(cfg, cpu_ctx)
    cpu_stream = LoaderStream(
        ImageFileDataset(tmp_path, samples, transform),
        batch_size=4,
        seed=0,
        ctx=cpu_ctx,
        num_workers=2,
        collate=collate,
        persistent=False,
        on_device=cpu_device,
    )
    torch.manual_seed(1)
    for x, ref in zip(batches, (x for x, _ in cpu_stream.epoch(0)), strict=True):
        assert x.device.type == "cuda" and x.dtype == torch.float32 and x.shape == (4, 3, 64, 64)
        assert (x.cpu() - ref).abs().mean() < 0.05  # the same crops, decoder rounding apart
