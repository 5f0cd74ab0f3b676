"""Checkpoints: atomic writes, a SHA-256 of every file, the last K kept, safe loading.

A checkpoint is ``torch.save`` of a dict; :func:`write_checkpoint` returns the
SHA-256 of the bytes it wrote, which the run folder records next to the file
name (``run.json``), and :func:`load_checkpoint` checks it before unpickling
(``weights_only=True``): a file with flipped bits is named, never loaded.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..files import atomic_save, file_sha256

__all__ = [
    "CorruptCheckpoint",
    "checkpoint_path",
    "checkpoint_step",
    "write_checkpoint",
    "save_checkpoint",
    "stale_checkpoints",
    "load_checkpoint",
    "latest_checkpoint",
    "list_checkpoints",
    "cpu_copy",
    "BackgroundWriter",
]

_PATTERN = re.compile(r"^checkpoint-(\d{8,})\.pt$")
FORMAT_VERSION = 1


class CorruptCheckpoint(ValueError):
    """A checkpoint whose bytes differ from those recorded when it was written."""


def checkpoint_path(folder: str | Path, step: int) -> Path:
    """``folder / checkpoint-<step, 8 digits>.pt``."""
    return Path(folder) / f"checkpoint-{step:08d}.pt"


def checkpoint_step(path: str | Path) -> int | None:
    """The step in a checkpoint's file name, ``None`` for any other name.

    >>> checkpoint_step("runs/a/checkpoints/checkpoint-00000120.pt"), checkpoint_step("keep.pt")
    (120, None)
    """
    match = _PATTERN.match(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Checkpoints in ``folder`` sorted by training step (oldest first)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(step, p) for p in folder.iterdir() if (step := checkpoint_step(p)) is not None]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: str | Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def write_checkpoint(path: str | Path, step: int, state: dict[str, Any]) -> str:
    """Write ``state`` (plus ``format_version`` and ``global_step``) to ``path`` atomically;
    return the SHA-256 of the written file. A failure (disk full) leaves the old file."""
    payload = dict(state, format_version=FORMAT_VERSION, global_step=step)
    digest: list[str] = []

    def write(tmp: str) -> None:
        # through a Python file: a full disk is OSError(ENOSPC), not an opaque zip-writer error
        with open(tmp, "wb") as handle:
            try:
                torch.save(payload, handle)
            except RuntimeError as exc:  # the zip writer's clean-up hides the OSError it got
                if isinstance(exc.__context__, OSError):
                    raise exc.__context__ from None
                raise
        digest.append(file_sha256(tmp))

    atomic_save(path, write)
    return digest[0]


def stale_checkpoints(paths: list[Path], step: int, keep: int) -> list[Path]:
    """Which of ``paths`` (sorted by step) go once ``step`` is written: all older ones but
    the newest ``keep - 1``. The new one and any later one (left by a resume from an older
    checkpoint, e.g. past a corrupt newest one) are never among them.

    >>> names = [checkpoint_path("c", s) for s in (10, 20, 30, 40)]
    >>> [p.name for p in stale_checkpoints(names, 30, keep=2)]
    ['checkpoint-00000010.pt']
    """
    older = [p for p in paths if (s := checkpoint_step(p)) is not None and s < step]
    return older[: max(0, len(older) - (keep - 1))]


def save_checkpoint(folder: str | Path, step: int, state: dict[str, Any], *, keep: int = 2) -> Path:
    """Write ``state`` as ``checkpoint-<step>.pt`` atomically, then drop older ones so that
    ``keep`` remain up to ``step`` (:func:`stale_checkpoints`).

    The new file is complete on disk (fsync + rename) before any older one is
    removed, so a crash at any moment leaves a loadable checkpoint.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(folder, step)
    write_checkpoint(path, step, state)
    for old in stale_checkpoints(list_checkpoints(folder), step, keep):
        old.unlink(missing_ok=True)
    return path


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    if "weights only load failed" in text.lower():  # never pass on advice to unpickle it anyway
        return "it holds objects other than tensors and plain data, which are refused (they could run code)"
    return text.splitlines()[0] if text else type(exc).__name__


def load_checkpoint(
    path: str | Path, map_location="cpu", *, sha256: str | None = None
) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``: no code in it can run.

    With ``sha256`` the file's digest is checked first: a mismatch raises
    :class:`CorruptCheckpoint` and nothing is unpickled.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if sha256 is not None and file_sha256(path) != sha256:
        raise CorruptCheckpoint(
            f"checkpoint {path} is corrupt: its SHA-256 differs from the one recorded when it was written"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling errors, truncated zip files, ...
        raise ValueError(f"cannot load checkpoint {path}: {_reason(exc)}") from None
    if not isinstance(state, dict) or "model" not in state or "format_version" not in state:
        raise ValueError(
            f"{path} is not a classbalanced checkpoint (expected format_version {FORMAT_VERSION})"
        )
    if state["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{path} is a checkpoint of another classbalanced version (format_version "
            f"{state['format_version']!r}, expected format_version {FORMAT_VERSION})"
        )
    return state


def cpu_copy(value: Any) -> Any:
    """``value`` (dicts, lists and tuples of tensors and plain data, e.g. a checkpoint dict)
    with every tensor copied to the CPU: a snapshot that later training steps cannot change.
    A ``state_dict``'s type and ``_metadata`` (module versions) are kept, so ``torch.save``
    writes the same bytes for the copy as for the original (on the CPU).

    >>> live = {"w": torch.ones(2), "step": 3}
    >>> snap = cpu_copy(live)
    >>> _ = live["w"].add_(1)
    >>> snap["w"].tolist(), snap["step"]
    ([1.0, 1.0], 3)
    """
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        copy = type(value)((k, cpu_copy(v)) for k, v in value.items())
        if hasattr(value, "_metadata"):
            copy._metadata = value._metadata  # type: ignore[attr-defined]  # value's type has it
        return copy
    if isinstance(value, (list, tuple)):
        return type(value)(cpu_copy(v) for v in value)
    return value


class BackgroundWriter:
    """One write at a time in a background thread (``--async-checkpoints``).

    :meth:`submit` first waits for the write before it, and :meth:`wait` for the one in
    flight; either raises the exception a write raised (``RunWriteError`` for a full
    disk), so a failure is never lost: it surfaces at the next checkpoint or when the run
    waits at its end. The thread is not a daemon: a write in flight completes even when
    the main thread stops.

    >>> writer, done = BackgroundWriter(), []
    >>> writer.submit(lambda: done.append(1)); writer.wait(); done
    [1]
    >>> writer.submit(lambda: 1 / 0); writer.wait()
    Traceback (most recent call last):
    ...
    ZeroDivisionError: division by zero
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, write: Callable[[], Any]) -> None:
        self.wait()

        def target() -> None:
            try:
                write()
            except BaseException as exc:  # kept for the main thread, which raises it
                self._error = exc

        self._thread = threading.Thread(target=target, name="checkpoint-writer")
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error
