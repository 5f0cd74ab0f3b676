"""Run claims on a shared sweep folder: which launcher trains which run, right now.

A claim on run ``NAME`` is a numbered file ``runs/NAME.claim.G`` next to the run
folder, created with an exclusive create (``O_CREAT | O_EXCL``, atomic on local
file systems and on NFS v3+); the highest number ``G`` is the current claim. The
file holds the claimant's ``owner`` (a launcher session, or a Ray task / SLURM
job that a retry or requeue continues), ``host``, ``pid`` (with its start time, the
machine's ``boot`` id and process namespace ``pidns``), ``started`` time, a
random ``token`` and the token of the claim it took over (``prev``); it is never
rewritten. The **heartbeat** is the file's modification time, refreshed by the
holder every few seconds.

Rules (:func:`try_claim`):

* no claim: create number 0, the run is ours;
* a claim of the same ``owner``: the earlier attempt of the same task died (Ray
  retried it on another node, SLURM requeued it): take it over at once;
* a claim whose heartbeat is older than ``stale_after`` seconds, or whose holder ran
  on this machine (same host name, boot and process namespace) and is gone (a
  ``kill -9``, the out-of-memory killer): its holder died without cleaning up: take
  it over;
* otherwise another live launcher trains the run: leave it alone.

A take-over creates number ``G + 1`` exclusively, so of several launchers that
judged claim ``G`` dead exactly one succeeds; it then checks that claim ``G`` is
still the one it judged (else it backs out), and removes the older numbers. A
holder that finds a higher claim naming its token as ``prev`` has been taken
over and must stop (:func:`heartbeat` returns False).

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> mine = try_claim(folder / "run.claim", "launcher-a", stale_after=60)
>>> mine.path.name, read_claim(folder / "run.claim")["owner"]
('run.claim.0', 'launcher-a')
>>> try_claim(folder / "run.claim", "launcher-b", stale_after=60) is None
True
>>> release(mine); read_claim(folder / "run.claim") is None
True
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..locking import holder_alive, read_record
from ..locking import process_start as _process_start
from ..locking import this_machine as _this_machine

__all__ = [
    "Claim",
    "try_claim",
    "heartbeat",
    "release",
    "read_claim",
    "claim_age",
    "claim_alive",
    "check_stale_after",
    "clear_dead_claims",
]

#: seconds without a heartbeat after which a claim is taken over (default)
STALE_AFTER = 120.0


@dataclass(frozen=True)
class Claim:
    """A claim we hold: its file and the token that proves it is ours."""

    path: Path
    token: str
    owner: str


def _numbered(base: Path) -> list[tuple[int, Path]]:
    """The claim files of ``base`` (``NAME.claim``), lowest number first."""
    found = []
    try:
        names = os.listdir(base.parent)
    except FileNotFoundError:
        return []
    prefix = base.name + "."
    for name in names:
        suffix = name[len(prefix) :] if name.startswith(prefix) else ""
        if suffix.isdigit():
            found.append((int(suffix), base.parent / name))
    return sorted(found)


def _read(path: Path) -> dict[str, Any] | None:
    """A claim file's record plus ``heartbeat`` (its mtime); None when it is gone.

    A file being written right now (or damaged) reads as ``{"heartbeat": mtime}``; one
    that is not UTF-8 (never a claim: claims are ASCII JSON) is named in a warning and
    read as ``{"damaged": True, ...}``, a dead holder's (:func:`claim_alive`).
    """
    record = read_record(path, blank_is_released=False)
    if record is not None and record.get("damaged"):
        warnings.warn(f"{path} is damaged (not a UTF-8 claim record): taken as stale", stacklevel=2)
    return record


def read_claim(base: str | os.PathLike) -> dict[str, Any] | None:
    """The current claim on ``base`` (``runs/NAME.claim``): the highest-numbered record."""
    for _, path in reversed(_numbered(Path(base))):
        record = _read(path)
        if record is not None:
            return record
    return None


def claim_age(record: dict[str, Any], now: float | None = None) -> float:
    """Seconds since the claim's last heartbeat."""
    return (time.time() if now is None else now) - float(record["heartbeat"])


def claim_alive(record: dict[str, Any], stale_after: float) -> bool:
    """Whether the claim's holder lives: a fresh heartbeat, and (where it ran on this
    machine) its process still running (:func:`classbalanced.locking.holder_alive`); a
    damaged claim file has no live holder."""
    return not record.get("damaged") and holder_alive(record, stale_after)


def _create(path: Path, record: dict[str, Any]) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(record, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def check_stale_after(stale_after: Any) -> None:
    """A positive number of seconds (NaN would judge every claim dead)."""
    if isinstance(stale_after, bool) or not isinstance(stale_after, (int, float)):
        raise TypeError(f"--stale-after must be a number of seconds, got {stale_after!r}")
    if not 0 < stale_after < math.inf:
        raise ValueError(f"--stale-after must be a positive number of seconds, got {stale_after!r}")


def try_claim(
    base: str | os.PathLike, owner: str, *, stale_after: float = STALE_AFTER
) -> Claim | None:
    """Claim the run of ``base`` (``runs/NAME.claim``) for ``owner``; None when another
    live holder has it (rules above)."""
    check_stale_after(stale_after)
    base = Path(base)
    for _ in range(10):
        numbered = _numbered(base)
        number, prev = 0, None
        if numbered:
            top, top_path = numbered[-1]
            current = _read(top_path)
            if current is None:
                continue  # released meanwhile: look again
            if current.get("owner") != owner and claim_alive(current, stale_after):
                return None
            number, prev = top + 1, (top_path, current.get("token"))
        token = uuid.uuid4().hex
        record = {
            "owner": owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pid_start": _process_start(os.getpid()),
            **_this_machine(),
            "started": time.time(),
            "token": token,
            "prev": prev[1] if prev else None,
        }
        path = base.with_name(f"{base.name}.{number}")
        if not _create(path, record):
            continue  # another launcher took this number first: look again
        if prev is not None and (_read(prev[0]) or {}).get("token") != prev[1]:
            os.unlink(path)  # the claim we judged was released and replaced: back out
            continue
        for _, older in _numbered(base):
            if older != path and int(older.name.rsplit(".", 1)[1]) < number:
                older.unlink(missing_ok=True)
        return Claim(path, token, owner)
    return None


def heartbeat(claim: Claim) -> bool:
    """Refresh the claim's heartbeat; False when it has been taken over (stop at once)."""
    base = claim.path.with_name(claim.path.name.rsplit(".", 1)[0])
    mine = int(claim.path.name.rsplit(".", 1)[1])
    for number, path in _numbered(base):
        if number > mine and (_read(path) or {}).get("prev") == claim.token:
            return False
    try:
        os.utime(claim.path)
    except FileNotFoundError:
        return False
    return True


def release(claim: Claim) -> None:
    """Remove our claim file (a claim that was taken over is no longer ours to remove)."""
    record = _read(claim.path)
    if record is not None and record.get("token") == claim.token:
        claim.path.unlink(missing_ok=True)


def clear_dead_claims(
    base: str | os.PathLike, owner: str, *, stale_after: float = STALE_AFTER
) -> None:
    """Remove the claims on a finished run that ``owner`` left or whose heartbeat stopped
    (a holder that died between finishing the run and releasing its claim)."""
    for _, path in _numbered(Path(base)):
        record = _read(path)
        if record is not None and (
            record.get("owner") == owner or not claim_alive(record, stale_after)
        ):
            path.unlink(missing_ok=True)
