"""The folder writer lock (``classbalanced.locking``): held by real processes, refused
with the holder named, stale locks taken over, nothing of it left behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from classbalanced.locking import (
    LOCK_FILE,
    FolderBusy,
    lock_folder,
    process_start,
    read_lock,
    read_record,
    this_machine,
)

MODULE = str(Path(__file__).resolve().parents[1] / "src" / "classbalanced" / "locking.py")


def _holder(folder: Path, command: str = "train") -> subprocess.Popen:
    """Another process that takes the lock of ``folder`` and holds it until killed (the
    module loaded by its path: it imports nothing of the package, so no torch to wait for)."""
    code = textwrap.dedent(
        f"""
        import importlib.util, sys, time
        spec = importlib.util.spec_from_file_location("locking", {MODULE!r})
        locking = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(locking)
        lock = locking.lock_folder({str(folder)!r}, {command!r})
        print("held", flush=True)
        time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _dead_pid() -> tuple[int, str | None]:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    start = process_start(proc.pid)
    proc.wait()
    return proc.pid, start


def _write_record(folder: Path, **fields) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"command": "train", "pid": 1, "started": time.time(), "token": "x", **fields}
    path = folder / LOCK_FILE
    path.write_text(json.dumps(record))
    return path


def test_a_live_holder_in_another_process_is_refused_by_name(tmp_path):
    folder = tmp_path / "runs" / "x"
    proc = _holder(folder, "train --resume")
    try:
        with pytest.raises(FolderBusy) as caught:
            lock_folder(folder, "train")
        message = str(caught.value)
        assert message.startswith(f"{folder} is being written by train --resume (pid {proc.pid} ")
        assert f"on {socket.gethostname()}, since " in message
        assert message.endswith("; wait for it or pick another --out")
        assert "\n" not in message
    finally:
        proc.kill()
        proc.wait()
    # killed without cleaning up: the OS lock went with it, the record names a dead process
    notes = []
    with lock_folder(folder, "train", log=notes.append):
        assert read_lock(folder)["pid"] == os.getpid()
    assert len(notes) == 1 and f"pid {proc.pid}" in notes[0] and "process is gone" in notes[0]
    assert not (folder / LOCK_FILE).exists()


def test_release_removes_the_file_and_a_folder_made_only_for_the_lock(tmp_path):
    made = tmp_path / "a" / "new"
    with lock_folder(made, "train"):
        assert (made / LOCK_FILE).is_file()
    assert not made.exists() and (tmp_path / "a").is_dir()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "mine.txt").write_text("mine")
    with lock_folder(kept, "train"):
        pass
    assert sorted(p.name for p in kept.iterdir()) == ["mine.txt"]
    written = tmp_path / "written"
    with lock_folder(written, "train"):
        (written / "run.json").write_text("{}")
    assert sorted(p.name for p in written.iterdir()) == ["run.json"]


def test_a_second_lock_in_the_same_process_is_refused(tmp_path):
    with lock_folder(tmp_path, "sweep"), pytest.raises(FolderBusy, match="pid"):
        lock_folder(tmp_path, "report", flag="--output")


def test_a_record_of_a_dead_process_of_this_machine_is_taken_over(tmp_path):
    pid, start = _dead_pid()
    _write_record(tmp_path, pid=pid, pid_start=start, **this_machine())
    notes = []
    with lock_folder(tmp_path, "decouple", log=notes.append):
        assert read_lock(tmp_path)["command"] == "decouple"
    assert "took over the stale lock" in notes[0] and f"pid {pid}" in notes[0]


def test_another_hosts_lock_holds_while_its_heartbeat_is_fresh(tmp_path):
    path = _write_record(tmp_path, host="host-a", boot="b", pidns=1, pid=4123)
    with pytest.raises(FolderBusy, match=r"by train \(pid 4123 on host-a, since \d\d:\d\d\)"):
        lock_folder(tmp_path, "train", stale_after=60)
    old = time.time() - 61
    os.utime(path, (old, old))
    notes = []
    with lock_folder(tmp_path, "train", stale_after=60, log=notes.append):
        pass
    assert "heartbeat stopped" in notes[0] and "host-a" in notes[0]


def test_the_holder_keeps_its_heartbeat_fresh(tmp_path):
    with lock_folder(tmp_path, "train", stale_after=0.4):
        path = tmp_path / LOCK_FILE
        old = time.time() - 100
        os.utime(path, (old, old))
        time.sleep(0.35)
        assert time.time() - path.stat().st_mtime < 0.3


def test_a_damaged_lock_file_without_a_holder_is_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_bytes(b"\xff\xfe not json")
    with lock_folder(tmp_path, "train"):
        assert read_lock(tmp_path)["pid"] == os.getpid()


def test_wait_gets_the_lock_once_the_holder_lets_go(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(FolderBusy):
            lock_folder(tmp_path, "report", wait=0.3)
        subprocess.Popen(["sh", "-c", f"sleep 0.5; kill {proc.pid}"])
        tick = time.monotonic()
        with lock_folder(tmp_path, "report", wait=30):
            assert time.monotonic() - tick < 20
    finally:
        proc.kill()
        proc.wait()


def test_a_path_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "f").write_text("mine")
    with pytest.raises(ValueError, match="--out .*f exists and is not a folder"):
        lock_folder(tmp_path / "f", "train")
    assert (tmp_path / "f").read_text() == "mine"


def test_read_record_of_a_lock_and_of_a_claim(tmp_path):
    path = tmp_path / "holder"
    assert read_record(path) is None  # gone
    path.write_text("  \n")
    mtime = path.stat().st_mtime
    assert read_record(path) is None  # a released lock
    assert read_record(path, blank_is_released=False) == {"heartbeat": mtime}  # a claim
    path.write_text(json.dumps({"pid": 7, "token": "t"}))
    mtime = path.stat().st_mtime
    assert read_record(path) == {"pid": 7, "token": "t", "heartbeat": mtime}
    path.write_text("[1, 2]")  # JSON, but not an object
    assert read_record(path) == {"heartbeat": path.stat().st_mtime}
    path.write_bytes(b"\xff\xfe {}")
    assert read_record(path) == {"damaged": True, "heartbeat": path.stat().st_mtime}
