"""Speed of ``classbalanced.data.prepare`` and the loaders: prepare at iNaturalist-2018 size, and the image pipeline.

Run from the repository root::

    .venv/bin/python benchmarks/data_speed.py
    .venv/bin/python benchmarks/data_speed.py --pipeline-images 600 --workers 4
    .venv/bin/python benchmarks/data_speed.py --pipeline-only --sizes 800x600
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
* Input pipeline, old path vs new path side by side, on ``--pipeline-images`` JPEGs of
  each ``--sizes`` (default 800x600, iNaturalist's long side, and 500x375; smooth random
  colour fields plus noise, quality 90) at 224 px, batch ``--batch-size``:

  - old: torchvision's v2 ``RandomResizedCrop`` + flip on the fully decoded image, float
    normalisation in the worker, a ``DataLoader`` rebuilt every epoch
    (``persistent_workers=False``, as ``LoaderStream`` does);
  - draft: ``build_transforms(draft=True, output="uint8")`` (the same random draws, JPEG
    decoded at a reduced size where the crop allows, PIL's resize), uint8 batches out of
    the workers, persistent workers;
  - fast (PIL's decoder): ``pipeline.FastRandomResizedCrop(partial=False)`` (the same random
    draws; the JPEG decoded at a reduced size and only down to the crop's last row; torch's
    uint8 resize), ``collate_channels_last``, persistent workers;
  - fast: ``pipeline.FastRandomResizedCrop`` with the libjpeg extension (``_jpegcrop``,
    built at install time where libjpeg-turbo's headers exist): only the crop's region is
    decoded (the same pixels); left out, with a note, where the extension is not built;
  - the fast path on copies of the images with their short side reduced to ``--resize``
    (what ``classbalanced prepare --resize`` writes; made before timing);
  - with ``--device cuda``: device (``EncodedRandomResizedCrop``: the workers read the
    files and draw the crops; ``decode_batch`` decodes each batch with nvJPEG on the GPU).

  uint8 batches are normalised with ``normalize_uint8`` in the main process (the device's
  job on a GPU); that time is left out of the rates, which measure the workers' work.
  "one worker" is the rate in the main process (``num_workers=0``, one torch thread), i.e.
  what one worker process delivers, counted per CPU-second of the process (robust to other
  load on a shared machine; the wall-clock rate is printed beside it); "workers for 3,000
  images/s" = ceil(3000 / that rate)
  (one H200 trains ResNet-50 in bf16 at roughly 3,000 images/s). Then each path with
  ``--workers`` worker processes (0: skip). ``--epochs`` (4) epochs each; the best epoch after the first is
  reported, so start-up and bursts of background load are excluded (the old path's
  worker start-up recurs every epoch in training; it is not in its number here).
  Then where one image's time goes (``stage`` rows, ms of CPU per image, one thread).

Prints one markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
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

from classbalanced.data.loaders import (  # noqa: E402
    ImageFileDataset,
    build_transforms,
    collate_skip_bad,
    mean_std,
)
from classbalanced.data.prepare import prepare  # noqa: E402
from classbalanced.data.sources import missing_files  # noqa: E402

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
        layout = prepare("inat2018", root, check_files=False, log=lambda _m: None)
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
    missing_files(root, rels)  # warm the cache
    t0 = time.perf_counter()
    missing = missing_files(root, rels)
    t_scan = time.perf_counter() - t0
    t0 = time.perf_counter()
    gone = [i for i, rel in enumerate(rels) if not os.path.exists(os.path.join(root, rel))]
    t_exists = time.perf_counter() - t0
    assert missing == gone == []
    return t_scan, t_exists


def make_jpegs(root: Path, n: int, seed: int, size=(500, 375)) -> list[tuple[str, int]]:
    rng = np.random.default_rng(seed)
    samples = []
    folder = f"img{size[0]}x{size[1]}"
    for i in range(n):
        small = Image.fromarray(rng.integers(0, 256, (15, 20, 3), dtype=np.uint8))
        img = np.asarray(small.resize(size, Image.BICUBIC), dtype=np.int16)
        img = np.clip(img + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
        rel = f"{folder}/{i:05d}.jpg"
        (root / folder).mkdir(exist_ok=True)
        Image.fromarray(img).save(root / rel, "JPEG", quality=90)
        samples.append((rel, i % 10))
    return samples


def images_per_second(
    make_loader, epochs: int, normalize=None, rebuild: bool = False, device=None
) -> tuple[float, float]:
    """Best epoch rates after the first (warm-up, worker start-up) epoch: robust to background load.

    Returns ``(wall-clock rate, rate per CPU-second of this process)``; the second is what a
    dedicated core delivers when this process does all the work (``num_workers=0``).
    ``rebuild``: a new loader every epoch (the old path); ``normalize``: applied to each
    batch (uint8 batches; decoding too for the device path); on the CPU its time is left out
    (the device's work on a GPU, not the workers'). ``device`` cuda: every batch (pinned by
    the loader) is copied to the GPU with ``non_blocking=True`` and normalised there, and
    each epoch's clock stops after a synchronise.
    """
    cuda = device is not None and device.type == "cuda"
    rates, cpu_rates = [], []
    loader = make_loader()
    for _ in range(epochs):
        if rebuild:
            loader = make_loader()
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        for images, _labels, skipped in loader:
            assert skipped == 0
            if cuda and isinstance(images, torch.Tensor):
                if not images.is_pinned():
                    raise SystemExit("expected pinned host batches on CUDA (the loader pins them)")
                images = images.to(device, non_blocking=True)
            if normalize is not None:
                t1, c1 = time.perf_counter(), time.process_time()
                images = normalize(images)
                if not cuda:
                    t0, c0 = t0 + time.perf_counter() - t1, c0 + time.process_time() - c1
            assert images.dtype == torch.float32 and images.shape[1:] == (3, 224, 224)
            n += images.shape[0]
        if cuda:
            torch.cuda.synchronize(device)
        rates.append(n / (time.perf_counter() - t0))
        cpu_rates.append(n / max(time.process_time() - c0, 1e-9))
    return max(rates[1:]), max(cpu_rates[1:])


def loader_factory(dataset, batch: int, workers: int, persistent: bool, collate=None):
    def make():
        return torch.utils.data.DataLoader(
            dataset,
            pin_memory=torch.cuda.is_available(),
            batch_size=batch,
            shuffle=True,
            num_workers=workers,
            collate_fn=collate or collate_skip_bad,
            persistent_workers=persistent and workers > 0,
            generator=torch.Generator().manual_seed(0),
        )

    return make


def pipeline_paths(root: Path, samples, args) -> dict:
    """name -> (transform, batch normalisation or None, persistent workers, collate, image root)."""
    from classbalanced.data.pipeline import (
        PARTIAL_JPEG_DECODING,
        FastRandomResizedCrop,
        collate_channels_last,
        normalize_uint8,
    )
    from classbalanced.data.resize import resize_images

    mean, std = mean_std("inat2018")
    device = torch.device(args.device)
    on_device = lambda x: normalize_uint8(x, mean, std)  # noqa: E731
    fast = (FastRandomResizedCrop(224), on_device, True, collate_channels_last)
    pil_fast = (FastRandomResizedCrop(224, partial=False), on_device, True, collate_channels_last)
    paths = {
        "old": (build_transforms(True, 224, mean, std, draft=False), None, False, None, root),
        "draft": (
            build_transforms(True, 224, mean, std, draft=True, output="uint8"),
            on_device,
            True,
            None,
            root,
        ),
        "fast (PIL's decoder)": (*pil_fast, root),
        "fast": (*fast, root),
    }
    if not PARTIAL_JPEG_DECODING:  # the same as the PIL row
        del paths["fast"]
    if args.resize:
        cache = root / f"resized-{args.resize}"
        resize_images(root, cache, [rel for rel, _ in samples], args.resize, args.workers)
        paths[f"fast on `prepare --resize {args.resize}` copies"] = (*fast, cache)
    if device.type == "cuda":  # decoded in batches by nvJPEG on the GPU
        from classbalanced.data.encoded import (
            EncodedRandomResizedCrop,
            collate_encoded,
            decode_batch,
        )

        decode = lambda b: normalize_uint8(decode_batch(b, 224, device), mean, std)  # noqa: E731
        paths["device (nvJPEG)"] = (
            EncodedRandomResizedCrop(224),
            decode,
            True,
            collate_encoded,
            root,
        )
    return paths


def pipeline_rows(root: Path, size: tuple[int, int], args) -> list[tuple[str, str]]:
    """Old path vs new paths at one image size: per-worker rate, workers for 3,000 img/s."""
    samples = make_jpegs(root, args.pipeline_images, args.seed, size)
    kb = statistics.mean((root / rel).stat().st_size for rel, _ in samples) / 1024
    rows, per_worker = [], {}
    what = f"{size[0]}x{size[1]} JPEGs (~{kb:.0f} KB), 224 px train transform"
    device = torch.device(args.device)
    if device.type == "cuda":
        what += ", copied to the GPU"
    threads = torch.get_num_threads()
    paths = pipeline_paths(root, samples, args)
    for name, (transform, normalize, persistent, collate, images) in paths.items():
        dataset = ImageFileDataset(images, samples, transform)
        torch.set_num_threads(1)
        wall, rate = images_per_second(
            loader_factory(dataset, args.batch_size, 0, False, collate),
            args.epochs,
            normalize,
            not persistent,
            device,
        )
        torch.set_num_threads(threads)
        per_worker[name] = rate
        rows.append(
            (
                f"{name} path, one worker (num_workers=0, 1 thread): {what}",
                f"{rate:,.0f} images per CPU-second ({wall:,.0f}/s wall); "
                f"{math.ceil(3000 / rate)} workers for 3,000 images/s",
            )
        )
        if args.workers:
            many = loader_factory(dataset, args.batch_size, args.workers, persistent, collate)
            rate_n, _ = images_per_second(many, args.epochs, normalize, not persistent, device)
            rows.append((f"{name} path, {args.workers} workers: {what}", f"{rate_n:,.0f} images/s"))
    for name in ("draft", "fast (PIL's decoder)", "fast"):
        if name not in per_worker:
            continue
        ratio = per_worker[name] / per_worker["old"]
        rows.append((f"{name} / old per worker, {size[0]}x{size[1]}", f"{ratio:.2f}x"))
    torch.set_num_threads(1)
    rows += stage_rows(root, samples, size, args.repeats)
    torch.set_num_threads(threads)
    return rows


def stage_rows(root: Path, samples, size, repeats: int) -> list[tuple[str, str]]:
    """Where one image's time goes, old path vs fast path (ms per image, CPU time, best of
    ``repeats``): decode, crop + resize, flip + tensor (+ float normalisation), collate."""

    from classbalanced.data.pipeline import (
        PARTIAL_JPEG_DECODING,
        _crop_box,
        _resized_crop,
        draft_factor,
        draw_crop,
        jpeg_region,
        jpeg_rows,
    )

    files = [str(root / rel) for rel, _ in samples]
    stages: dict[str, float] = {}

    def clock(name, fn):
        best = math.inf
        for _ in range(max(1, repeats)):
            torch.manual_seed(0)
            t0 = time.process_time()
            out = [fn(f) for f in files]
            best = min(best, time.process_time() - t0)
        stages[name] = best / len(files) * 1e3
        return out

    def full(f):
        with Image.open(f) as img:
            img.load()
            return img.convert("RGB")

    def partial(f):
        with Image.open(f) as img:
            p = draw_crop(img, (0.08, 1.0), (3 / 4, 4 / 3), True)
            return jpeg_rows(img, draft_factor(p.width, p.height, 224), p.top + p.height)

    clock("read the file, parse the header", lambda f: Image.open(f).close())
    decoded = clock("old: decode whole image (PIL)", full)
    clock("fast (PIL's decoder): decode at 1/k down to the crop's last row", partial)

    def region(f):
        with Image.open(f) as img:
            p = draw_crop(img, (0.08, 1.0), (3 / 4, 4 / 3), True)
            k = draft_factor(p.width, p.height, 224)
            w, h = img.size
            return jpeg_region(img, k, _crop_box(p, w, h, -(-w // k), -(-h // k)))

    if PARTIAL_JPEG_DECODING:
        clock("fast: decode the crop's region at 1/k (libjpeg extension)", region)

    def eighth(f):
        with Image.open(f) as img:
            img.draft("RGB", (img.size[0] // 8, img.size[1] // 8))
            img.load()

    clock("floor: decode whole image at 1/8 (entropy decoding, about all that is left)", eighth)
    boxes = []
    torch.manual_seed(0)
    for img in decoded:
        p = draw_crop(img, (0.08, 1.0), (3 / 4, 4 / 3), True)
        boxes.append((p.left, p.top, p.left + p.width, p.top + p.height))
    it = iter(boxes * repeats)
    crops = clock(
        "old: crop + resize (PIL bilinear, full resolution)",
        lambda f: decoded[files.index(f)].crop(next(it)).resize((224, 224), Image.BILINEAR),
    )
    it = iter(boxes * repeats)

    def torch_resize(f):
        return _resized_crop(
            torch.from_numpy(np.array(decoded[files.index(f)].crop(next(it)))), 224
        )

    clock("fast: crop + resize (torch uint8, full resolution: k = 1)", torch_resize)
    mean, std = mean_std("inat2018")
    from torchvision.transforms import v2

    to_float = v2.Compose(
        [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    )
    floats = clock(
        "old: flip + to float tensor + normalise",
        lambda f: to_float(crops[files.index(f)].transpose(Image.FLIP_LEFT_RIGHT)),
    )
    collate = [(x, 0) for x in floats[:32]]
    t0 = time.process_time()
    for _ in range(20):
        collate_skip_bad(collate)
    stages["old: collate float32 (per image)"] = (time.process_time() - t0) / 640 * 1e3
    from classbalanced.data.pipeline import collate_channels_last

    small = [(torch.zeros(224, 224, 3, dtype=torch.uint8).permute(2, 0, 1), 0)] * 32
    t0 = time.process_time()
    for _ in range(20):
        collate_channels_last(small)
    stages["fast: collate uint8 channels-last (per image)"] = (time.process_time() - t0) / 640 * 1e3
    tag = f"{size[0]}x{size[1]}"
    return [(f"stage, {tag}: {name}", f"{ms:.2f} ms") for name, ms in stages.items()]


def prepare_rows(root: Path, args, rows: list) -> float:
    """The prepare and existence-check rows; returns the annotation generation time."""
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
    return gen_s


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-images", type=int, default=437_513)
    p.add_argument("--classes", type=int, default=8_142)
    p.add_argument("--val-per-class", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--exist-files", type=int, default=20_000)
    p.add_argument("--exist-folders", type=int, default=400)
    p.add_argument("--pipeline-images", type=int, default=300)
    p.add_argument("--epochs", type=int, default=4, help="epochs per pipeline measurement")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--sizes",
        type=lambda t: tuple(int(v) for v in t.split("x")),
        nargs="+",
        default=[(800, 600), (500, 375)],
        help="JPEG sizes WxH for the input pipeline (default 800x600 500x375)",
    )
    p.add_argument("--pipeline-only", action="store_true", help="only the input pipeline rows")
    p.add_argument(
        "--resize",
        type=int,
        default=256,
        help="also the new path on copies with this short side (prepare --resize; 0: skip)",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu, or cuda: batches are also copied to the GPU (pinned, non-blocking) and "
        "normalised there, and a path decoding on the GPU (nvJPEG) is added",
    )
    args = p.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available here")

    rows = []
    gen_s = None
    with tempfile.TemporaryDirectory(prefix="cb-data-speed-") as tmp:
        root = Path(tmp)
        if not args.pipeline_only:
            gen_s = prepare_rows(root, args, rows)
        for size in args.sizes:
            rows += pipeline_rows(root, size, args)

    print(
        f"Data speed (classbalanced.data), {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"device {args.device}"
    )
    from classbalanced.data.pipeline import PARTIAL_JPEG_DECODING

    if not PARTIAL_JPEG_DECODING:
        print(
            "(the libjpeg extension is not built: no 'fast' row; install libjpeg-dev and "
            "reinstall with pip install -e . to build it)"
        )
    if gen_s is not None:
        print(f"(generating the synthetic annotations took {gen_s:.1f} s, not counted)")
    print()
    print("| measurement | result |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
