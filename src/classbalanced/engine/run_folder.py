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
write a no-op); all ranks read. One process writes a folder at a time: every writing
command holds the folder's lock (:func:`lock_run`, :mod:`classbalanced.locking`) from
before its first check to its end; the lock file is no part of the run (never listed,
left alone by ``--overwrite``, removed at exit).
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..config import TrainConfig, config_differences, recorded_value
from ..files import atomic_write_json, file_sha256
from ..locking import LOCK_FILE, FolderLock, lock_folder
from .checkpoint import (
    CorruptCheckpoint,
    checkpoint_path,
    checkpoint_step,
    load_checkpoint,
    stale_checkpoints,
    write_checkpoint,
)
from .run_files import read_run_json  # (re-exported: decouple reads it here)
from .tensorboard_log import TensorBoardLog

__all__ = [
    "MANIFEST",
    "RunFolder",
    "RunWriteError",
    "check_class_names",
    "data_differences",
    "lock_run",
    "lock_if_run",
    "read_run_json",
]

MANIFEST = "run.json"
#: the stage-two settings that ``classbalanced decouple`` writes into its output run folder
DECOUPLE_FILE = "decouple.json"
#: the temporary file of an atomic write of ``target`` (``files.atomic_save``: a
#: ``mkstemp`` name; ``plots``: hex digits): ``.<target>.<random>.tmp``
_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]+\.tmp$")
RUN_FORMAT = "classbalanced-run"
RUN_VERSION = 1


class RunWriteError(OSError):
    """Writing into the run folder failed (e.g. disk full); the message is one line."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.errno = code


def lock_run(
    out: str | Path, command: str, *, writer: bool = True, log=None, flag: str = "--out"
) -> FolderLock | contextlib.nullcontext:
    """The exclusive writer lock of the run folder ``out`` for ``command`` (a context
    manager; a no-op where ``writer`` is False: torchrun's other ranks). Another live
    writer: :class:`~classbalanced.locking.FolderBusy` naming it."""
    if not writer:
        return contextlib.nullcontext()
    return lock_folder(out, command, flag=flag, log=log)


def lock_if_run(
    folder: Path | None, command: str, flag: str
) -> FolderLock | contextlib.nullcontext:
    """The writer lock of ``folder`` when it is a run folder (else nothing to lock)."""
    if folder is not None and (folder / MANIFEST).is_file():
        return lock_run(folder, command, flag=flag)
    return contextlib.nullcontext()


def _run_entries(out: Path) -> list[Path]:
    """What ``out`` holds, its writer's lock file aside."""
    return [p for p in out.iterdir() if p.name != LOCK_FILE]


def written_files(out: Path) -> list[Path]:
    """The files the run in ``out`` wrote: its manifest and every file the manifest lists
    (none for a folder that is not a run)."""
    manifest = Manifest.read(out) if out.is_dir() else None
    if manifest is None:
        return []
    return [out / MANIFEST, *(out / name for name in manifest.files)]


class Manifest:
    """``run.json``: the files a run wrote (name -> SHA-256 or ``None``) and its data record."""

    def __init__(self, folder: Path, content: dict | None = None) -> None:
        self.folder = folder
        self.content = content or {
            "format": RUN_FORMAT,
            "version": RUN_VERSION,
            "data": {},
            "files": {},
        }

    @classmethod
    def read(cls, folder: Path) -> Manifest | None:
        """The manifest in ``folder`` (``None``: there is none); a damaged one is refused."""
        path = folder / MANIFEST
        if not path.is_file():
            return None
        content = read_run_json(path, ("format", "version", "files", "data"))
        if content["format"] != RUN_FORMAT or content["version"] != RUN_VERSION:
            raise ValueError(
                f"{path} is not a classbalanced run manifest (expected format {RUN_FORMAT!r} "
                f"version {RUN_VERSION}, got {content['format']!r} version {content['version']!r})"
            )
        _check_data_record(content["data"], path)
        files = content["files"]
        if not isinstance(files, dict) or not all(
            isinstance(sha, str | None) for sha in files.values()
        ):
            raise ValueError(
                f"{path} is damaged: expected its files as a mapping of name to SHA-256 "
                f"(or null), got {json.dumps(files)[:80]}"
            )
        for name in files:  # a tampered manifest must not reach outside the folder
            parts = Path(name).parts
            if Path(name).is_absolute() or ".." in parts or not parts:
                raise ValueError(f"{path} is damaged: it lists {name!r}, outside the run folder")
        return cls(folder, content)

    @property
    def files(self) -> dict[str, str | None]:
        return self.content["files"]

    def save(self) -> None:
        atomic_write_json(self.folder / MANIFEST, self.content)

    def record(self, name: str, sha256: str | None = None) -> None:
        """Record ``name`` (with its SHA-256); saved at once when that changes the manifest."""
        if self.files.get(name, "absent") != sha256:
            self.files[name] = sha256
            self.save()

    def remove_listed(self) -> None:
        """Delete the listed files, the folders they leave empty and ``run.json``; nothing else."""
        for name in self.files:
            target = self.folder / name
            if target.is_file() or target.is_symlink():
                target.unlink()
        for sub in ("checkpoints", "tensorboard"):
            with contextlib.suppress(OSError):  # absent, or holding a user's file: kept
                (self.folder / sub).rmdir()
        (self.folder / MANIFEST).unlink(missing_ok=True)

    def checkpoints(self) -> list[tuple[Path, str | None]]:
        """The listed checkpoints on disk with their SHA-256, oldest first."""
        found = []
        for name, sha in self.files.items():
            step = checkpoint_step(name) if name.startswith("checkpoints/") else None
            if step is not None and (self.folder / name).is_file():
                found.append((step, self.folder / name, sha))
        return [(path, sha) for _, path, sha in sorted(found)]

    def newest_valid_checkpoint(self, before: Path | None = None) -> Path | None:
        """The newest checkpoint (older than ``before``) whose bytes match its SHA-256."""
        limit = None if before is None else checkpoint_step(before)
        for path, sha in reversed(self.checkpoints()):
            step = checkpoint_step(path)  # never None: listed checkpoints have a step
            if limit is not None and step is not None and step >= limit:
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
            f"{path} is not a checkpoint of the run in {self.folder} (not in its {MANIFEST})"
        )

    def load(self, path: Path | None = None, *, fallback: bool = False, use: str = ""):
        """``(path, state)`` of ``path`` or of the newest checkpoint (``(None, None)``: none).

        A corrupt file is named with the newest valid older checkpoint (and ``use``: how
        to use that one); with ``fallback`` that one is loaded instead.
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
                f"; the newest valid older checkpoint is {older} ({use or '--fallback-checkpoint resumes from it'})"
                if older
                else "; no valid older checkpoint"
            )
            raise CorruptCheckpoint(f"{exc}{hint}") from None


_RECORD_KEYS = ("class_names", "in_channels", "image_shape", "normalization", "train", "test")
#: the splits a data record may hold, each ``{"source", "fingerprint"}``: ``train`` and
#: ``test`` (the evaluated split) always; ``val`` in a decouple output whose tau was chosen on it
_SPLITS = ("train", "val", "test")


def _check_data_record(record: Any, path: Path) -> None:
    """A manifest's data record has every key evaluation and resume read (one-line error)."""
    if not isinstance(record, dict):
        raise ValueError(f"{path} is damaged: expected a data record, got {type(record).__name__}")
    missing = [k for k in _RECORD_KEYS if k not in record]
    for split in _SPLITS:
        part = record.get(split, {})
        fingerprint = part.get("fingerprint") if isinstance(part, dict) else None
        complete = isinstance(fingerprint, dict) and {"images", "sha256"} <= set(fingerprint)
        complete = complete or (split == "test" and fingerprint is None)  # --no-evaluate-test
        if split in record and not (complete and "source" in part):
            missing.append(f"{split}.source / {split}.fingerprint")
    if missing:
        raise ValueError(f"{path} is damaged: its data record lacks {', '.join(missing)}")


def data_differences(old: dict, new: dict) -> list[str]:
    """What changed between two data records: the ``fingerprint`` of each split both hold.

    >>> old = {s: {"fingerprint": {"images": 3, "sha256": "a"}} for s in ("train", "val", "test")}
    >>> data_differences(old, {**old, "val": {"fingerprint": {"images": 2, "sha256": "b"}}})
    ['val data (3 images -> 2 images)']
    """
    changed = [
        f"{split} data ({describe_fingerprint(old[split]['fingerprint'])} -> {describe_fingerprint(new[split]['fingerprint'])})"
        for split in _SPLITS
        if split in old
        and split in new
        and old[split]["fingerprint"] != new[split]["fingerprint"]
        and old[split]["fingerprint"] is not None
        and new[split]["fingerprint"] is not None
    ]
    return changed


def describe_fingerprint(fingerprint: dict) -> str:
    """``N images``, and where they are read from when not the original files."""
    where = fingerprint.get("images_from")  # resized copies (prepare --resize)
    return f"{fingerprint['images']} images" + (f" from {where}" if where else "")


def _check_new_folder(out: Path, overwrite: bool) -> Manifest | None:
    """Checks for a fresh run in ``out``; returns the manifest of the run it replaces."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if not out.is_dir() or not _run_entries(out):
        return None
    manifest = Manifest.read(out)
    if manifest is None:
        what = (
            "a config.json but no run.json manifest" if (out / "config.json").exists() else "no run"
        )
        raise ValueError(
            f"--out {out} is not empty and holds {what}: it is not a classbalanced run; choose another folder"
        )
    if not overwrite and _never_saved(manifest):  # a start that failed: nothing to keep
        return manifest
    if not overwrite:
        raise ValueError(
            f"{out} already holds a run: pass --resume to continue it or --overwrite to replace it"
        )
    return manifest


def _never_saved(manifest: Manifest) -> bool:
    """A run that failed before it saved anything: no checkpoint and no metrics listed."""
    return not any(
        name.startswith("checkpoints/") or name == "metrics.json" for name in manifest.files
    )


def _check_resume_folder(out: Path, cfg: TrainConfig) -> tuple[Manifest, dict]:
    """Checks for ``--resume``; returns the manifest and the run's saved config."""
    if not (out / "config.json").is_file():
        raise ValueError(f"nothing to resume in {out}: no config.json there")
    manifest = Manifest.read(out)
    if manifest is None:
        raise ValueError(
            f"cannot resume {out}: it has no run.json manifest, so it is not a classbalanced run"
        )
    if (out / DECOUPLE_FILE).is_file():
        raise ValueError(
            f"cannot resume {out}: it holds a classifier of `classbalanced decouple` "
            f"({DECOUPLE_FILE}), not a training run; resume its stage-one run, or decouple again"
        )
    old = read_run_json(out / "config.json")
    new = cfg.to_dict()
    differ = config_differences(old, new)
    if differ and not cfg.force:
        values = ", ".join(
            f"{k} (run: {recorded_value(old, k)!r}, now: {recorded_value(new, k)!r})"
            for k in differ
        )
        raise ValueError(
            f"{out} holds a run with a different config (keys: {values}); "
            "resume with the same settings or add --force"
        )
    return manifest, old


def stale_temporaries(out: Path, manifest: Manifest) -> list[Path]:
    """The temporary files an atomic write of the run in ``out`` left (``.<name>.<random>.tmp``
    of ``run.json``, of a listed file or of a checkpoint); a user's other files are not."""
    found = []
    for sub in ("", "checkpoints/"):
        folder = out / sub
        for path in folder.glob(".*.tmp") if folder.is_dir() else ():
            match = _TEMPORARY.match(path.name)
            name = sub + match["target"] if match else None
            if name in (MANIFEST, *manifest.files) or (
                sub and name and checkpoint_step(name) is not None
            ):
                found.append(path)
    return found


@contextlib.contextmanager
def writing(out: Path, manifest: Manifest, name: str) -> Iterator[None]:
    """Turn a failed write of ``name`` in the run ``out`` (disk full, permissions) into one
    line naming the cause and the newest valid checkpoint (:class:`RunWriteError`)."""
    try:
        yield
    except RunWriteError:
        raise
    except OSError as exc:
        newest = manifest.newest_valid_checkpoint()
        reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
        full = exc.errno == errno_codes.ENOSPC
        raise RunWriteError(
            f"cannot write {name} in {out}: {reason}; newest valid checkpoint: "
            f"{newest if newest else 'none'}"
            + ("; free space, then run again with --resume" if full else ""),
            exc.errno,
        ) from None


class RunFolder:
    """The files of one run and every write to them (see the module docstring)."""

    def __init__(self, path: Path, manifest: Manifest, *, writer: bool, resuming: bool) -> None:
        self.path, self.manifest, self.writer, self.resuming = path, manifest, writer, resuming
        self.tensorboard = TensorBoardLog()
        self._replaced: Manifest | None = None  # --overwrite: the manifest of the run replaced
        self._config_changed = False

    @classmethod
    def open(cls, cfg: TrainConfig, *, writer: bool = True) -> RunFolder:
        """Check ``cfg.out`` for the run ``cfg`` asks for; nothing is written or deleted."""
        out = Path(cfg.out)
        if not writer:  # other ranks: the main process checked; read what is there
            return cls(out, Manifest.read(out) or Manifest(out), writer=False, resuming=cfg.resume)
        if cfg.resume:
            manifest, old = _check_resume_folder(out, cfg)
            folder = cls(out, manifest, writer=True, resuming=True)
            folder._config_changed = old != cfg.to_dict()
            return folder
        folder = cls(out, Manifest(out), writer=True, resuming=False)
        folder._replaced = _check_new_folder(out, cfg.overwrite)
        return folder

    @classmethod
    def read(cls, path: str | Path) -> RunFolder:
        """An existing run, for evaluation (read-only)."""
        out = Path(path)
        manifest = Manifest.read(out)
        if manifest is None:
            raise ValueError(f"{out} is not a classbalanced run folder: it has no {MANIFEST}")
        return cls(out, manifest, writer=False, resuming=True)

    @property
    def data(self) -> dict:
        """The run's data record (class names, channels, normalisation, sources, fingerprints)."""
        return self.manifest.content["data"]

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

    def start(self, cfg: TrainConfig, subset: dict, data: dict) -> None:
        """Called once everything has loaded: replace an old run's files (``--overwrite``),
        then write the manifest, ``subset.json`` and ``config.json`` (resume: clean stale
        temporary files and record a ``--force``d config)."""
        if not self.writer:
            return
        with self._writing(MANIFEST):
            self.manifest.content["data"] = data
            if self.resuming:
                for stale in stale_temporaries(self.path, self.manifest):  # left by a kill
                    stale.unlink(missing_ok=True)
                self.manifest.save()
                if self._config_changed:
                    atomic_write_json(self.path / "config.json", cfg.to_dict())
                return
            if self._replaced is not None:
                self._replaced.remove_listed()
            self.path.mkdir(parents=True, exist_ok=True)
            self.manifest.files.update({"subset.json": None, "config.json": None})
            self.manifest.save()  # first: every file below is already listed
            atomic_write_json(self.path / "subset.json", subset)
            atomic_write_json(self.path / "config.json", cfg.to_dict())

    def _writing(self, name: str) -> contextlib.AbstractContextManager[None]:
        return writing(self.path, self.manifest, name)

    def write_json(self, name: str, value: Any) -> None:
        """Write (atomically) and list one JSON file of the run."""
        if self.writer:
            with self._writing(name):
                self.manifest.record(name)
                atomic_write_json(self.path / name, value)

    def save_checkpoint(self, step: int, state: dict[str, Any], keep: int) -> Path | None:
        """Write ``checkpoints/checkpoint-<step>.pt`` with its SHA-256 in the manifest, then
        remove this run's older checkpoints so that ``keep`` remain up to ``step``
        (:func:`~.checkpoint.stale_checkpoints`: never the new one, nor a later one)."""
        if not self.writer:
            return None
        path = checkpoint_path(self.path / "checkpoints", step)
        name = f"checkpoints/{path.name}"
        _check_finite_weights(state.get("model", {}), name, self.path)
        with self._writing(name):
            self.manifest.record(name)  # listed (unverified) before its first byte is written
            self.manifest.record(name, write_checkpoint(path, step, state))
            old = stale_checkpoints([p for p, _ in self.manifest.checkpoints()], step, keep)
            for stale in old:
                stale.unlink(missing_ok=True)
                del self.manifest.files[f"checkpoints/{stale.name}"]
            if old:
                self.manifest.save()
        return path

    def open_tensorboard(self, purge_step: int | None) -> None:
        """Start the TensorBoard event file (listed); events after ``purge_step`` are dropped."""
        if self.writer:
            with self._writing("tensorboard"):
                for new in self.tensorboard.open(self.path / "tensorboard", purge_step):
                    self.manifest.record(f"tensorboard/{new}")

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        """TensorBoard scalars (a failed write, e.g. a full disk: :class:`RunWriteError`)."""
        if self.writer:
            with self._writing("tensorboard"):
                self.tensorboard.scalars(values, step)

    def log_evaluation(self, metrics: dict, epoch: int) -> None:
        """An evaluation's metrics in TensorBoard (see :meth:`TensorBoardLog.evaluation`)."""
        if self.writer:
            with self._writing("tensorboard"):
                self.tensorboard.evaluation(metrics, epoch)

    def close(self) -> None:
        with self._writing("tensorboard"):
            self.tensorboard.close()

    def plots(self, counts, class_names, metrics: dict, history: list[dict]) -> None:
        """The class distribution, per-class accuracy and error curve (up to 200 classes)."""
        if self.writer and len(counts) <= 200:  # bars of thousands of classes are not readable
            with self._writing("plots"):
                _draw_plots(self.path, self.manifest, counts, class_names, metrics, history)

    def newest_valid_checkpoint(self) -> Path | None:
        return self.manifest.newest_valid_checkpoint()

    def load_checkpoint(self, path: Path | None = None, *, fallback: bool = False, use: str = ""):
        """``(path, state)`` of ``path`` or of the newest checkpoint (see :meth:`Manifest.load`)."""
        return self.manifest.load(path, fallback=fallback, use=use)


def _check_finite_weights(weights: dict, name: str, folder: Path) -> None:
    """A network with a NaN or infinite weight is never saved (it would load and predict
    nonsense): a one-line ValueError naming the first such tensor."""
    for key, value in weights.items():
        if torch.is_tensor(value) and value.is_floating_point() and not value.isfinite().all():
            raise ValueError(
                f"refused to write {name} in {folder}: the network's {key} holds NaN or "
                "infinite values"
            )


def _draw_plots(out: Path, manifest: Manifest, counts, class_names, metrics, history) -> None:
    from .. import plots  # plotting

    manifest.record("class_distribution.png")
    plots.plot_class_distribution(out / "class_distribution.png", counts, class_names=class_names)
    if metrics.get("per_class_accuracy"):
        acc = [0.0 if v is None else v for v in metrics["per_class_accuracy"]]
        manifest.record("per_class_accuracy.png")
        plots.plot_per_class_accuracy(
            out / "per_class_accuracy.png", {"test": acc}, counts=counts, class_names=class_names
        )
    if len(history) >= 2 and "error_percent" in history[-1]:  # test metrics (--evaluate-test)
        curve = ([h["epoch"] for h in history], [h["error_percent"] for h in history])
        manifest.record("error_curve.png")
        plots.plot_error_curves(out / "error_curve.png", {"test error": curve})
    _draw_metric_plots(out, manifest, class_names, metrics)


def _draw_metric_plots(out: Path, manifest: Manifest, class_names, metrics: dict) -> None:
    """``confusion_matrix.png`` (up to 100 classes) and ``reliability.png``."""
    from .. import plots  # plotting

    confusion = metrics.get("confusion_matrix")
    if confusion and len(confusion) <= plots.CONFUSION_PLOT_MAX_CLASSES:
        manifest.record("confusion_matrix.png")
        plots.plot_confusion_matrix(
            out / "confusion_matrix.png", confusion, class_names=class_names
        )
    bins = metrics.get("calibration")
    if bins:
        manifest.record("reliability.png")
        plots.plot_reliability(
            out / "reliability.png",
            bins["confidence"],
            bins["accuracy"],
            bins["count"],
            ece=metrics.get("ece"),
        )


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
