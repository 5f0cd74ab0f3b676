"""One writer per run folder, with real processes: a second trainer, a trainer with
``--overwrite`` and a second decouple into a folder being written are refused by name;
the writer's folder stays whole (issue #25)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from engine_cli import train_args

from classbalanced import cli
from classbalanced.engine.run_folder import Manifest
from classbalanced.locking import LOCK_FILE, read_lock

pytestmark = pytest.mark.slow
SRC = str(Path(__file__).resolve().parents[2] / "src")


#: a CLI process that imports everything first, then runs when it reads a line (its
#: start-up overlaps the writer's, and it still begins once the writer holds the lock)
_GATED = "import sys; from classbalanced import cli; sys.stdin.readline(); sys.exit(cli.main(sys.argv[1:]))"


def _start(*args: str, gated: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    head = ["-c", _GATED] if gated else ["-m", "classbalanced"]
    return subprocess.Popen(
        [sys.executable, *head, *map(str, args)],
        stdin=subprocess.PIPE if gated else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _go(*procs: subprocess.Popen) -> None:
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()


def _wait_for_lock(folder: Path, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    """Until ``proc`` holds the lock of ``folder`` (fails if it ends first)."""
    deadline = time.monotonic() + timeout
    while (read_lock(folder) or {}).get("pid") != proc.pid:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"no lock of pid {proc.pid} on {folder}"
        time.sleep(0.05)


def _wait_for_checkpoint(folder: Path, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(n.startswith("checkpoints/") for n in _listed(folder)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"no checkpoint in {folder}"
        time.sleep(0.05)


def _listed(folder: Path) -> list[str]:
    try:
        return list((Manifest.read(folder) or Manifest(folder)).files)
    except ValueError:  # being written
        return []


def _refused(proc: subprocess.Popen, holder: str, pid: int) -> None:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"is being written by {holder} (pid {pid} on " in lines[0], lines[0]
    assert "wait for it or pick another --out" in lines[0]


def _interrupt(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    return err


def test_a_second_trainer_and_an_overwrite_are_refused_while_a_run_is_written(tiny_npz, tmp_path):
    out = tmp_path / "run"
    writer = _start(*train_args(tiny_npz, out, epochs=10_000))
    second = _start(*train_args(tiny_npz, out, "--seed", "1"), gated=True)
    overwrite = _start(*train_args(tiny_npz, out, "--overwrite"), gated=True)
    try:
        _wait_for_lock(out, writer)
        _go(second, overwrite)
        _refused(second, "train", writer.pid)
        _refused(overwrite, "train", writer.pid)
        assert writer.poll() is None  # untouched, still training
        _wait_for_checkpoint(out, writer)  # training: SIGINT saves and stops it
    finally:
        err = _interrupt(writer) if writer.poll() is None else writer.communicate()[1]
    assert "interrupted" in err
    # the writer's run alone: every listed checkpoint on disk, one event file, its config
    assert not (out / LOCK_FILE).exists()
    manifest = Manifest.read(out)
    listed = {name for name in manifest.files if name.startswith("checkpoints/")}
    on_disk = {f"checkpoints/{p.name}" for p in (out / "checkpoints").iterdir()}
    assert listed == on_disk and listed
    assert len(list((out / "tensorboard").iterdir())) == 1
    assert '"seed": 0' in (out / "config.json").read_text()


def test_a_second_decouple_into_one_out_is_refused(tiny_run, tmp_path):
    out = tmp_path / "stage2"
    common = ["--device", "cpu", "--out", out]
    writer = _start("decouple", tiny_run.out, "--method", "crt", "--epochs", "100000", *common)
    second = _start("decouple", tiny_run.out, "--method", "lws", *common, gated=True)
    try:
        _wait_for_lock(out, writer)
        _go(second)
        _refused(second, "decouple --method crt", writer.pid)
        assert writer.poll() is None
    finally:
        _interrupt(writer) if writer.poll() is None else writer.communicate()
    assert not out.exists()  # made for the lock alone, nothing written: removed with it


def test_reading_a_run_being_written_works_and_writing_into_it_is_refused(
    tiny_run, tmp_path, capsys
):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.out, run)
    holder = _start_holder(run)
    try:
        assert cli.main(["evaluate", str(run), "--device", "cpu"]) == 0  # reads: no lock
        assert '"accuracy"' in capsys.readouterr().out
        output = run / "eval.json"
        assert cli.main(["evaluate", str(run), "--output", str(output), "--device", "cpu"]) == 2
        line = capsys.readouterr().err.strip()
        assert f"is being written by train (pid {holder.pid} on " in line
        assert line.endswith("wait for it or pick another --output") and not output.exists()
    finally:
        holder.kill()
        holder.wait()


def _start_holder(folder: Path) -> subprocess.Popen:
    """A process holding ``folder``'s lock as a trainer would (``locking`` loaded by path:
    it imports nothing of the package)."""
    module = Path(SRC) / "classbalanced" / "locking.py"
    code = (
        "import importlib.util, time\n"
        f"spec = importlib.util.spec_from_file_location('locking', {str(module)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"lock = m.lock_folder({str(folder)!r}, 'train'); print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc
