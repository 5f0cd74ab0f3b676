"""Shared fixtures for the engine tests: a tiny learnable .npz dataset and one finished run.

Helpers are reached through the ``engine_helpers`` fixture (several ``conftest``
modules exist, so importing from ``conftest`` by name would be ambiguous).

The dataset is CIFAR-shaped but small (10 classes x 30 training images of 16x16x3,
10 test images per class): each class is a colour template plus noise, so a few
epochs of resnet8 learn something and the metrics are not all zero.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from classbalanced.config import TrainConfig
from classbalanced.engine import train

NUM_CLASSES = 10
TRAIN_PER_CLASS = 30
TEST_PER_CLASS = 10
SIZE = 16
IMBALANCE = 10.0
EPOCHS = 4
BATCH = 32
TIMING_KEYS = {"train_images_per_second"}


def write_npz(path: Path, labels: np.ndarray, templates: np.ndarray, rng) -> None:
    noise = rng.normal(0.0, 20.0, size=(len(labels), SIZE, SIZE, 3))
    x = np.clip(templates[labels] + noise, 0, 255).astype(np.uint8)
    np.savez(path, x=x, y=labels.astype(np.int64))


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory):
    """Paths and arrays of the tiny train / test .npz files."""
    root = tmp_path_factory.mktemp("tiny_npz")
    rng = np.random.default_rng(1234)
    templates = rng.integers(30, 226, size=(NUM_CLASSES, 1, 1, 3))
    train_labels = rng.permutation(np.repeat(np.arange(NUM_CLASSES), TRAIN_PER_CLASS))
    test_labels = np.repeat(np.arange(NUM_CLASSES), TEST_PER_CLASS)
    write_npz(root / "train.npz", train_labels, templates, rng)
    write_npz(root / "test.npz", test_labels, templates, rng)
    with np.load(root / "test.npz") as test:
        test_x, test_y = test["x"], test["y"]
    return SimpleNamespace(
        train=root / "train.npz",
        test=root / "test.npz",
        train_labels=train_labels,
        test_x=test_x,
        test_y=test_y,
    )


def tiny_config(data, out, **overrides) -> TrainConfig:
    values = dict(
        dataset="npz",
        train_data=str(data.train),
        test_data=str(data.test),
        imbalance_factor=IMBALANCE,
        model="resnet8",
        epochs=EPOCHS,
        batch_size=BATCH,
        warmup_epochs=2,  # a visible ramp in the logged learning rate
        eval_every=2,
        eval_batch_size=40,
        device="cpu",
        progress=False,
        seed=0,
        out=str(out),
    )
    values.update(overrides)
    return TrainConfig(**values)


def quiet(_message: str) -> None:
    pass


@pytest.fixture
def copied_run(tiny_run, tmp_path):
    """A copy of :func:`tiny_run`'s folder that a test may change."""
    out = tmp_path / "run"
    shutil.copytree(tiny_run.out, out)
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_npz, tmp_path_factory):
    """One finished run of :func:`tiny_config`; tests must not modify its folder."""
    out = tmp_path_factory.mktemp("tiny_run") / "run"
    cfg = tiny_config(tiny_npz, out)
    with torch_threads(1), record_sgd_steps() as lrs:
        returned = train(cfg, log=quiet)
    return SimpleNamespace(out=out, cfg=cfg, returned=returned, step_lrs=list(lrs))


@contextlib.contextmanager
def torch_threads(count: int):
    """Run torch ops on ``count`` threads, then restore the previous setting.

    On a small, shared CPU two intra-op threads fighting another process for the
    cores are several times slower than one thread; the tests' tiny tensors gain
    nothing from more.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def one_thread():
    """Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    with torch_threads(1):
        yield


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING_KEYS}


def history_without_timing(history: list[dict]) -> list[dict]:
    return [without_timing(h) for h in history]


@contextlib.contextmanager
def record_sgd_steps(sigterm_at: int | None = None):
    """Record the learning rate of every ``torch.optim.SGD.step``; optionally raise
    SIGTERM in this process right after optimiser step number ``sigterm_at`` (1-based).

    The trainer uses SGD (the paper's recipe), so this sees every training step
    without depending on the loop's internals.
    """
    original = torch.optim.SGD.step
    lrs: list[float] = []

    def step(self, *args, **kwargs):
        lrs.append(float(self.param_groups[0]["lr"]))
        result = original(self, *args, **kwargs)
        if sigterm_at is not None and len(lrs) == sigterm_at:
            signal.raise_signal(signal.SIGTERM)
        return result

    torch.optim.SGD.step = step
    try:
        yield lrs
    finally:
        torch.optim.SGD.step = original


def replace(cfg: TrainConfig, **changes) -> TrainConfig:
    return dataclasses.replace(cfg, **changes)


@pytest.fixture(scope="session")
def engine_helpers():
    """This module's constants and helper functions, as a namespace."""
    return SimpleNamespace(
        NUM_CLASSES=NUM_CLASSES,
        TRAIN_PER_CLASS=TRAIN_PER_CLASS,
        TEST_PER_CLASS=TEST_PER_CLASS,
        IMBALANCE=IMBALANCE,
        EPOCHS=EPOCHS,
        BATCH=BATCH,
        tiny_config=tiny_config,
        quiet=quiet,
        read_json=read_json,
        without_timing=without_timing,
        history_without_timing=history_without_timing,
        record_sgd_steps=record_sgd_steps,
        replace=replace,
        write_npz=write_npz,
    )
