"""The engine tests' command-line helpers (imported by name, like ``reproduce_helpers``)."""

from __future__ import annotations

import contextlib
import io
import subprocess
from pathlib import Path

from classbalanced import cli


def train_args(data, out: Path, *extra: str, epochs: int = 4) -> list[str]:
    """The CLI spelling of conftest's ``tiny_config`` (the same resolved config)."""
    return [
        "train",
        "--dataset", "npz",
        "--train-data", str(data.train),
        "--test-data", str(data.test),
        "--imbalance-factor", "10",
        "--model", "resnet8",
        "--epochs", str(epochs),
        "--batch-size", "32",
        "--warmup-epochs", str(min(2, epochs - 1)),
        "--eval-every", "2",
        "--eval-batch-size", "40",
        "--device", "cpu",
        "--no-progress",
        "--seed", "0",
        "--out", str(out),
        *extra,
    ]  # fmt: skip


def digits_args(out: Path, *extra: str, **settings: object) -> list[str]:
    """``-m classbalanced train`` on long-tailed digits (IF 10, simple_cnn, pad 1, evaluated
    every epoch, CPU, no progress) as a subprocess's arguments: ``settings`` as ``--key
    value`` (``batch_size`` -> ``--batch-size``), then ``extra``."""
    args = ["-m", "classbalanced", "train", "--dataset", "digits", "--imbalance-factor", "10"]
    args += ["--model", "simple_cnn", "--pad", "1", "--eval-every", "1"]
    for key, value in settings.items():
        args += ["--" + key.replace("_", "-"), str(value)]
    return [*args, "--device", "cpu", "--no-progress", "--out", str(out), *extra]


def run_cli(capsys, argv) -> tuple[int, str, str]:
    """``cli.main(argv)``: its exit status, stdout and stderr."""
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_result(*args) -> subprocess.CompletedProcess:
    """``classbalanced ARGS`` run in this process (seconds of start-up saved per call) and
    returned like ``subprocess.run(..., capture_output=True, text=True)``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in args])
    return subprocess.CompletedProcess(
        ["classbalanced", *args], code, out.getvalue(), err.getvalue()
    )


def one_error_line(err: str) -> str:
    """The one ``classbalanced: error:`` line of ``err`` (fails on anything more)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("classbalanced: error:"), err
    assert "Traceback" not in err
    return lines[0]
