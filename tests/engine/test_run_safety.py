"""Hostile inputs against a run folder (issue 11): every refusal is one line with exit status 2
and leaves the folder byte for byte as it was; the manifest (``run.json``) lists exactly the
files a run wrote; checkpoints carry a SHA-256; data and class names are checked wherever data
meets a model; a full disk ends in one line and ``--resume`` continues exactly.

Each table row is ``(id, command maker, expected fragment)``: the maker prepares the hostile
input in a copy of a finished run and returns the command line.
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from engine_cli import one_error_line, run_cli, train_args

from classbalanced.engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

TIMING = {"train_images_per_second"}


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def tree_hashes(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> SHA-256) and every folder (-> "dir")."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def manifest(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def without_timing(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in TIMING}


def flip_bits(path: Path, offset_fraction: float = 0.6) -> None:
    data = bytearray(path.read_bytes())
    at = int(len(data) * offset_fraction)
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def save_npz(path: Path, x, y, class_names=None) -> Path:
    extra = {} if class_names is None else {"class_names": np.asarray(class_names)}
    np.savez(path, x=x, y=y, **extra)
    return path


@pytest.fixture
def own_data(tiny_npz, tmp_path):
    """A private copy of the tiny train / test files (tests may change or delete them)."""
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(tiny_npz.train, folder / "train.npz")
    shutil.copy(tiny_npz.test, folder / "test.npz")
    return type(tiny_npz)(train=folder / "train.npz", test=folder / "test.npz")


# ---------------------------------------------------------------------------
# 1. the manifest
# ---------------------------------------------------------------------------


def test_the_manifest_lists_exactly_the_files_the_run_wrote(tiny_run):
    listed = manifest(tiny_run.out)["files"]
    on_disk = {str(p.relative_to(tiny_run.out)) for p in tiny_run.out.rglob("*") if p.is_file()} - {
        "run.json"
    }
    assert set(listed) == on_disk
    checkpoints = sorted(n for n in listed if n.startswith("checkpoints/"))
    assert len(checkpoints) == 2  # keep_checkpoints
    for name in checkpoints:  # each with the SHA-256 of its bytes
        assert listed[name] == hashlib.sha256((tiny_run.out / name).read_bytes()).hexdigest()


def test_overwrite_refuses_a_folder_that_is_not_a_run(tiny_npz, tmp_path, capsys):
    out = tmp_path / "p"
    (out / "checkpoints").mkdir(parents=True)
    (out / "config.json").write_text('{"a": 1}')
    (out / "checkpoints" / "best_model.bin").write_text("w")
    before = tree_hashes(out)
    code, _, err = run_cli(capsys, train_args(tiny_npz, out, "--overwrite"))
    assert code == 2
    assert "not a classbalanced run" in one_error_line(err)
    assert tree_hashes(out) == before


def test_overwrite_removes_the_runs_files_and_nothing_else(copied_run, tiny_npz, capsys):
    (copied_run / "checkpoints" / "keep.pt").write_bytes(b"mine")
    (copied_run / "tensorboard" / "notes.txt").write_text("mine")
    old = set(manifest(copied_run)["files"])
    code, _, err = run_cli(capsys, train_args(tiny_npz, copied_run, "--overwrite", epochs=1))
    assert code == 0, err
    assert (copied_run / "checkpoints" / "keep.pt").read_bytes() == b"mine"
    assert (copied_run / "tensorboard" / "notes.txt").read_text() == "mine"
    new = set(manifest(copied_run)["files"])
    on_disk = {str(p.relative_to(copied_run)) for p in copied_run.rglob("*") if p.is_file()}
    assert on_disk == new | {"run.json", "checkpoints/keep.pt", "tensorboard/notes.txt"}
    gone = {n for n in old - new}
    assert gone and not any((copied_run / n).exists() for n in gone)


def test_overwrite_never_follows_a_tampered_manifest_out_of_the_folder(
    copied_run, tiny_npz, tmp_path, capsys
):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    record = manifest(copied_run)
    record["files"]["../victim.txt"] = None
    (copied_run / "run.json").write_text(json.dumps(record))
    before = tree_hashes(copied_run)
    code, _, err = run_cli(capsys, train_args(tiny_npz, copied_run, "--overwrite", epochs=1))
    assert code == 2
    assert "outside the run folder" in one_error_line(err)
    assert victim.read_text() == "precious"
    assert tree_hashes(copied_run) == before


# ---------------------------------------------------------------------------
# 2, 3, 6, 7 and tracebacks: refusals that change nothing (table-driven)
# ---------------------------------------------------------------------------


def _force(*extra):
    def make(run, data, tmp):
        return train_args(data, run, "--resume", "--force", *extra)

    return make


def _train_on_half_the_data(run, data, tmp):
    with np.load(data.train) as f:
        x, y = f["x"], f["y"]
    save_npz(data.train, x[::2], y[::2])  # the same file, rewritten with half the images
    return train_args(data, run, "--resume")


def _five_classes(run, data, tmp):
    with np.load(data.train) as f:
        keep = f["y"] < 5
        small = save_npz(tmp / "five.npz", f["x"][keep], f["y"][keep])
    with np.load(data.test) as f:
        keep = f["y"] < 5
        small_test = save_npz(tmp / "five_test.npz", f["x"][keep], f["y"][keep])
    return train_args(type(data)(train=small, test=small_test), run, "--resume", "--force")


def _corrupt_newest_checkpoint(run, data, tmp):
    flip_bits(sorted((run / "checkpoints").glob("checkpoint-*.pt"))[-1])
    return train_args(data, run, "--resume")


def _reordered_class_names(run, data, tmp):
    with np.load(data.train) as f:
        train = save_npz(tmp / "tr.npz", f["x"], f["y"], [f"c{i}" for i in range(10)])
    with np.load(data.test) as f:
        names = [f"c{i}" for i in (1, 0, *range(2, 10))]
        test = save_npz(tmp / "te.npz", f["x"], f["y"], names)
    return train_args(type(data)(train=train, test=test), tmp / "fresh", epochs=1)


def _evaluate(*extra):
    def make(run, data, tmp):
        return ["evaluate", run, "--device", "cpu", *extra]

    return make


def _evaluate_after_editing_the_model(run, data, tmp):
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(dict(config, model="simple_cnn")))
    return ["evaluate", run, "--device", "cpu"]


def _evaluate_a_foreign_checkpoint(run, data, tmp):
    foreign = run / "checkpoints" / "checkpoint-99999999.pt"
    shutil.copy(sorted((run / "checkpoints").glob("checkpoint-*.pt"))[0], foreign)
    return ["evaluate", foreign, "--device", "cpu"]


def _evaluate_grayscale(run, data, tmp):
    with np.load(data.test) as f:
        gray = save_npz(tmp / "gray.npz", f["x"][..., :1], f["y"])
    return ["evaluate", run, "--device", "cpu", "--test-data", gray]


def _evaluate_renamed_class_folder(run, data, tmp):
    from PIL import Image

    with np.load(data.test) as f:
        x, y = f["x"], f["y"]
    root = tmp / "test_folder"
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        name = "x" if label == 0 else str(label)  # class folder "0" renamed
        (root / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / name / f"{i}.png")
    return ["evaluate", run, "--device", "cpu", "--test-data", root]


def _evaluate_changed_test_data(run, data, tmp):
    with np.load(data.test) as f:
        save_npz(data.test, f["x"][::2], f["y"][::2])
    return ["evaluate", run, "--device", "cpu"]


def _subset_without_counts(run, data, tmp):
    subset = json.loads((run / "subset.json").read_text())
    del subset["counts"]
    (run / "subset.json").write_text(json.dumps(subset))
    return ["evaluate", run, "--device", "cpu"]


def _damage(file: str, *keys: str, evaluate: bool = False):
    """Delete ``keys`` (``a.b``: nested) from a run file, then resume or evaluate."""

    def make(run, data, tmp):
        content = json.loads((run / file).read_text())
        for key in keys:
            *parents, last = key.split(".")
            target = content
            for parent in parents:
                target = target[parent]
            del target[last]
        (run / file).write_text(json.dumps(content))
        if evaluate:
            return ["evaluate", run, "--device", "cpu"]
        return train_args(data, run, "--resume")

    return make


def _files_listed_as_a_list(run, data, tmp):
    content = manifest(run)
    content["files"] = list(content["files"])  # the names without their SHA-256
    (run / "run.json").write_text(json.dumps(content))
    return ["evaluate", run, "--device", "cpu"]


REFUSALS = [
    ("resume-force-other-model", _force("--model", "simple_cnn"), "checkpoint holds resnet8, config asks for simple_cnn"),
    ("resume-force-other-loss", _force("--loss", "ldam"), "does not fit"),
    ("resume-force-other-class-count", _five_classes, "classes"),
    ("resume-changed-training-data", _train_on_half_the_data, "--accept-data-change"),
    ("resume-corrupt-checkpoint", _corrupt_newest_checkpoint, "--fallback-checkpoint"),
    ("train-test-class-order", _reordered_class_names, "class 0 is 'c0' in the training set, 'c1' in the test set"),
    ("evaluate-edited-model", _evaluate_after_editing_the_model, "checkpoint holds resnet8, config asks for simple_cnn"),
    ("evaluate-foreign-checkpoint", _evaluate_a_foreign_checkpoint, "not a checkpoint of the run"),
    ("evaluate-grayscale-test-set", _evaluate_grayscale, "1-channel images"),
    ("evaluate-renamed-class-folder", _evaluate_renamed_class_folder, "class 0 is '0' in the run, '1' in the test set"),
    ("evaluate-changed-test-data", _evaluate_changed_test_data, "--accept-data-change"),
    ("evaluate-subset-without-counts", _subset_without_counts, "lacks the key(s) counts"),
    ("resume-manifest-without-data", _damage("run.json", "data"), "lacks the key(s) data"),
    ("resume-record-without-fingerprint", _damage("run.json", "data.train.fingerprint"), "lacks train.source / train.fingerprint"),
    ("evaluate-manifest-files-not-a-mapping", _files_listed_as_a_list, "expected its files as a mapping"),
    ("evaluate-record-without-class-names", _damage("run.json", "data.class_names", evaluate=True), "lacks class_names"),
    ("evaluate-corrupt-checkpoint", lambda r, d, t: (_corrupt_newest_checkpoint(r, d, t), _evaluate()(r, d, t))[1], "newest valid older checkpoint is"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "fragment"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_a_refused_command_is_one_line_and_changes_nothing(
    tiny_run, own_data, tmp_path, capsys, make, fragment
):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.out, run)
    # the copied run points at the session's data: re-point it at a private copy
    config = json.loads((run / "config.json").read_text())
    config.update(train_data=str(own_data.train), test_data=str(own_data.test))
    (run / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if (run / "run.json").exists():
        record = manifest(run)
        record["data"]["train"]["source"], record["data"]["test"]["source"] = (
            str(own_data.train),
            str(own_data.test),
        )
        (run / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    argv = make(run, own_data, tmp_path)
    before = tree_hashes(run)
    code, out, err = run_cli(capsys, argv)
    assert code == 2, err
    line = one_error_line(err)
    assert fragment in line
    assert "Traceback" not in err and out == ""
    assert tree_hashes(run) == before
    fresh = tmp_path / "fresh"
    assert not fresh.exists() or not any(fresh.iterdir())


# ---------------------------------------------------------------------------
# what the refusals allow when told
# ---------------------------------------------------------------------------


def test_fallback_checkpoint_resumes_from_the_newest_valid_one_exactly(
    copied_run, tiny_run, tiny_npz, capsys
):
    checkpoints = sorted((copied_run / "checkpoints").glob("checkpoint-*.pt"))
    flip_bits(checkpoints[-1])
    code, _, err = run_cli(
        capsys, train_args(tiny_npz, copied_run, "--resume", "--fallback-checkpoint")
    )
    assert code == 0, err
    assert f"from {checkpoints[0].name}" in err
    reference = json.loads((tiny_run.out / "metrics.json").read_text())
    assert without_timing(json.loads((copied_run / "metrics.json").read_text())) == without_timing(
        reference
    )
    # the damaged file was replaced by a new, valid checkpoint of the same step
    listed = manifest(copied_run)["files"]
    for path in sorted((copied_run / "checkpoints").glob("checkpoint-*.pt")):
        load_checkpoint(path, sha256=listed[f"checkpoints/{path.name}"])


def test_changed_data_is_used_when_told(copied_run, own_data, tmp_path, capsys):
    with np.load(own_data.test) as f:
        save_npz(own_data.test, f["x"][::2], f["y"][::2])
    record = manifest(copied_run)
    record["data"]["test"]["source"] = str(own_data.test)
    (copied_run / "run.json").write_text(json.dumps(record))
    code, out, err = run_cli(
        capsys,
        [
            "evaluate",
            copied_run,
            "--device",
            "cpu",
            "--accept-data-change",
            "--output",
            tmp_path / "m.json",
        ],
    )
    assert code == 0, err
    assert json.loads((tmp_path / "m.json").read_text())["num_test_images"] == 50


def test_evaluate_from_another_directory_without_the_training_files(
    own_data, tmp_path, capsys, monkeypatch
):
    run = tmp_path / "runs" / "a"
    code, _, err = run_cli(capsys, train_args(own_data, run, epochs=1))
    assert code == 0, err
    own_data.train.unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, err = run_cli(capsys, ["evaluate", "../runs/a", "--device", "cpu"])
    assert code == 0, err
    saved = json.loads((run / "metrics.json").read_text())
    assert json.loads(out)["accuracy"] == saved["accuracy"]


# ---------------------------------------------------------------------------
# disk full
# ---------------------------------------------------------------------------


def _enospc_on(monkeypatch, name: str, nth: int) -> list[str]:
    """Make the ``nth`` fsync of a temporary file for ``name`` fail with ENOSPC, as a full disk
    does (delayed allocation reports it at fsync or close); returns the files hit."""
    import os

    real_fsync = os.fsync
    seen: list[str] = []

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}") if isinstance(fd, int) else str(fd)
        base = Path(target).name
        if base.startswith(f".{name}") and base.endswith(".tmp"):
            seen.append(base)
            if len(seen) == nth:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return seen


def _assert_every_file_whole(out: Path) -> None:
    """No temporary file left, every JSON file parses, every checkpoint has its manifest's
    checksum."""
    assert not list(out.rglob("*.tmp"))
    listed = manifest(out)["files"]
    for path in out.rglob("*.json"):
        json.loads(path.read_text())
    for path in (out / "checkpoints").glob("checkpoint-*.pt"):
        load_checkpoint(path, sha256=listed[f"checkpoints/{path.name}"])


def _assert_same_metrics(out: Path, reference: Path) -> None:
    """The run's metrics.json equals the reference run's, timings aside."""
    ours, theirs = (json.loads((run / "metrics.json").read_text()) for run in (out, reference))
    assert without_timing(ours) == without_timing(theirs)


@pytest.mark.parametrize(
    "name, extra",
    [("checkpoint-", ()), ("metrics.json", ()), ("checkpoint-", ("--async-checkpoints",))],
    ids=["checkpoint", "metrics", "checkpoint-in-the-background"],
)
def test_a_full_disk_ends_in_one_line_every_file_valid_and_resume_is_exact(
    tiny_run, tiny_npz, tmp_path, capsys, monkeypatch, name, extra
):
    out = tmp_path / "run"
    hits = _enospc_on(monkeypatch, name, nth=2)  # the second evaluation's write
    code, _, err = run_cli(capsys, train_args(tiny_npz, out, *extra))
    monkeypatch.undo()
    assert len(hits) == 2
    assert code == 2
    line = one_error_line(err.splitlines()[-1] + "\n")
    first = sorted((out / "checkpoints").glob("checkpoint-*.pt"))[0]
    assert "No space left on device" in line and f"newest valid checkpoint: {first}" in line
    _assert_every_file_whole(out)
    code, _, err = run_cli(capsys, train_args(tiny_npz, out, "--resume", *extra))
    assert code == 0, err
    _assert_same_metrics(out, tiny_run.out)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A tmpfs mounted at a fresh folder (root only); yields ``(folder, resize)``."""
    import os
    import subprocess

    folder = tmp_path / "small_disk"
    folder.mkdir()

    def mount(size_kib: int, *options: str) -> bool:
        opts = ",".join((*options, f"size={size_kib}k"))
        cmd = ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(folder)]
        return subprocess.run(cmd, capture_output=True).returncode == 0

    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    yield folder, mount
    subprocess.run(["umount", str(folder)], capture_output=True)


def test_a_real_full_tmpfs_ends_in_one_line_and_resume_is_exact(
    tiny_run, tiny_npz, small_tmpfs, capsys
):
    folder, mount = small_tmpfs
    checkpoint = sorted((tiny_run.out / "checkpoints").glob("checkpoint-*.pt"))[0].stat().st_size
    if not mount(int(checkpoint * 1.5) // 1024):  # room for one checkpoint, not for two
        pytest.skip("cannot mount a tmpfs here")
    out = folder / "run"
    code, _, err = run_cli(capsys, train_args(tiny_npz, out))
    assert code == 2
    line = one_error_line(err.splitlines()[-1] + "\n")
    assert "No space left on device" in line and "newest valid checkpoint: " in line
    _assert_every_file_whole(out)
    assert mount(16 * 1024, "remount")  # space freed
    code, _, err = run_cli(capsys, train_args(tiny_npz, out, "--resume"))
    assert code == 0, err
    _assert_same_metrics(out, tiny_run.out)


def test_a_checkpoint_of_other_classes_is_refused_before_its_weights_load(tiny_run):
    from classbalanced.config import TrainConfig
    from classbalanced.engine.state import check_checkpoint_fits

    path = sorted((tiny_run.out / "checkpoints").glob("checkpoint-*.pt"))[-1]
    state = load_checkpoint(path)
    cfg = TrainConfig.from_dict(json.loads((tiny_run.out / "config.json").read_text()))
    names = list(state["class_names"])
    check_checkpoint_fits(state, cfg, names, str(path))  # its own classes: accepted
    swapped = [names[1], names[0], *names[2:]]
    with pytest.raises(ValueError, match="class 0 is '0' in the checkpoint .*, '1' in the data"):
        check_checkpoint_fits(state, cfg, swapped, str(path))
    with pytest.raises(ValueError, match="expected 10 classes, got 9"):
        check_checkpoint_fits(state, cfg, names[:9], str(path))


def test_a_full_disk_under_tensorboard_is_one_line_without_a_thread_traceback(
    tmp_path, monkeypatch
):
    import threading

    import torch
    from tensorboard.summary.writer.record_writer import RecordWriter

    from classbalanced.engine.metrics import EvalCounts, summarize
    from classbalanced.engine.run_folder import Manifest, RunFolder, RunWriteError

    tracebacks = []  # what an unhandled exception in a thread would print
    monkeypatch.setattr(threading, "excepthook", tracebacks.append)
    folder = RunFolder(tmp_path, Manifest(tmp_path), writer=True, resuming=False)
    folder.open_tensorboard(None)

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(RecordWriter, "write", full)
    counts = EvalCounts.zeros(3)
    counts.update(torch.eye(3), torch.arange(3))
    with pytest.raises(RunWriteError) as info:  # the writer thread's error, on the next write
        folder.log_scalars({"train/epoch": 1.0}, 1)
        folder.log_evaluation(summarize(counts, [100, 10, 1]), 1)
    line = str(info.value)
    assert "No space left on device" in line and "--resume" in line and "\n" not in line
    assert f"cannot write tensorboard in {tmp_path}" in line
    assert tracebacks == []
