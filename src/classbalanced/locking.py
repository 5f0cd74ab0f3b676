"""One writer per folder: an exclusive lock on a run folder (or a shared folder's files).

A writer holds ``FOLDER/.classbalanced.lock``: an OS lock (``fcntl.flock``, served by
local file systems and NFS v4) on that file, which also records the holder's
``command``, ``host``, ``pid`` (with its start time, the machine's ``boot`` id and
process namespace ``pidns``), ``started`` time and a random ``token``. The file's
modification time is the holder's **heartbeat**, refreshed every ``stale_after / 4``
seconds by a thread, as the sweep claims of :mod:`classbalanced.launch.claims` are
(read with :func:`read_record` and judged with :func:`holder_alive`, both written
here once).

Rules (:func:`lock_folder`):

* the OS lock is held by another process: refused with one line naming the holder
  (``runs/x is being written by train (pid 4123 on host-a, since 10:02); wait for it
  or pick another --out``), or with ``wait`` seconds, waited for first;
* we get the OS lock but the file names a holder that lives (a fresh heartbeat of a
  process on another machine, whose file system may not share OS locks; a running
  process of this machine): refused the same way;
* the file names a holder that is gone (its process on this machine ended, or its
  heartbeat is older than ``stale_after`` seconds): the lock is taken over, with a note;
* where the file system refuses OS locks, the record alone decides.

The lock file is not part of a run: no manifest lists it, ``--overwrite`` leaves it
alone, and :meth:`FolderLock.release` removes it (and the folder, where the lock
created it and nothing else was written). Reading a folder takes no lock.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp()) / "run"
>>> with lock_folder(folder, "train") as held:
...     read_lock(folder)["command"], folder.is_dir()
('train', True)
>>> folder.exists()  # created for the lock, nothing written: removed with it
False
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:  # POSIX: the OS lock; elsewhere the lock file's record alone decides
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_FILE",
    "STALE_AFTER",
    "FolderBusy",
    "FolderLock",
    "lock_folder",
    "read_lock",
    "read_record",
    "describe_holder",
    "holder_alive",
    "process_start",
    "this_machine",
]

#: the lock file's name inside the locked folder
LOCK_FILE = ".classbalanced.lock"
#: seconds without a heartbeat after which a holder on another machine is judged dead
STALE_AFTER = 120.0
#: errors of a file system that serves no OS locks (the record alone decides there)
_NO_OS_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class FolderBusy(ValueError):
    """Another live process writes the folder (the message names it, in one line)."""


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks after boot; Linux), None if none runs
    (a zombie, ended but not yet reaped, runs no more)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else None


def this_machine() -> dict[str, Any]:
    """What tells this machine's processes apart: host, boot and process namespace."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:  # not Linux: judged by the heartbeat alone
        return {}
    return {"host": socket.gethostname(), "boot": boot, "pidns": pidns}


def holder_alive(record: dict[str, Any], stale_after: float) -> bool:
    """Whether the holder of a record (``heartbeat``: its file's mtime) lives: a fresh
    heartbeat, and (where it ran on this machine) its process still running."""
    if time.time() - float(record["heartbeat"]) >= stale_after:
        return False
    here = this_machine()
    if not here or any(record.get(key) != value for key, value in here.items()):
        return True  # another machine's process: its heartbeat tells
    pid = record.get("pid")
    return not isinstance(pid, int) or process_start(pid) == record.get("pid_start")


def read_record(path: Path, *, blank_is_released: bool = True) -> dict[str, Any] | None:
    """A holder's record file (a folder's lock, a sweep's run claim): its JSON object plus
    ``heartbeat``, the file's mtime.

    None when the file is gone, or holds only white space where ``blank_is_released`` (a
    lock released, or being written this instant); otherwise text that is not a JSON
    object (a file being written, or damaged) reads as ``{}`` + heartbeat, and bytes that
    are not UTF-8 (never a record: records are ASCII JSON) as ``{"damaged": True}`` +
    heartbeat.
    """
    try:
        mtime = path.stat().st_mtime
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {"damaged": True, "heartbeat": mtime}
    if blank_is_released and not text.strip():
        return None
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    record = record if isinstance(record, dict) else {}
    record["heartbeat"] = mtime
    return record


def read_lock(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The record of the lock on ``folder`` (None: nobody holds it)."""
    return read_record(Path(folder) / LOCK_FILE)


def describe_holder(record: dict[str, Any]) -> str:
    """``train (pid 4123 on host-a, since 10:02)`` (the date too when not today)."""
    started = record.get("started")
    when = "?"
    if isinstance(started, (int, float)):
        moment = time.localtime(started)
        same_day = time.strftime("%Y-%m-%d", moment) == time.strftime("%Y-%m-%d")
        when = time.strftime("%H:%M" if same_day else "%Y-%m-%d %H:%M", moment)
    command = str(record.get("command", "another command"))[:40]
    return f"{command} (pid {record.get('pid', '?')} on {str(record.get('host', '?'))[:60]}, since {when})"


def _try_os_lock(fd: int) -> bool | None:
    """Take the OS lock without waiting: True, False (held), None (not served here)."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in _NO_OS_LOCKS:
            return None
        raise
    return True


class FolderLock:
    """A lock we hold (see the module docstring); :meth:`release` ends it."""

    def __init__(self, folder: Path, fd: int, token: str, created: bool, beat: float) -> None:
        self.folder, self.path, self.token, self.created = (
            folder,
            folder / LOCK_FILE,
            token,
            created,
        )
        self._fd: int | None = fd
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(beat,), daemon=True)
        self._thread.start()

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        """Remove the lock file (while still ours), unlock, and remove the folder when the
        lock created it and it stayed empty. Calling it again does nothing."""
        if self._fd is None:
            return
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(OSError):
            if (read_record(self.path) or {}).get("token") == self.token:
                self.path.unlink()
        os.close(self._fd)  # the OS lock goes with the descriptor
        self._fd = None
        if self.created:
            with contextlib.suppress(OSError):  # not empty: something was written, kept
                self.folder.rmdir()

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _record(command: str, token: str) -> dict[str, Any]:
    pid = os.getpid()
    return {
        "command": command,
        "host": socket.gethostname(),
        "pid": pid,
        "pid_start": process_start(pid),
        **this_machine(),
        "started": time.time(),
        "token": token,
    }


def _open_lock_file(path: Path) -> tuple[int, bool | None]:
    """Open the lock file and try its OS lock; the descriptor is of the file at ``path``
    now (not of one a releasing holder just removed)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        got = _try_os_lock(fd)
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same or got is False:
            return fd, got
        os.close(fd)  # locked a removed file: open the new one


def _make_folder(folder: Path, flag: str) -> bool:
    """Create ``folder`` (and its parents) for the lock; True when it was not there."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{flag} {folder} exists and is not a folder")
    if folder.is_dir():
        return False
    folder.mkdir(parents=True, exist_ok=True)
    return True


def lock_folder(
    folder: str | os.PathLike,
    command: str,
    *,
    flag: str = "--out",
    wait: float = 0.0,
    stale_after: float = STALE_AFTER,
    log: Callable[[str], Any] | None = None,
) -> FolderLock:
    """Take the exclusive writer lock of ``folder`` (created if absent) for ``command``.

    ``wait``: seconds to wait for a live holder before refusing (0: refuse at once);
    ``flag``: the option that chose the folder, named in the refusal; ``log`` gets the
    note of a stale lock taken over. Raises :class:`FolderBusy` (a ``ValueError``).
    """
    folder = Path(folder)
    created = _make_folder(folder, flag)
    path = folder / LOCK_FILE
    deadline = time.monotonic() + wait
    while True:
        fd, got = _open_lock_file(path)
        record = read_record(path)
        damaged = record is not None and "token" not in record  # not ours to judge: dead
        live = got is False or (
            record is not None and not (got and damaged) and holder_alive(record, stale_after)
        )
        if not live:
            break
        os.close(fd)
        if time.monotonic() >= deadline:
            if created:
                with contextlib.suppress(OSError):
                    folder.rmdir()
            holder = describe_holder(record) if record else "another process"
            raise FolderBusy(
                f"{folder} is being written by {holder}; wait for it or pick another {flag}"
            )
        time.sleep(0.1)
    if record is not None and log is not None:
        why = (
            "its heartbeat stopped"
            if record.get("host") != socket.gethostname()
            else "its process is gone"
        )
        log(f"note: took over the stale lock of {folder} held by {describe_holder(record)}: {why}")
    token = uuid.uuid4().hex
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(_record(command, token)).encode(), 0)
    os.fsync(fd)
    return FolderLock(folder, fd, token, created, stale_after / 4)
