"""Nothing a user had on disk is lost: failed runs write nothing, --overwrite only replaces a run."""

import json
import subprocess
import sys

import pytest


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "classbalanced", *args], capture_output=True, text=True, timeout=300
    )


BASE = ["train", "--dataset", "digits", "--epochs", "1", "--model", "simple_cnn", "--no-progress"]


@pytest.mark.slow
def test_bad_settings_write_nothing_and_keep_an_old_run(tmp_path):
    out = tmp_path / "run"
    # a bad model name: refused before the folder gets any file
    bad = _cli(*BASE, "--model", "vgg", "--out", str(out))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "simple_cnn" in bad.stderr
    assert not out.exists() or not any(out.iterdir())
    good = _cli(*BASE, "--out", str(out))
    assert good.returncode == 0, good.stderr
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (out / "notes.txt").write_text("mine")
    # --overwrite with a setting that fails: the old run survives untouched
    failed = _cli(*BASE, "--model", "resnet50", "--out", str(out), "--overwrite")  # 1-channel data
    assert failed.returncode == 2 and "in_channels=3" in failed.stderr
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after.pop(type(next(iter(after)))("notes.txt")) == b"mine"
    assert after == before
    # --overwrite that works replaces the run's files but not the user's
    again = _cli(*BASE, "--out", str(out), "--overwrite", "--seed", "1")
    assert again.returncode == 0, again.stderr
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "config.json").read_text())["seed"] == 1
