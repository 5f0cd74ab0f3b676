"""CUDA-only tests: every test in this folder carries the ``cuda`` marker and is skipped,
with the reason below, where ``torch.cuda.is_available()`` is false.

Run them on a GPU machine with ``python -m pytest -m cuda tests/cuda`` (or all GPU checks at
once with ``benchmarks/gpu_check.py``). They use only the public API (``classbalanced.*``,
``classbalanced.engine.*``, the CLI through subprocesses), so they survive internal refactors.
Subprocesses get ``src/`` first on ``PYTHONPATH``: the package need not be installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SKIP_REASON = (
    "needs CUDA: torch.cuda.is_available() is False on this machine "
    "(run these on a GPU machine: python benchmarks/gpu_check.py --out DIR)"
)


@pytest.hookimpl(tryfirst=True)  # before -m cuda selects by marker
def pytest_collection_modifyitems(config, items):
    skip = None if torch.cuda.is_available() else pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.cuda)
            if skip is not None:
                item.add_marker(skip)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python: this checkout's ``src`` first, no torchrun leftovers."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p
    )
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    env.update(extra)
    return env


def run_python(args: list[str], *, timeout: float = 300, check: bool = True, **env_extra: str):
    """Run ``python ARGS`` (e.g. ``["-m", "classbalanced", "train", ...]``) from the repository root."""
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(**env_extra),
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"exit {proc.returncode}: {' '.join(args)}\n--- stdout\n{proc.stdout[-3000:]}"
            f"\n--- stderr\n{proc.stderr[-3000:]}"
        )
    return proc


@pytest.fixture
def cuda_helpers():
    """``run_python`` and ``subprocess_env`` (several conftest modules exist: no import by name)."""
    from types import SimpleNamespace

    return SimpleNamespace(run_python=run_python, subprocess_env=subprocess_env, root=ROOT)


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory):
    """``train.npz`` / ``test.npz``: 10 classes x 30 / 10 images of 16x16x3 (colour
    templates plus noise, so a few epochs learn something)."""
    root = tmp_path_factory.mktemp("cuda_npz")
    rng = np.random.default_rng(7)
    templates = rng.integers(30, 226, size=(10, 1, 1, 3))
    for name, per_class in (("train", 30), ("test", 10)):
        labels = rng.permutation(np.repeat(np.arange(10), per_class))
        x = np.clip(templates[labels] + rng.normal(0, 20, (len(labels), 16, 16, 3)), 0, 255)
        np.savez(root / f"{name}.npz", x=x.astype(np.uint8), y=labels.astype(np.int64))
    return root
