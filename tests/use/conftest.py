"""One finished run on real data for the tests of ``classbalanced.use``: scikit-learn's
digits written as PNG class folders (RGB, as the folder loader reads them), a
long-tailed subset (imbalance factor 20), resnet8 for a few epochs on the CPU; and a
validation .npz of the training images the long-tailed subset left out (never the test
set). Reached through the ``use_run`` fixture; tests must not modify its folder.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from classbalanced.config import TrainConfig
from classbalanced.data.arrays import load_digits, load_image_folder
from classbalanced.engine import train


def _write_folder(root: Path, arrays) -> None:
    for i, (x, y) in enumerate(zip(arrays.images, arrays.labels, strict=True)):
        folder = root / arrays.class_names[y]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[..., 0]).save(folder / f"{i:04d}.png")


@contextlib.contextmanager
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def use_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("use_run")
    train_arrays, test_arrays = load_digits()
    _write_folder(root / "train", train_arrays)
    _write_folder(root / "test", test_arrays)
    cfg = TrainConfig(
        dataset="folder",
        train_data=str(root / "train"),
        test_data=str(root / "test"),
        imbalance_factor=20.0,
        model="resnet8",
        epochs=6,
        lr=0.1,
        warmup_epochs=0,
        batch_size=32,
        pad=1,
        flip=False,
        eval_every=6,
        eval_batch_size=128,
        device="cpu",
        progress=False,
        seed=0,
        out=str(root / "run"),
    )
    with _one_thread():
        metrics = train(cfg, log=lambda _: None)
    full = load_image_folder(root / "train")
    used = json.loads((root / "run" / "subset.json").read_text())["indices"]
    left = np.setdiff1d(np.arange(len(full)), used)
    np.savez(root / "val.npz", x=full.images[left], y=full.labels[left])
    return SimpleNamespace(
        root=root,
        out=root / "run",
        test=root / "test",
        val=root / "val.npz",
        metrics=metrics,
        cfg=cfg,
    )
