"""Nothing a user had on disk is lost: failed runs write nothing, --overwrite only replaces a run."""

import contextlib
import json
from pathlib import Path

import pytest
from engine_cli import one_error_line, run_cli

BASE = ["train", "--dataset", "digits", "--epochs", "1", "--model", "simple_cnn", "--no-progress"]


def test_bad_settings_write_nothing_and_keep_an_old_run(tmp_path, capsys):
    """(In-process through ``cli.main``; tests/test_cli.py runs the real entry point.)"""
    out = tmp_path / "run"
    # a bad model name: refused before the folder gets any file
    code, _, err = run_cli(capsys, [*BASE, "--model", "vgg", "--out", out])
    assert code == 2 and "simple_cnn" in one_error_line(err)
    assert not out.exists() or not any(out.iterdir())
    code, _, err = run_cli(capsys, [*BASE, "--out", out])
    assert code == 0, err
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (out / "notes.txt").write_text("mine")
    # --overwrite with a setting that fails: the old run survives untouched (1-channel data)
    code, _, err = run_cli(capsys, [*BASE, "--model", "resnet50", "--out", out, "--overwrite"])
    assert code == 2 and "in_channels=3" in one_error_line(err)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after.pop(type(next(iter(after)))("notes.txt")) == b"mine"
    assert after == before
    # --overwrite that works replaces the run's files but not the user's
    code, _, err = run_cli(capsys, [*BASE, "--out", out, "--overwrite", "--seed", "1"])
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "config.json").read_text())["seed"] == 1


def _killed_while_writing(folder: Path, write, monkeypatch) -> list[Path]:
    """The temporary files ``write()`` (atomic writes) leaves in ``folder`` and its
    ``checkpoints/`` when the process is killed before each rename."""
    import os

    before = set(folder.rglob(".*.tmp"))
    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("killed")))
        patch.setattr(os, "unlink", lambda *a, **k: None)  # the kill leaves the file behind
        write()
    return sorted(set(folder.rglob(".*.tmp")) - before)


def test_a_resume_removes_its_own_stale_temporary_files_and_no_user_file(
    copied_run, tiny_run, engine_helpers, monkeypatch
):
    import matplotlib.pyplot as plt

    from classbalanced.engine.checkpoint import write_checkpoint
    from classbalanced.engine.run_folder import RunFolder
    from classbalanced.files import atomic_write_json
    from classbalanced.plots import _write_png

    mine = [copied_run / ".notes.tmp", copied_run / "checkpoints" / ".draft.pt.tmp"]
    for path in mine:
        path.write_text("mine")

    def writes():  # the run's writers, each killed midway
        for name in ("run.json", "metrics.json"):
            with contextlib.suppress(OSError):
                atomic_write_json(copied_run / name, {})
        with contextlib.suppress(OSError):
            write_checkpoint(copied_run / "checkpoints" / "checkpoint-00000099.pt", 99, {})
        with contextlib.suppress(OSError):
            _write_png(plt.figure(), copied_run / "class_distribution.png")
        plt.close("all")

    stale = _killed_while_writing(copied_run, writes, monkeypatch)
    assert len(stale) == 4
    cfg = engine_helpers.replace(tiny_run.cfg.resolved(), resume=True, out=str(copied_run))
    folder = RunFolder.open(cfg)
    folder.start(cfg, {}, folder.data)
    assert [p.read_text() for p in mine] == ["mine", "mine"]
    assert [p for p in stale if p.exists()] == []


def test_evaluate_names_what_it_expected_for_a_path_that_is_no_run_or_checkpoint_of_one(
    tmp_path, copied_run
):
    from classbalanced.engine.evaluate_run import evaluate_run

    checkpoint = next((copied_run / "checkpoints").glob("checkpoint-*.pt"))
    loose = tmp_path / "elsewhere" / "model.pt"  # a checkpoint copied out of its run
    loose.parent.mkdir()
    loose.write_bytes(checkpoint.read_bytes())
    for path in (loose, copied_run / "config.json"):
        with pytest.raises(ValueError, match="^expected a run folder or a checkpoint in its ") as e:
            evaluate_run(path, device="cpu")
        assert str(path) in str(e.value)
    with pytest.raises(FileNotFoundError, match="^no run folder or checkpoint at "):
        evaluate_run(tmp_path / "missing", device="cpu")


def test_a_run_that_failed_before_saving_anything_is_replaced_without_overwrite(tmp_path, capsys):
    """A start that failed after writing the manifest (here: the loss diverges in the first
    epoch, before any checkpoint) blocks no rerun; a run that saved something still needs
    --overwrite (issue #25)."""
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, [*BASE, "--lr", "1e30", "--out", out])
    assert code == 1 and "not finite" in err, err
    listed = json.loads((out / "run.json").read_text())["files"]
    assert not [n for n in listed if n.startswith("checkpoints/") or n == "metrics.json"]
    code, _, err = run_cli(capsys, [*BASE, "--out", out])
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["lr"] != 1e30
    code, _, err = run_cli(capsys, [*BASE, "--out", out])
    assert code == 2 and "already holds a run" in one_error_line(err)
