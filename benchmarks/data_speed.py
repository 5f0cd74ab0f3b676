"""Speed of ``classbalanced.data.inat``: prepare at iNaturalist-2018 size, and the image pipeline.

Run from the repository root::

    .venv/bin/python benchmarks/data_speed.py
    .venv/bin/python benchmarks/data_speed.py --pipeline-images 600 --workers 4
    .venv/bin/python benchmarks/data_speed.py --device cuda   # batches also go to the GPU

Everything is generated in a temporary folder (deleted at the end):

* ``prepare``: a synthetic ``train2018.json`` / ``val2018.json`` of the official
  size and shape (437,513 train images, 8,142 classes with a long-tailed,
  exponentially decaying number of images per class, 3 val images per class =
  24,426; image entries carry ``id``, ``file_name``, ``width``, ``height``,
  ``license``, ``rights_holder`` like the real files). The images themselves do
  not exist, so ``prepare`` runs with ``check_files=False``; the median of
  ``--repeats`` runs is reported (target: under 10 s).
* File-existence check: ``--exist-files`` empty files spread over class folders,
  checked once with one ``os.scandir`` per folder (what ``prepare`` does) and once
  with one ``os.path.exists`` per file (warm page cache for both).
* Input pipeline: ``--pipeline-images`` JPEGs of 500x375 (smooth random colour
  fields plus noise, quality 90 -- about the size of an iNaturalist image) go
  through ``ImageFileDataset`` + the training transform at 224 px (decode +
  RandomResizedCrop + flip + normalise) + ``collate_skip_bad``: once in the main
  process (``num_workers=0``, one torch thread: the rate of one worker) and once
  through ``make_loader`` with ``--workers`` worker processes (persistent workers).
  Four epochs each; the best epoch after the first is reported, so worker
  start-up and bursts of background load are excluded. With ``--device cuda``
  each batch (pinned by the loader) is also copied to the GPU with
  ``non_blocking=True``, and each epoch ends with a synchronise.

Prints one markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from classbalanced.data import inat  # noqa: E402

KINGDOMS = ["Plantae", "Insecta", "Aves", "Reptilia", "Mammalia", "Fungi", "Amphibia", "Mollusca"]


def longtail(total: int, classes: int, ratio: float, floor: int) -> np.ndarray:
    """Exponentially decaying counts (max / min ~ ``ratio``) summing exactly to ``total``."""
    shape = ratio ** (-np.arange(classes) / (classes - 1))
    counts = np.maximum(floor, np.floor(shape / shape.sum() * total)).astype(np.int64)
    counts[0] += total - counts.sum()
    return counts


def synthetic_inat(
    root: Path, train_images: int, classes: int, val_per_class: int, seed: int
) -> dict:
    rng = np.random.default_rng(seed)
    counts = longtail(train_images, classes, 500.0, 2)
    cat_ids = rng.permutation(classes)  # categories listed in shuffled order
    kingdom = {int(c): KINGDOMS[int(c) % len(KINGDOMS)] for c in cat_ids}
    categories = [
        {
            "id": int(c),
            "name": f"species {int(c)}",
            "supercategory": kingdom[int(c)],
            "kingdom": kingdom[int(c)],
        }
        for c in cat_ids
    ]
    sizes = {}
    next_id = 0
    for split, per_class in (("train", counts), ("val", np.full(classes, val_per_class))):
        labels = rng.permutation(np.repeat(np.arange(classes), per_class))
        hexes = rng.integers(0, 2**63, size=len(labels))
        images, annotations = [], []
        for i, (c, h) in enumerate(zip(labels.tolist(), hexes.tolist(), strict=True)):
            iid = next_id + i
            images.append(
                {
                    "license": 1,
                    "file_name": f"train_val2018/{kingdom[c]}/{c}/{h:016x}{iid:016x}.jpg",
                    "rights_holder": "someone",
                    "height": 375,
                    "width": 500,
                    "id": iid,
                }
            )
            annotations.append({"id": iid, "image_id": iid, "category_id": c})
        next_id += len(labels)
        doc = {
            "info": {"year": 2018},
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        path = root / f"{split}2018.json"
        path.write_text(json.dumps(doc))
        sizes[path.name] = path.stat().st_size
    return {"counts": counts, "sizes": sizes}


def time_prepare(root: Path, repeats: int, expected: np.ndarray) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        layout = inat.prepare("inat2018", root, check_files=False, log=lambda _m: None)
        times.append(time.perf_counter() - t0)
    # class index = sorted category ids = 0..C-1 here, so counts come back in generation order
    if not np.array_equal(layout.train_counts, expected):
        raise SystemExit("prepare returned counts that differ from the generated ones")
    return times


def time_exists(root: Path, n_files: int, n_folders: int) -> tuple[float, float]:
    rels = []
    for i in range(n_files):
        rel = f"train_val2018/k/{i % n_folders}/{i:08d}.jpg"
        rels.append(rel)
    for folder in {r.rpartition("/")[0] for r in rels}:
        (root / folder).mkdir(parents=True, exist_ok=True)
    for rel in rels:
        (root / rel).touch()
    inat._missing(root, rels)  # warm the cache
    t0 = time.perf_counter()
    missing = inat._missing(root, rels)
    t_scan = time.perf_counter() - t0
    t0 = time.perf_counter()
    gone = [i for i, rel in enumerate(rels) if not os.path.exists(os.path.join(root, rel))]
    t_exists = time.perf_counter() - t0
    assert missing == gone == []
    return t_scan, t_exists


def make_jpegs(root: Path, n: int, seed: int) -> list[tuple[str, int]]:
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        small = Image.fromarray(rng.integers(0, 256, (15, 20, 3), dtype=np.uint8))
        img = np.asarray(small.resize((500, 375), Image.BICUBIC), dtype=np.int16)
        img = np.clip(img + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
        rel = f"img/{i:05d}.jpg"
        (root / "img").mkdir(exist_ok=True)
        Image.fromarray(img).save(root / rel, "JPEG", quality=90)
        samples.append((rel, i % 10))
    return samples


def images_per_second(loader, epochs: int, device: torch.device) -> float:
    """Best epoch rate after the first (warm-up, worker start-up) epoch: robust to background load.

    On CUDA every batch is also copied to the GPU (``non_blocking``; the loader pins host
    memory when CUDA is available), and the epoch's clock stops after a synchronise.
    """
    rates = []
    cuda = device.type == "cuda"
    for _ in range(epochs):
        n, t0 = 0, time.perf_counter()
        for images, labels, skipped in loader:
            assert skipped == 0 and images.shape[1:] == (3, 224, 224)
            if cuda:
                if not images.is_pinned():
                    raise SystemExit("expected pinned host batches on CUDA (make_loader pins them)")
                images = images.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
            n += images.shape[0]
        if cuda:
            torch.cuda.synchronize(device)
        rates.append(n / (time.perf_counter() - t0))
    return max(rates[1:])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-images", type=int, default=437_513)
    p.add_argument("--classes", type=int, default=8_142)
    p.add_argument("--val-per-class", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--exist-files", type=int, default=20_000)
    p.add_argument("--exist-folders", type=int, default=400)
    p.add_argument("--pipeline-images", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu, or cuda: the pipeline rows also copy each batch to the GPU (pinned, non-blocking)",
    )
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available here")

    rows = []
    with tempfile.TemporaryDirectory(prefix="cb-data-speed-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        gen = synthetic_inat(root, args.train_images, args.classes, args.val_per_class, args.seed)
        gen_s = time.perf_counter() - t0
        mb = sum(gen["sizes"].values()) / 2**20
        times = time_prepare(root, args.repeats, gen["counts"])
        med = statistics.median(times)
        rows.append(
            (
                f"prepare inat2018 ({args.train_images:,} train + {args.classes * args.val_per_class:,} val, "
                f"{args.classes:,} classes, {mb:.0f} MB JSON, check_files=False)",
                f"{med:.2f} s (median of {len(times)}; target < 10 s)",
            )
        )
        t_scan, t_exists = time_exists(root / "exist", args.exist_files, args.exist_folders)
        rows.append(
            (
                f"existence check, {args.exist_files:,} files in {args.exist_folders} folders: os.scandir per folder",
                f"{t_scan * 1e3:.1f} ms ({args.exist_files / t_scan / 1e3:,.0f}k files/s)",
            )
        )
        rows.append(
            (
                f"existence check, {args.exist_files:,} files: os.path.exists per file",
                f"{t_exists * 1e3:.1f} ms ({args.exist_files / t_exists / 1e3:,.0f}k files/s)",
            )
        )
        est = (t_scan / args.exist_files) * (args.train_images + args.classes * args.val_per_class)
        rows.append(("prepare with check_files=True, estimate (warm cache)", f"{med + est:.2f} s"))

        samples = make_jpegs(root, args.pipeline_images, args.seed)
        kb = statistics.mean((root / rel).stat().st_size for rel, _ in samples) / 1024
        mean, std = inat.mean_std("inat2018")
        dataset = inat.ImageFileDataset(root, samples, inat.build_transforms(True, 224, mean, std))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        one = inat.make_loader(dataset, args.batch_size, train=True, num_workers=0, seed=0)
        rate0 = images_per_second(one, 4, device)
        torch.set_num_threads(threads)
        many = inat.make_loader(
            dataset, args.batch_size, train=True, num_workers=args.workers, seed=0
        )
        rate_n = images_per_second(many, 4, device)
        what = f"{args.pipeline_images} JPEGs 500x375 (~{kb:.0f} KB), 224 px train transform, batch {args.batch_size}"
        if device.type == "cuda":
            what += ", copied to the GPU"
        rows.append((f"input pipeline, num_workers=0 (1 thread): {what}", f"{rate0:,.0f} images/s"))
        rows.append(
            (f"input pipeline, make_loader num_workers={args.workers}", f"{rate_n:,.0f} images/s")
        )
        del many

    print(
        f"Data speed (classbalanced.data.inat), {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"device {device}"
    )
    print(f"(generating the synthetic annotations took {gen_s:.1f} s, not counted)\n")
    print("| measurement | result |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
