"""The run folder: one object owns every file a run writes, and records each in a manifest.

A run folder holds ``run.json`` (the manifest: the files this run wrote, the
SHA-256 of each checkpoint, and the facts about its data: class names and
order, channels, normalisation, absolute data paths and fingerprints),
``config.json``, ``subset.json``, ``metrics.json``, ``history.json``,
``checkpoints/``, ``tensorboard/`` and plots. Every file is written atomically
and listed in ``run.json`` *before* it is written, so:

* ``--overwrite`` removes exactly the files of the manifest (a user's file in
  ``checkpoints/`` survives) and a folder without ``run.json`` is never taken
  for a run;
* checking a folder writes nothing: :meth:`RunFolder.open` only reads, and
  :meth:`RunFolder.start` is called once model, loss, data and checkpoint have
  all loaded, so a command that fails leaves the folder as it was;
* a write that fails (disk full) ends in one line naming the cause and the
  newest valid checkpoint (:class:`RunWriteError`); every file stays valid.

Only the main process writes (``writer=False`` on the other ranks makes every
write a no-op); all ranks read.
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..config import TrainConfig, config_differences
from ..data.safe_io import atomic_write_json, file_sha256
from .checkpoint import (
    CorruptCheckpoint,
    checkpoint_path,
    checkpoint_step,
    load_checkpoint,
    write_checkpoint,
)

__all__ = [
    "MANIFEST",
    "RunFolder",
    "RunWriteError",
    "check_class_names",
    "data_differences",
    "read_run_json",
]

MANIFEST = "run.json"
_LOGGED_METRICS = (
    "accuracy",
    "error_percent",
    "top5_accuracy",
    "many_shot_accuracy",
    "medium_shot_accuracy",
    "few_shot_accuracy",
)
RUN_FORMAT = "classbalanced-run"
RUN_VERSION = 1


class RunWriteError(OSError):
    """Writing into the run folder failed (e.g. disk full); the message is one line."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.errno = code


def read_run_json(path: Path, keys: tuple[str, ...] = (), kind: type = dict) -> Any:
    """Read a run file; a missing, unreadable or incomplete file is a one-line ValueError."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: is {path.parent} a classbalanced run folder?")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {' '.join(str(exc).split())}") from None
    if not isinstance(value, kind):
        raise ValueError(
            f"{path} is damaged: expected a JSON {kind.__name__}, got {type(value).__name__}"
        )
    missing = [k for k in keys if k not in value]
    if missing:
        raise ValueError(f"{path} is damaged: it lacks the key(s) {', '.join(missing)}")
    return value


def _read_manifest(out: Path) -> dict | None:
    if not (out / MANIFEST).is_file():
        return None
    manifest = read_run_json(out / MANIFEST, ("format", "version", "files", "data"))
    if manifest["format"] != RUN_FORMAT or manifest["version"] != RUN_VERSION:
        raise ValueError(
            f"{out / MANIFEST} is not a classbalanced run manifest (expected format "
            f"{RUN_FORMAT!r} version {RUN_VERSION}, got {manifest['format']!r} version {manifest['version']!r})"
        )
    return manifest


def data_differences(old: dict, new: dict) -> list[str]:
    """What changed between two data records (``fingerprint`` per split, class names)."""
    changed = [
        f"{split} data ({old[split]['fingerprint']['images']} images -> {new[split]['fingerprint']['images']})"
        for split in ("train", "test")
        if split in old and split in new and old[split]["fingerprint"] != new[split]["fingerprint"]
    ]
    return changed


def _check_new_folder(out: Path, overwrite: bool) -> dict | None:
    """Checks for a fresh run in ``out``; returns the manifest of the run it replaces."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return None
    manifest = _read_manifest(out)
    if manifest is None:
        what = (
            "a config.json but no run.json manifest" if (out / "config.json").exists() else "no run"
        )
        raise ValueError(
            f"--out {out} is not empty and holds {what}: it is not a classbalanced run; choose another folder"
        )
    if not overwrite:
        raise ValueError(
            f"{out} already holds a run: pass --resume to continue it or --overwrite to replace it"
        )
    return manifest


def _check_resume_folder(out: Path, cfg: TrainConfig) -> tuple[dict, dict]:
    """Checks for ``--resume``; returns the manifest and the run's saved config."""
    if not (out / "config.json").is_file():
        raise ValueError(f"nothing to resume in {out}: no config.json there")
    manifest = _read_manifest(out)
    if manifest is None:
        raise ValueError(
            f"cannot resume {out}: it has no run.json manifest, so it is not a classbalanced run"
        )
    old = read_run_json(out / "config.json")
    differ = config_differences(old, cfg.to_dict())
    if differ and not cfg.force:
        raise ValueError(
            f"{out} holds a run with a different config (keys: {', '.join(differ)}); "
            "resume with the same settings or add --force"
        )
    return manifest, old


class RunFolder:
    """The files of one run and every write to them (see the module docstring)."""

    def __init__(self, path: Path, manifest: dict, *, writer: bool, resuming: bool) -> None:
        self.path, self.manifest, self.writer, self.resuming = path, manifest, writer, resuming
        self._replaced: dict | None = None  # --overwrite: the manifest of the run replaced
        self._config_changed = False
        self._tensorboard = None

    # ------------------------------------------------------------------ opening (reads only)
    @classmethod
    def open(cls, cfg: TrainConfig, *, writer: bool = True) -> RunFolder:
        """Check ``cfg.out`` for the run ``cfg`` asks for; nothing is written or deleted."""
        out = Path(cfg.out)
        empty = {"format": RUN_FORMAT, "version": RUN_VERSION, "data": {}, "files": {}}
        if not writer:  # other ranks: the main process checked; read what is there
            return cls(out, _read_manifest(out) or empty, writer=False, resuming=cfg.resume)
        if cfg.resume:
            manifest, old = _check_resume_folder(out, cfg)
            folder = cls(out, manifest, writer=True, resuming=True)
            folder._config_changed = old != cfg.to_dict()
            return folder
        folder = cls(out, empty, writer=True, resuming=False)
        folder._replaced = _check_new_folder(out, cfg.overwrite)
        return folder

    @classmethod
    def read(cls, path: str | Path) -> RunFolder:
        """An existing run, for evaluation (read-only)."""
        out = Path(path)
        manifest = _read_manifest(out)
        if manifest is None:
            raise ValueError(f"{out} is not a classbalanced run folder: it has no {MANIFEST}")
        return cls(out, manifest, writer=False, resuming=True)

    @property
    def data(self) -> dict:
        """The run's data record (class names, channels, normalisation, sources, fingerprints)."""
        return self.manifest["data"]

    def check_data(self, data: dict, *, accept_change: bool) -> None:
        """Refuse to resume on data that is not the run's (class names always; content
        unless ``accept_change``)."""
        old = self.data
        check_class_names(old.get("class_names") or [], data["class_names"], "the run", "the data")
        changed = data_differences(old, data)
        if changed and not accept_change:
            raise ValueError(
                f"the data changed since {self.path} was trained: {', '.join(changed)}; "
                "pass --accept-data-change to continue on the new data"
            )

    # ------------------------------------------------------------------ starting (writes)
    def start(self, cfg: TrainConfig, subset: dict, data: dict) -> None:
        """Called once everything has loaded: replace an old run's files (``--overwrite``),
        then write the manifest, ``subset.json`` and ``config.json`` (resume: clean stale
        temporary files and record a ``--force``d config)."""
        if not self.writer:
            return
        with self._writing("run.json"):
            if self.resuming:
                self._remove_stale_temporaries()
                self.manifest["data"] = data
                self._save_manifest()
                if self._config_changed:
                    atomic_write_json(self.path / "config.json", cfg.to_dict())
                return
            if self._replaced is not None:
                self._remove(self._replaced)
            self.path.mkdir(parents=True, exist_ok=True)
            self.manifest["data"] = data
            self.manifest["files"] = {"subset.json": None, "config.json": None}
            self._save_manifest()  # first: every file below is already listed
            atomic_write_json(self.path / "subset.json", subset)
            atomic_write_json(self.path / "config.json", cfg.to_dict())

    def _remove(self, manifest: dict) -> None:
        """Delete the files a manifest lists (and folders they leave empty); nothing else."""
        for name in manifest["files"]:
            target = self.path / name
            if target.is_file() or target.is_symlink():
                target.unlink()
        for sub in ("checkpoints", "tensorboard"):
            with contextlib.suppress(OSError):  # absent, or holding a user's file: kept
                (self.path / sub).rmdir()
        (self.path / MANIFEST).unlink(missing_ok=True)

    def _remove_stale_temporaries(self) -> None:
        """Temporary files of atomic writes interrupted by a kill (never read)."""
        for folder in (self.path, self.path / "checkpoints"):
            for stale in folder.glob(".*.tmp") if folder.is_dir() else ():
                stale.unlink(missing_ok=True)

    # ------------------------------------------------------------------ writing
    def _save_manifest(self) -> None:
        atomic_write_json(self.path / MANIFEST, self.manifest)

    def _list(self, name: str, sha256: str | None = None) -> None:
        files = self.manifest["files"]
        if name not in files or files[name] != sha256:
            files[name] = sha256
            self._save_manifest()

    @contextlib.contextmanager
    def _writing(self, name: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            if isinstance(exc, RunWriteError):
                raise
            newest = self.newest_valid_checkpoint()
            reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
            hint = (
                "; free space, then run again with --resume"
                if exc.errno == errno_codes.ENOSPC
                else ""
            )
            raise RunWriteError(
                f"cannot write {name} in {self.path}: {reason}; newest valid checkpoint: "
                f"{newest if newest else 'none'}{hint}",
                exc.errno,
            ) from None

    def write_json(self, name: str, value: Any) -> None:
        """Write (atomically) and list one JSON file of the run."""
        if not self.writer:
            return
        with self._writing(name):
            self._list(name)
            atomic_write_json(self.path / name, value)

    def save_checkpoint(self, step: int, state: dict[str, Any], keep: int) -> Path | None:
        """Write ``checkpoints/checkpoint-<step>.pt`` with its SHA-256 in the manifest, then
        remove all but the newest ``keep`` of this run's checkpoints."""
        if not self.writer:
            return None
        path = checkpoint_path(self.path / "checkpoints", step)
        name = f"checkpoints/{path.name}"
        with self._writing(name):
            self._list(name)  # listed (unverified) before its first byte is written
            self._list(name, write_checkpoint(path, step, state))
            old = [p for p, _ in self.checkpoints()][:-keep]
            for stale in old:
                stale.unlink(missing_ok=True)
            for stale in old:
                self.manifest["files"].pop(f"checkpoints/{stale.name}", None)
            if old:
                self._save_manifest()
        return path

    def open_tensorboard(self, purge_step: int | None) -> None:
        """Start the TensorBoard event file (listed); events after ``purge_step`` are dropped."""
        if not self.writer:
            return
        from torch.utils.tensorboard import SummaryWriter

        folder = self.path / "tensorboard"
        with self._writing("tensorboard"):
            before = set(folder.iterdir()) if folder.is_dir() else set()
            self._tensorboard = SummaryWriter(str(folder), purge_step=purge_step)
            for new in sorted(set(folder.iterdir()) - before):
                self._list(f"tensorboard/{new.name}")

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        """TensorBoard scalars ``tag -> value`` at ``step``."""
        if self._tensorboard is not None:
            for tag, value in values.items():
                self._tensorboard.add_scalar(tag, value, step)

    def log_evaluation(self, metrics: dict, epoch: int) -> None:
        """The test metrics of an evaluation (per-class ones for up to 100 classes)."""
        writer = self._tensorboard
        if writer is None:
            return
        for key in _LOGGED_METRICS:
            if metrics.get(key) is not None:
                writer.add_scalar(f"test/{key}", metrics[key], epoch)
        per_class = metrics["per_class_accuracy"]
        if len(per_class) <= 100:
            for i, value in enumerate(per_class):
                if value is not None:
                    writer.add_scalar(f"test_per_class_accuracy/class_{i:03d}", value, epoch)
        values = [v for v in per_class if v is not None]
        if values:
            writer.add_histogram("test/per_class_accuracy", np.asarray(values), epoch)
        writer.flush()

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    def plots(self, counts, class_names, metrics: dict, history: list[dict]) -> None:
        """The class distribution, per-class accuracy and error curve (up to 200 classes)."""
        if not self.writer or len(counts) > 200:  # bars of thousands of classes are not readable
            return
        from .. import plots

        with self._writing("plots"):
            self._list("class_distribution.png")
            plots.plot_class_distribution(
                self.path / "class_distribution.png", counts, class_names=class_names
            )
            if metrics.get("per_class_accuracy"):
                acc = [0.0 if v is None else v for v in metrics["per_class_accuracy"]]
                self._list("per_class_accuracy.png")
                plots.plot_per_class_accuracy(
                    self.path / "per_class_accuracy.png",
                    {"test": acc},
                    counts=counts,
                    class_names=class_names,
                )
            if len(history) >= 2:
                curve = ([h["epoch"] for h in history], [h["error_percent"] for h in history])
                self._list("error_curve.png")
                plots.plot_error_curves(self.path / "error_curve.png", {"test error": curve})

    # ------------------------------------------------------------------ checkpoints (reads)
    def checkpoints(self) -> list[tuple[Path, str | None]]:
        """This run's checkpoints on disk with their recorded SHA-256, oldest first."""
        found = []
        for name, sha in self.manifest["files"].items():
            step = checkpoint_step(name) if name.startswith("checkpoints/") else None
            if step is not None and (self.path / name).is_file():
                found.append((step, self.path / name, sha))
        return [(path, sha) for _, path, sha in sorted(found)]

    def newest_valid_checkpoint(self, before: Path | None = None) -> Path | None:
        """The newest checkpoint (older than ``before``) whose bytes match its SHA-256."""
        for path, sha in reversed(self.checkpoints()):
            if before is not None and checkpoint_step(path) >= checkpoint_step(before):
                continue
            with contextlib.suppress(OSError):
                if sha is not None and file_sha256(path) == sha:
                    return path
        return None

    def checkpoint_sha(self, path: Path) -> str:
        """The recorded SHA-256 of ``path``; a file this run did not write is refused."""
        for listed, sha in self.checkpoints():
            if listed.resolve() == Path(path).resolve() and sha is not None:
                return sha
        raise ValueError(
            f"{path} is not a checkpoint of the run in {self.path} (not in its {MANIFEST})"
        )

    def load_checkpoint(self, path: Path | None = None, *, fallback: bool = False):
        """``(path, state)`` of ``path`` or of the newest checkpoint (``(None, None)``: none).

        A corrupt file is named with the newest valid older checkpoint; with
        ``fallback`` that one is loaded instead.
        """
        listed = [p for p, sha in self.checkpoints() if sha is not None]
        path = path if path is not None else (listed[-1] if listed else None)
        if path is None:
            return None, None
        try:
            return path, load_checkpoint(path, sha256=self.checkpoint_sha(path))
        except CorruptCheckpoint as exc:
            older = self.newest_valid_checkpoint(before=path)
            if fallback and older is not None:
                return older, load_checkpoint(older, sha256=self.checkpoint_sha(older))
            hint = (
                f"; the newest valid older checkpoint is {older} (--fallback-checkpoint resumes from it)"
                if older
                else "; no valid older checkpoint"
            )
            raise CorruptCheckpoint(f"{exc}{hint}") from None


def check_class_names(expected: list, got: list, where: str, what: str) -> None:
    """Refuse ``got`` unless it is ``expected``, same names in the same order (labels are
    positions in this list), naming the first difference.

    >>> check_class_names(["cat", "dog"], ["dog", "cat"], "the run", "the test set")
    Traceback (most recent call last):
    ...
    ValueError: the test set's classes differ from the run's: class 0 is 'cat' in the run, 'dog' in the test set (2 classes each)
    """
    if list(expected) == list(got):
        return
    if len(expected) != len(got):
        raise ValueError(
            f"{what}'s classes differ from {where}'s: expected {len(expected)} classes, got {len(got)}"
        )
    i = next(k for k, (a, b) in enumerate(zip(expected, got, strict=True)) if a != b)
    raise ValueError(
        f"{what}'s classes differ from {where}'s: class {i} is {expected[i]!r} in {where}, "
        f"{got[i]!r} in {what} ({len(got)} classes each)"
    )
