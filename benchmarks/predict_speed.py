"""Images per second of ``classbalanced predict`` beside ``classbalanced evaluate`` on the
same images, in one process, on the CPU.

Run from the repository root::

    .venv/bin/python benchmarks/predict_speed.py
    .venv/bin/python benchmarks/predict_speed.py --images 4000 --size 32 --model resnet32

Everything is made in a temporary folder (deleted at the end): a class folder of
``--images`` PNGs (scikit-learn's digits, upscaled to ``--size`` pixels, RGB), and a
finished run (``--model``, one epoch on a few images: the weights do not matter for the
speed). Then, ``--repeats`` times, alternating:

* evaluate: ``engine.evaluate.evaluate_run(run, test_data=folder)`` (what
  ``classbalanced evaluate RUN --test-data FOLDER`` runs: the checkpoint read and
  checked, every image decoded into memory, then batches of the run's evaluation size);
* predict: ``use.load_run`` + ``use.predict.predict_files`` (what ``classbalanced predict
  RUN FOLDER --output p.csv`` runs: the checkpoint read and checked, images decoded by
  DataLoader workers, batches of the same size, the CSV and metrics written).

Both end to end, from the run folder to the numbers; the median of the repeats is
reported, and the ratio predict / evaluate (target: at least 0.9x). Prints one
markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from classbalanced.config import TrainConfig
from classbalanced.data.arrays import load_digits
from classbalanced.engine import train
from classbalanced.engine.evaluate import evaluate_run
from classbalanced.use import load_run
from classbalanced.use.predict import predict_files


def _images(root: Path, count: int, size: int) -> None:
    train, test = load_digits()
    pool = np.concatenate([train.images, test.images])
    labels = np.concatenate([train.labels, test.labels])
    for i in range(count):
        j = i % len(pool)
        folder = root / str(labels[j])
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(pool[j][..., 0]).resize((size, size), Image.Resampling.BILINEAR)
        image.convert("RGB").save(folder / f"{i:05d}.png")


def _run(root: Path, folder: Path, model: str) -> Path:
    cfg = TrainConfig(
        dataset="folder",
        train_data=str(folder),
        test_data=str(folder),
        imbalance_factor=100.0,
        model=model,
        epochs=1,
        batch_size=64,
        device="cpu",
        progress=False,
        seed=0,
        out=str(root / "run"),
    )
    train(cfg, log=lambda _: None)
    return root / "run"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--workers", type=int, default=None, help="predict's loader workers (default: its own)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / "images"
        _images(folder, args.images, args.size)
        run = _run(root, folder, args.model)
        rates: dict[str, list[float]] = {"evaluate": [], "predict": []}
        for r in range(args.repeats):
            start = time.perf_counter()
            evaluated = evaluate_run(run, test_data=str(folder), device="cpu")
            rates["evaluate"].append(args.images / (time.perf_counter() - start))
            start = time.perf_counter()
            result = predict_files(
                load_run(run),
                [folder],
                output=str(root / f"p{r}.csv"),
                progress=False,
                num_workers=args.workers,
                log=lambda _: None,
            )
            rates["predict"].append(args.images / (time.perf_counter() - start))
            assert result["metrics"]["accuracy"] == evaluated["accuracy"]
    evaluate, predict = (statistics.median(rates[k]) for k in ("evaluate", "predict"))
    print(
        f"{args.images} PNGs of {args.size}x{args.size}, {args.model}, CPU "
        f"({torch.get_num_threads()} torch threads), median of {args.repeats}\n"
    )
    print("| command | images/s | vs evaluate |")
    print("|---|---:|---:|")
    print(f"| evaluate RUN --test-data FOLDER | {evaluate:,.0f} | 1.00x |")
    print(f"| predict RUN FOLDER --output p.csv | {predict:,.0f} | {predict / evaluate:.2f}x |")


if __name__ == "__main__":
    main()
