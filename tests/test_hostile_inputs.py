"""Hostile inputs, table-driven: each row is a command, the inputs it is given, the exit
code and a fragment of the one-line message it must end with; and for every row, no
file in the working folder may change (hashes of the whole tree before and after).

Commands run in-process (``cli.main``) in a fresh working folder, so a row costs
milliseconds unless it loads data. Rows that would need a trained run use a folder
that looks like one (the refusals come before any model is built).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classbalanced import cli

# --------------------------------------------------------------------------- input makers


def _npz(path: Path, labels, names=None) -> Path:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (len(labels), 4, 4, 1), dtype=np.uint8)
    extra = {} if names is None else {"class_names": np.array(names)}
    np.savez(path, x=x, y=np.asarray(labels, np.int64), **extra)
    return path


def _pair(tmp: Path) -> None:
    _npz(tmp / "train.npz", np.arange(40) % 4)
    _npz(tmp / "test.npz", np.arange(8) % 4)


def _config(text: str):
    def make(tmp: Path) -> None:
        _pair(tmp)
        (tmp / "c.toml").write_text(
            'dataset = "npz"\ntrain_data = "train.npz"\ntest_data = "test.npz"\n' + text
        )

    return make


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def _bomb_folder(tmp: Path) -> None:
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp / split / c).mkdir(parents=True)
            Image.new("RGB", (4, 4)).save(tmp / split / c / "ok.png")
    (tmp / "train" / "b" / "bomb.png").write_bytes(_png_claiming(20000, 20000))


def _fake_run(tmp: Path, metrics=None, history=None) -> Path:
    run = tmp / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"dataset": "digits"}))
    (run / "subset.json").write_text(json.dumps({"counts": [3, 1]}))
    if metrics is not None:
        (run / "metrics.json").write_text(
            metrics if isinstance(metrics, str) else json.dumps(metrics)
        )
    if history is not None:
        (run / "history.json").write_text(json.dumps(history))
    _fake_manifest(run)
    return run


def _fake_metrics(tmp: Path) -> None:
    (tmp / "run" / "metrics.json").write_text(json.dumps(RUN_METRICS))


def _fake_manifest(run: Path) -> None:
    """A run.json listing the files a run writes (what makes ``run`` one of our runs)."""
    from classbalanced.engine.run_folder import Manifest

    split = {"source": "digits", "fingerprint": {"images": 4, "sha256": "0" * 64}}
    manifest = Manifest(run)
    manifest.content["data"] = {
        "class_names": ["0", "1"],
        "in_channels": 1,
        "image_shape": [8, 8, 1],
        "normalization": {"mean": [0.5], "std": [0.5]},
        "train": split,
        "test": split,
    }
    for name in ("config.json", "subset.json", "metrics.json", "history.json"):
        manifest.files[name] = None
    manifest.files["class_distribution.png"] = None
    manifest.files["checkpoints/checkpoint-1.pt"] = None
    manifest.save()


def _edited_config(**changes):
    """A run folder whose config.json was edited by hand (``None``: the key removed)."""

    def make(tmp: Path) -> None:
        run = _fake_run(tmp)
        config = {"dataset": "digits", "model": "resnet8", "loss": "softmax", **changes}
        config = {k: v for k, v in config.items() if v is not None}
        (run / "config.json").write_text(json.dumps(config))

    return make


@functools.cache
def _trained_run(channels: int) -> Path:
    """A real finished run (simple_cnn, one epoch, 4 classes of 4x4 images with
    ``channels`` channels), trained once per session; rows copy it."""
    root = Path(tempfile.mkdtemp(prefix="hostile-run-"))
    atexit.register(shutil.rmtree, root, True)
    rng = np.random.default_rng(0)
    for name, n in (("train", 40), ("test", 8)):
        x = rng.integers(0, 256, (n, 4, 4, channels), dtype=np.uint8)
        np.savez(root / f"{name}.npz", x=x, y=np.arange(n) % 4)
    argv = [*TRAIN[:-1], str(root / "run"), "--model", "simple_cnn", "--epochs", "1"]
    argv += ["--dataset", "npz", "--train-data", str(root / "train.npz")]
    with contextlib.redirect_stderr(io.StringIO()):  # its progress lines are not the row's
        assert cli.main([*argv, "--test-data", str(root / "test.npz")]) == 0
    return root / "run"


def _run_with(channels: int, *images: tuple[str, object]):
    """Copy a real run of ``channels`` channels into ``tmp/run``; write ``images``
    (relative path -> PIL image or bytes)."""

    def make(tmp: Path) -> None:
        shutil.copytree(_trained_run(channels), tmp / "run")
        for rel, content in images:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                (tmp / rel).write_bytes(content)
            else:
                content.save(tmp / rel)

    return make


@functools.cache
def _resnet_run() -> Path:
    """One finished tiny run (8x8 grayscale .npz, resnet8, 1 epoch), trained once."""
    root = Path(tempfile.mkdtemp(prefix="hostile-run-"))
    atexit.register(shutil.rmtree, root, True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 8)):
        labels = np.arange(n) % 4
        x = rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8)
        np.savez(root / f"{split}.npz", x=x, y=labels.astype(np.int64))
    quiet = io.StringIO()
    with contextlib.redirect_stderr(quiet), contextlib.redirect_stdout(quiet):
        code = cli.main(
        [*TRAIN[:-1], str(root / "run"), "--epochs", "1", "--model", "resnet8", "--dataset",
         "npz", "--train-data", str(root / "train.npz"), "--test-data", str(root / "test.npz"),
         "--batch-size", "20", "--warmup-epochs", "0"]
    )  # fmt: skip
    assert code == 0, quiet.getvalue()
    return root / "run"


def _trained(tmp: Path) -> None:
    shutil.copytree(_resnet_run(), tmp / "run")


def _yaml_bomb(tmp: Path) -> None:
    _pair(tmp)
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 9)]  # fmt: skip
    text = "\n".join(lines).replace("a0: ", "train_data: ", 1) + "\n"
    (tmp / "c.yaml").write_text(text + "test_data: *a8\n")


def _big_sweep(tmp: Path) -> None:
    grid = "\n".join(f"{key} = [{', '.join(str(v) for v in range(10))}]" for key in
                     ("seed", "epochs", "batch_size", "eval_every", "warmup_epochs", "pad",
                      "keep_checkpoints", "eval_batch_size", "num_workers"))  # fmt: skip
    (tmp / "s.toml").write_text(f'[base]\ndataset = "digits"\n[[grid]]\n{grid}\n')


def _truncated_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()[:60]


def _tampered(tmp: Path) -> None:
    _run_with(3, ("imgs/a.png", Image.new("RGB", (4, 4))))(tmp)
    checkpoint = next((tmp / "run" / "checkpoints").glob("*.pt"))
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF
    checkpoint.write_bytes(bytes(data))


def _npz_x(x) -> tuple[str, bytes]:
    buffer = io.BytesIO()
    np.savez(buffer, x=x)
    return ("bad.npz", buffer.getvalue())


OK_PNG = ("imgs/a.png", Image.new("RGB", (4, 4), (10, 200, 30)))

RUN_METRICS = {"train_counts": [3, 1], "per_class_accuracy": [1.0, 0.0], "error_percent": 25.0}
EVALUATE_OUTPUT = {"accuracy": 0.75, "error_percent": 25.0, "checkpoint": "x"}


@dataclass
class Row:
    argv: list[str]
    make: object  # tmp folder -> None: writes the inputs
    code: int
    fragment: str
    outputs: list[str] = field(default_factory=list)  # paths that may appear
    modules: dict = field(default_factory=dict)  # sys.modules entries (None: not installed)


TRAIN = ["train", "--epochs", "2", "--device", "cpu", "--no-progress", "--out", "out"]
NPZ = ["--dataset", "npz", "--train-data", "train.npz", "--test-data", "test.npz"]

ROWS = {
    # writing over an input (issue 11, item 5)
    "make-lt --output is the input": Row(
        ["make-lt", "--dataset", "npz", "--train-data", "train.npz", "--output", "train.npz"],
        _pair,
        2,
        "--output train.npz would overwrite the input train.npz",
    ),
    "make-lt --plot is the test input": Row(
        ["make-lt", *NPZ, "--output", "lt.json", "--plot", "test.npz"],
        _pair,
        2,
        "--plot test.npz would overwrite the input test.npz",
    ),
    "make-lt --output through another spelling": Row(
        [
            "make-lt",
            "--dataset",
            "npz",
            "--train-data",
            "train.npz",
            "--output",
            "./x/../train.npz",
        ],
        lambda tmp: (_pair(tmp), (tmp / "x").mkdir()),
        2,
        "would overwrite the input",
    ),
    "evaluate --output is the run's config": Row(
        ["evaluate", "run", "--output", "run/config.json"],
        _fake_run,
        2,
        "would overwrite the input run/config.json",
    ),
    "evaluate --output inside the run's checkpoints": Row(
        ["evaluate", "run", "--output", "run/checkpoints/checkpoint-1.pt"],
        lambda tmp: (_fake_run(tmp), (tmp / "run/checkpoints/checkpoint-1.pt").write_bytes(b"c")),
        2,
        "would overwrite the input run/checkpoints",
    ),
    "make-lt --output is a folder": Row(
        ["make-lt", "--dataset", "npz", "--train-data", "train.npz", "--output", "lt"],
        lambda tmp: (_pair(tmp), (tmp / "lt").mkdir()),
        2,
        "--output lt is a folder: expected a file path",
    ),
    "make-lt --output under a file": Row(
        ["make-lt", "--dataset", "npz", "--train-data", "train.npz", "--output", "f.txt/a/lt.json"],
        lambda tmp: (_pair(tmp), (tmp / "f.txt").write_text("mine")),
        2,
        "--output f.txt/a/lt.json: f.txt is a file, not a folder",
    ),
    "evaluate --output is a folder": Row(
        ["evaluate", "run", "--output", "somewhere"],
        lambda tmp: (_fake_run(tmp), (tmp / "somewhere").mkdir()),
        2,
        "--output somewhere is a folder: expected a file path",
    ),
    "make-lt --output over a CIFAR archive": Row(
        ["make-lt", "--output", "data/cifar-10-python.tar.gz"],
        lambda tmp: (
            (tmp / "data").mkdir() or (tmp / "data/cifar-10-python.tar.gz").write_bytes(b"a")
        ),
        2,
        "would overwrite the input data/cifar-10-python.tar.gz",
    ),
    # flags never silently ignored
    "train files without --dataset": Row(
        ["train", "--train-data", "train.npz", "--test-data", "test.npz", "--out", "out"],
        _pair,
        2,
        "does not read train_data, test_data (it reads: data_dir, download); for train.npz pass --dataset npz",
    ),
    "make-lt files without --dataset": Row(
        ["make-lt", "--train-data", "train.npz", "--output", "lt.json"],
        _pair,
        2,
        "pass --dataset npz",
    ),
    "image size for digits": Row(
        [*TRAIN, "--dataset", "digits", "--image-size", "32"],
        lambda tmp: None,
        2,
        "digits does not read image_size",
    ),
    "loss option the loss lacks": Row(
        [*TRAIN, *NPZ, "--loss-option", "tau=2"],
        _pair,
        2,
        "loss 'softmax' has no option 'tau'",
    ),
    # every config key against its type, naming key and file (item 9)
    'flip = "false"': Row(
        [*TRAIN, "--config", "c.toml"], _config('flip = "false"\n'), 2, "config key flip in c.toml"
    ),
    "channels_last = 0": Row(
        [*TRAIN, "--config", "c.toml"],
        _config("channels_last = 0\n"),
        2,
        "config key channels_last in c.toml: expected true or false, got 0",
    ),
    "train_data = 5": Row(
        ["train", "--config", "c.toml"],
        lambda tmp: (tmp / "c.toml").write_text('dataset = "npz"\ntrain_data = 5\n'),
        2,
        "config key train_data in c.toml: expected a string (or unset), got 5",
    ),
    "unknown loss in a file": Row(
        ["train", "--config", "c.toml"],
        _config('loss = "nope"\n'),
        2,
        "config key loss in c.toml: unknown loss 'nope'",
    ),
    "model name": Row([*TRAIN, *NPZ, "--model", "nonsense"], _pair, 2, "got 'nonsense'"),
    # schedules that never happen (item 10)
    "drw after the run": Row(
        [*TRAIN, *NPZ, "--reweight-schedule", "drw", "--reweight-epoch", "5"],
        _pair,
        2,
        "would never switch on in a run of 2 epochs",
    ),
    # bounded arguments, data that lies about itself
    "--lr 1e39 (beyond float32)": Row(
        [*TRAIN, *NPZ, "--lr", "1e39"], _pair, 2, "lr must be at most 3.403e+38"
    ),
    "--seed 2**64": Row(
        [*TRAIN, *NPZ, "--seed", str(2**64)], _pair, 2, "seed must be an integer in [0, 4294967295]"
    ),
    "--pad 100000": Row(
        [*TRAIN, *NPZ, "--pad", "100000"], _pair, 2, "pad must be an integer in [0, 128]"
    ),
    "PNG claiming 20000 x 20000": Row(
        [*TRAIN, "--dataset", "folder", "--train-data", "train", "--test-data", "test"],
        _bomb_folder,
        2,
        "bomb.png: Image size (400000000 pixels) exceeds limit",
    ),
    "npz that is not a zip": Row(
        ["make-lt", "--dataset", "npz", "--train-data", "t.npz", "--output", "lt.json"],
        lambda tmp: (tmp / "t.npz").write_text("just text"),
        2,
        "expected a zip archive (written by np.savez), got a file starting with b'just t'",
    ),
    "a class with no images at IF 1": Row(
        ["make-lt", "--dataset", "npz", "--train-data", "t.npz", "--output", "lt.json"]
        + ["--imbalance-factor", "1"],
        lambda tmp: _npz(tmp / "t.npz", [0, 0, 1, 1], names=["a", "b", "c"]),
        2,
        "class 2 has no images in the data",
    ),
    # plot run on folders that are not (whole) runs
    "plot run on an evaluate --output folder": Row(
        ["plot", "run", "--run", "run", "--output", "plots"],
        lambda tmp: _fake_run(tmp, metrics=EVALUATE_OUTPUT),
        2,
        "holds no train_counts list: expected the metrics.json of a training run",
    ),
    "plot run, history missing a key": Row(
        ["plot", "run", "--run", "run", "--output", "plots"],
        lambda tmp: _fake_run(tmp, RUN_METRICS, [{"epoch": 1}, {"epoch": 2}]),
        2,
        "history.json is not a run history",
    ),
    "plot run, metrics not JSON": Row(
        ["plot", "run", "--run", "run", "--output", "plots"],
        lambda tmp: _fake_run(tmp, metrics="{not json"),
        2,
        "metrics.json is not valid JSON",
    ),
    # issue 25: the last unbounded inputs
    "decouple --tau 200 (the classifier overflows)": Row(
        [
            "decouple",
            "run",
            "--method",
            "tau_norm",
            "--tau",
            "200",
            "--out",
            "s2",
            "--device",
            "cpu",
        ],
        _trained,
        2,
        "--tau 200: the classifier's row norms",
    ),
    "decouple --tau 1e300": Row(
        ["decouple", "run", "--method", "tau_norm", "--tau", "1e300", "--out", "s2"],
        _trained,
        2,
        "--tau 1e+300: the classifier's row norms",
    ),
    "decouple --taus 0 1e39": Row(
        ["decouple", "run", "--method", "tau_norm", "--taus", "0", "1e39", "--out", "s2"],
        _trained,
        2,
        "--taus 1e+39: the classifier's row norms",
    ),
    "a 2 MB string in a TOML key is echoed cut": Row(
        ["train", "--config", "c.toml"],
        _config(f'loss = "{"x" * 2_000_000}"\n'),
        2,
        "config key loss in c.toml: unknown loss 'xxxx",
    ),
    "a 2 MB string of the wrong type": Row(
        ["train", "--config", "c.toml"],
        _config(f'flip = "{"x" * 2_000_000}"\n'),
        2,
        "... (2000000 characters)",
    ),
    "a YAML alias bomb in a valid key": Row(
        ["train", "--config", "c.yaml"],
        _yaml_bomb,
        2,
        "YAML alias *a0 refused (aliases can expand without bound)",
    ),
    "config.json eval_batch_size = -5": Row(
        ["evaluate", "run"],
        _edited_config(eval_batch_size=-5),
        2,
        "run/config.json: eval_batch_size must be an integer >= 1, got -5",
    ),
    "config.json eval_batch_size = 0": Row(
        ["evaluate", "run"],
        _edited_config(eval_batch_size=0),
        2,
        "run/config.json: eval_batch_size must be an integer >= 1, got 0",
    ),
    "config.json without model": Row(
        ["evaluate", "run"],
        _edited_config(model=None),
        2,
        "run/config.json is damaged: it lacks the key(s) model",
    ),
    "config.json without dataset and loss (decouple)": Row(
        ["decouple", "run", "--method", "crt", "--out", "s2"],
        lambda tmp: (_edited_config(dataset=None, loss=None)(tmp), _fake_metrics(tmp)),
        2,
        "run/config.json is damaged: it lacks the key(s) dataset, loss",
    ),
    "config.json momentum = 2": Row(
        ["evaluate", "run"],
        _edited_config(momentum=2.0),
        2,
        "run/config.json: momentum must be in [0, 1), got 2.0",
    ),
    "--image-size 1000000": Row(
        [*TRAIN, "--dataset", "folder", "--train-data", "train", "--test-data", "test"]
        + ["--image-size", "1000000"],
        _bomb_folder,
        2,
        "image_size must be an integer in [1, 4096], got 1000000",
    ),
    "--momentum 2": Row([*TRAIN, *NPZ, "--momentum", "2"], _pair, 2, "momentum must be in [0, 1)"),
    "a sweep grid of 1e9 runs": Row(
        ["sweep", "--config", "s.toml", "--dry-run", "--out", "sw"],
        _big_sweep,
        2,
        "its grid has 1e+09 runs, more than --max-runs 10000",
    ),
    "sweep --status with a claim file that is not UTF-8": Row(
        ["sweep", "--status", "sw"],
        lambda tmp: (_sweep_folder(tmp), _damaged_claim(tmp)),
        0,
        "digits-if1-softmax-b0.0-s0.claim.0 is damaged (not a UTF-8 claim record): taken as stale",
    ),
    "plot run into the run folder over its files": Row(
        ["plot", "run", "--run", "run", "--output", "run"],
        lambda tmp: (
            _fake_run(tmp, RUN_METRICS),
            (tmp / "run" / "class_distribution.png").write_bytes(b"x"),
        ),
        2,
        "would overwrite the input run/class_distribution.png",
    ),
    # after training: predict and export (issue 27)
    "predict: a truncated image is skipped, counted and listed": Row(
        ["predict", "run", "imgs"],
        _run_with(3, OK_PNG, ("imgs/b.png", _truncated_png())),
        0,
        "skipped 1 unreadable images: imgs/b.png",
    ),
    "predict: a greyscale image for an RGB model": Row(
        ["predict", "run", "imgs/g.png"],
        _run_with(3, ("imgs/g.png", Image.new("L", (4, 4), 90))),
        0,
        "",
    ),
    "predict: an RGB image for a greyscale model": Row(
        ["predict", "run", "imgs/a.png"], _run_with(1, OK_PNG), 0, ""
    ),
    "predict: a decompression bomb is skipped": Row(
        ["predict", "run", "imgs"],
        _run_with(3, OK_PNG, ("imgs/bomb.png", _png_claiming(20000, 20000))),
        0,
        "decompression bomb",
    ),
    "predict: class folders other than the run's": Row(
        ["predict", "run", "test"],
        _run_with(3, ("test/0/a.png", OK_PNG[1]), ("test/7/b.png", OK_PNG[1])),
        2,
        "classes differ from the run's",
    ),
    "predict: a tampered checkpoint": Row(["predict", "run", "imgs"], _tampered, 2, "is corrupt"),
    "predict: an existing --output without --overwrite": Row(
        ["predict", "run", "imgs", "--output", "p.csv"],
        lambda tmp: (_run_with(3, OK_PNG)(tmp), (tmp / "p.csv").write_text("mine")),
        2,
        "p.csv exists: pass --overwrite to replace it",
    ),
    "predict: --output inside the run folder": Row(
        ["predict", "run", "imgs", "--output", "run/p.csv"],
        _run_with(3, OK_PNG),
        2,
        "is inside the run folder",
    ),
    "predict: --top-k above the number of classes": Row(
        ["predict", "run", "imgs", "--top-k", "5"],
        _run_with(3, OK_PNG),
        2,
        "expected top_k at most the run's 4 classes, got 5",
    ),
    "predict: an npz of the wrong dtype": Row(
        ["predict", "run", "bad.npz"],
        _run_with(3, _npz_x(np.zeros((2, 4, 4, 3), np.float32))),
        2,
        "wrong dtype for x",
    ),
    "predict: an npz of the wrong shape": Row(
        ["predict", "run", "bad.npz"],
        _run_with(3, _npz_x(np.zeros((2, 4, 4, 7), np.uint8))),
        2,
        "wrong shape for x",
    ),
    "export: a format whose package is missing": Row(
        ["export", "run", "--format", "safetensors", "--output", "m.safetensors"],
        _run_with(3),
        2,
        "pip install 'classbalanced[export]'",
        modules={"safetensors": None, "safetensors.torch": None},
    ),
}


def _snapshot(root: Path) -> dict[str, str]:
    """Relative path -> content hash (or link target) of everything under ``root``."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                state[rel] = "link:" + os.readlink(path)
            elif path.is_file():
                state[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                state[rel] = "dir"
    return state


@pytest.mark.parametrize("case", list(ROWS))
def test_hostile_input(case, tmp_path, monkeypatch, capsys):
    row = ROWS[case]
    monkeypatch.chdir(tmp_path)
    row.make(tmp_path)
    for name, module in row.modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    before = _snapshot(tmp_path)
    try:
        code = cli.main(row.argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err
    assert code == row.code, err
    lines = err.strip("\n").splitlines()
    if not row.fragment:  # accepted as it is: nothing to say
        assert lines == [], err
    else:
        assert len(lines) == 1 and "Traceback" not in err, err
        assert row.fragment in lines[0], lines[0][:500]
        assert len(lines[0]) < 1000  # an echoed value is cut, never the whole input
    after = _snapshot(tmp_path)
    for allowed in row.outputs:
        after.pop(allowed, None)
    assert after == before  # nothing written, nothing changed, nothing removed


# --------------------------------------------------------------------------- sweep folders


def _sweep_folder(tmp: Path) -> tuple[Path, list[dict]]:
    """A sweep folder of two finished runs (seeds 0 and 1), as the trainer leaves them."""
    from classbalanced.reproduce.sweep import load_sweep, plan_sweep, write_plan

    (tmp / "s.toml").write_text(
        '[base]\ndataset = "digits"\nloss = "softmax"\nepochs = 1\n[[grid]]\nseed = [0, 1]\n'
    )
    plan = write_plan(plan_sweep(load_sweep(tmp / "s.toml"), tmp / "sw"))
    entries = json.loads((tmp / "sw" / "plan.json").read_text())["runs"]
    for entry, error in zip(entries, (30.0, 40.0), strict=True):
        run = plan.out / entry["run_dir"]
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps(entry["config"]))
        (run / "history.json").write_text(json.dumps([{"epoch": 1, "error_percent": error}]))
        metrics = {"epoch": 1, "error_percent": error, "accuracy": 1 - error / 100}
        (run / "metrics.json").write_text(json.dumps(metrics))
    return plan.out, entries


def _damaged_claim(tmp: Path) -> None:
    (tmp / "sw" / "runs" / "digits-if1-softmax-b0.0-s0.claim.0").write_bytes(b"\xff\xfe{")


def _edit_json(path: Path, change) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("another run's copy", "foreign"),
        ("error -5", "damaged"),
        ("error '12'", "damaged"),
        ("error 1e308", "damaged"),
        ("history NaN", "finished"),
    ],
)
def test_report_refresh_on_hostile_run_files(case, status, tmp_path, monkeypatch, capsys):
    """A run folder that is not the plan's run, a metrics.json whose error is no percentage,
    or a history holding NaN: the run is not counted (or drawn), the others are, and
    results.csv, figures and report.md are all rewritten (issue #25)."""
    monkeypatch.chdir(tmp_path)
    out, entries = _sweep_folder(tmp_path)
    first = out / entries[0]["run_dir"]
    if case == "another run's copy":  # run 0's folder replaced by a copy of run 1
        shutil.rmtree(first)
        shutil.copytree(out / entries[1]["run_dir"], first)
    elif case.startswith("error"):
        value = {"error -5": -5.0, "error '12'": "12", "error 1e308": 1e308}[case]
        _edit_json(first / "metrics.json", lambda m: {**m, "error_percent": value})
    else:
        (first / "history.json").write_text('[{"epoch": 1, "error_percent": NaN}]')
    assert cli.main(["report", "sw", "--refresh"]) == 0, capsys.readouterr().err
    from classbalanced.reproduce.results import load_results

    rows = {r["name"]: r for r in load_results(out / "results.csv")}
    assert rows[entries[0]["name"]]["status"] == status
    assert rows[entries[1]["name"]]["status"] == "finished"
    assert rows[entries[1]["name"]]["error_percent"] == 40.0
    report = (out / "report.md").read_text()
    assert ("35.00" if status == "finished" else "40.00") in report  # the counted mean
    if status != "finished":
        assert rows[entries[0]["name"]]["error_percent"] is None
        assert status in report  # named among the runs no table counts


def test_train_data_given_as_test_data_is_warned_about(tmp_path, monkeypatch):
    """``--train-data X --test-data ./X``: one warning naming it (lists warn of shared
    images already); other files, none (issue #25)."""
    from classbalanced.config import TrainConfig, warn_test_is_train

    monkeypatch.chdir(tmp_path)
    _pair(tmp_path)
    same = TrainConfig(dataset="npz", train_data="train.npz", test_data="./train.npz")
    with pytest.warns(UserWarning, match=r"--test-data './train.npz' is the training data"):
        warn_test_is_train(same)
    other = TrainConfig(dataset="npz", train_data="train.npz", test_data="test.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_test_is_train(other)


# --------------------------------------------------------------------------- unreadable test images


def _list_data(tmp: Path) -> str:
    """A ``list`` data set of 8x8 PNGs (2 classes: 6 training, 3 test images each) whose
    test image ``img/c0_te0.png`` is not an image; returns that image's name."""
    rng = np.random.default_rng(0)
    lists: dict[str, list[str]] = {"train": [], "test": []}
    (tmp / "data" / "img").mkdir(parents=True)
    for label in range(2):
        for split, count in (("train", 6), ("test", 3)):
            for k in range(count):
                rel = f"img/c{label}_{split[:2]}{k}.png"
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp / "data" / rel)
                lists[split].append(f"{rel} {label}\n")
    for split, lines in lists.items():
        (tmp / "data" / f"{split}.txt").write_text("".join(lines))
    (tmp / "data" / "img" / "c0_te0.png").write_bytes(b"not a PNG")
    return "c0_te0.png"


def test_unreadable_test_images_are_counted_and_warned_about_once(tmp_path, monkeypatch, capsys):
    """An unreadable test image is left out of the accuracy's denominator: metrics.json,
    history.json and evaluate (printed and ``--output``) count it in
    ``num_unreadable_test_images``, and the command line warns about it in one line, not
    two (a real ``classbalanced train`` process: what a user sees on stderr) (issue #25)."""
    monkeypatch.chdir(tmp_path)
    bad = _list_data(tmp_path)
    prepare = ["prepare", "--dataset", "list", "--data-dir", "data"]
    lists = ["--train-list", "data/train.txt", "--test-list", "data/test.txt"]
    assert cli.main([*prepare, *lists]) == 0, capsys.readouterr().err
    train = [
        sys.executable, "-m", "classbalanced", "train", "--dataset", "list", "--data-dir", "data",
        "--model", "simple_cnn", "--image-size", "8", "--epochs", "1", "--batch-size", "4",
        "--num-workers", "0", "--device", "cpu", "--no-progress", "--out", "run",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(train, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if bad in line]
    assert len(warned) == 1 and "skipping unreadable image" in warned[0], result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["num_test_images"], metrics["num_unreadable_test_images"]) == (5, 1)
    last = json.loads((tmp_path / "run" / "history.json").read_text())[-1]
    assert last["num_unreadable_test_images"] == 1
    capsys.readouterr()
    assert cli.main(["evaluate", "run", "--device", "cpu", "--output", "e.json"]) == 0
    out, err = capsys.readouterr()
    printed, written = json.loads(out), json.loads((tmp_path / "e.json").read_text())
    for got in (printed, written):
        assert (got["num_test_images"], got["num_unreadable_test_images"]) == (5, 1)
    assert printed["accuracy"] == written["accuracy"] == metrics["accuracy"]
    assert [line for line in err.splitlines() if bad in line] == [
        f"classbalanced: warning: skipping unreadable image {tmp_path / 'data' / 'img' / bad}: "
        f"cannot identify image file '{tmp_path / 'data' / 'img' / bad}'"
    ], err
