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


def _killed_write(target: Path) -> Path:
    """The temporary file an atomic write of ``target`` leaves when its process is killed."""
    from classbalanced.data.safe_io import atomic_save

    names = []

    def write(tmp):
        names.append(Path(tmp))
        raise OSError("killed")

    with contextlib.suppress(OSError):
        atomic_save(target, write)
    names[0].write_bytes(b"partial")
    return names[0]


def test_a_resume_removes_its_own_stale_temporary_files_and_no_user_file(
    copied_run, tiny_run, engine_helpers
):
    from classbalanced.engine.run_folder import RunFolder

    mine = [copied_run / ".notes.tmp", copied_run / "checkpoints" / ".draft.pt.tmp"]
    for path in mine:
        path.write_text("mine")
    names = ("run.json", "metrics.json", "checkpoints/checkpoint-00000099.pt")
    stale = [_killed_write(copied_run / name) for name in names]
    cfg = engine_helpers.replace(tiny_run.cfg.resolved(), resume=True, out=str(copied_run))
    folder = RunFolder.open(cfg)
    folder.start(cfg, {}, folder.data)
    assert [p.read_text() for p in mine] == ["mine", "mine"]
    assert not any(p.exists() for p in stale)


def test_evaluate_names_what_it_expected_for_a_path_that_is_no_run_or_checkpoint_of_one(
    tmp_path, copied_run
):
    from classbalanced.engine.evaluate import evaluate_run

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
