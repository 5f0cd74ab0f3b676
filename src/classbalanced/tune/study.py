"""The Optuna study of a tune folder: storage, sampler, pruner, the folder's record, its lock.

The study lives in ``DIR/study.journal`` (Optuna's journal-file storage: an
append-only log that several processes share), so re-running ``tune`` resumes it
and two ``tune`` processes on one folder draw their trials from one study.
``DIR/tune.json`` records what the study searches (the base config's keys, the
search space, the metric): a folder of another search is refused unless
``--extend``. The folder's writer lock (:func:`classbalanced.locking.lock_folder`, the
one every shared folder takes while rewriting its files) makes *count the trials, then
ask for one and claim it* one step, so that a study never exceeds its ``--trials`` and
no trial is trained by two processes; it also covers writing ``tune.json``,
``trials.csv`` and ``best.json``.

This module is the one that imports Optuna (``pip install 'classbalanced[tune]'``).
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..files import atomic_write_json
from ..locking import LOCK_FILE, lock_folder

__all__ = [
    "PRUNERS",
    "STUDY_NAME",
    "check_folder",
    "folder_lock",
    "make_pruner",
    "open_study",
    "optuna_module",
    "reseed",
]

STUDY_NAME = "tune"
PRUNERS = ("median", "asha", "none")
#: the keys of tune.json that must match for a re-run to continue the study
_SEARCH_KEYS = ("base", "search", "metric")


def optuna_module():
    """Optuna, or an ImportError of one line naming the extra to install."""
    try:
        import optuna  # optional: the tune extra
    except ImportError:
        raise ImportError(
            "classbalanced tune needs Optuna: pip install 'classbalanced[tune]'"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def make_pruner(name: str, epochs: int):
    """``median`` (a trial below the median of the earlier trials at the same epoch stops;
    after 2 complete trials, from epoch ``epochs // 3 + 1`` on: the first evaluations of a
    sigmoid or focal loss lag a softmax's), ``asha`` (successive halving, its first rung at
    ``epochs // 3``) or ``none``."""
    optuna = optuna_module()
    warmup = max(1, epochs // 3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=warmup)
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=warmup, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"--pruner must be one of {', '.join(PRUNERS)}, got {name!r}")


def reseed(study, seed: int, number: int, startup: int) -> None:
    """A TPE sampler seeded from ``seed`` and the number of the trial about to be asked: the
    same trials ask the same values whichever process asks them (and two processes on one
    folder do not repeat each other's random start-up values)."""
    optuna = optuna_module()
    study.sampler = optuna.samplers.TPESampler(
        seed=(seed * 1_000_003 + number) % 2**32, n_startup_trials=startup
    )


def open_study(out: Path, direction: str, pruner: str, epochs: int):
    """The study of ``out`` (created on the first call); ``epochs``: a trial's."""
    optuna = optuna_module()
    from optuna.storages.journal import JournalFileBackend  # optional: the tune extra

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(out / "study.journal")))
    return optuna.create_study(
        study_name=STUDY_NAME,
        storage=storage,
        direction=direction,
        pruner=make_pruner(pruner, epochs),
        load_if_exists=True,
    )


def check_folder(out: Path, record: dict[str, Any], *, extend: bool) -> None:
    """Write ``tune.json`` for a new folder; refuse one of another search unless ``extend``
    (which records the new search)."""
    path = out / "tune.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"{path} is damaged ({exc}): expected a tune folder's record"
            ) from None
        changed = [k for k in _SEARCH_KEYS if old.get(k) != record.get(k)]
        if changed and not extend:
            detail = _first_difference(old, record, changed[0])
            what = {"base": "base config", "search": "search space"}.get(changed[0], changed[0])
            raise ValueError(
                f"{out} holds a study of another {what} ({detail}): pass --extend to add "
                "trials with this one, or choose another --out"
            )
        if not changed:
            return
    elif out.exists() and any(p.name not in _LOCKS for p in out.iterdir()):
        if not (out / "study.journal").exists():
            raise ValueError(f"{out} is not empty and holds no tune study: expected a new folder")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record)


def _first_difference(old: dict, new: dict, key: str) -> str:
    a, b = old.get(key), new.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return f"{k}: {a.get(k)!r} then, {b.get(k)!r} now"
    return f"{a!r} then, {b!r} now"


#: lock files a folder may hold before its study: the project's, and the ``.tune.lock`` that
#: tune took before it used :mod:`classbalanced.locking` (a first tune that stopped early)
_LOCKS = (LOCK_FILE, ".tune.lock")

#: orders the threads of one process (``--jobs``) without the lock's polling
_THREADS = threading.Lock()


@contextlib.contextmanager
def folder_lock(out: Path, log: Callable[[str], Any] | None = None):
    """Hold the writer lock of the tune folder ``out`` (one process at a time counts, asks
    and claims, or rewrites the folder's files), waited for as long as its holder lives (a
    refit may hold it for a whole training run); inside this process, :data:`_THREADS`
    first (one thread at a time). ``log`` gets the note of a dead holder's lock taken over."""
    with _THREADS, lock_folder(out, "tune", wait=math.inf, log=log):
        yield
