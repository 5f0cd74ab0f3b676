"""The command line: weights, one-line errors (exit 2), make-lt, evaluate, demo.

Most commands are run in-process through ``classbalanced.cli.main`` (fast); a
few go through ``python -m classbalanced`` to check the real entry point.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from classbalanced import cli
from classbalanced.weights import class_balanced_weights

NUM_CLASSES = 10
PER_CLASS = 30


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    # tiny tensors: one thread is much faster than two fighting for a shared CPU
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _write(path: Path, labels, seed: int, size: int = 8) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(len(labels), size, size, 3), dtype=np.uint8)
    np.savez(path, x=x, y=np.asarray(labels, dtype=np.int64))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_data")
    rng = np.random.default_rng(7)
    train_labels = rng.permutation(np.repeat(np.arange(NUM_CLASSES), PER_CLASS))
    test_labels = np.repeat(np.arange(NUM_CLASSES), 3)
    corrupt = root / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04" + rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    return {
        "train": _write(root / "train.npz", train_labels, 1),
        "train_labels": train_labels,
        "test": _write(root / "test.npz", test_labels, 2),
        "test_label_10": _write(root / "test10.npz", np.r_[test_labels, 10], 3),
        "train_negative": _write(root / "neg.npz", np.r_[train_labels, -1], 4),
        "corrupt": corrupt,
        "missing": root / "missing.npz",
    }


def _main(capsys, argv) -> tuple[int, str, str]:
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's own errors (wrong types, unknown flags)
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_error_line(err: str, prefix: str = "classbalanced: error:") -> str:
    assert "Traceback" not in err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), err
    return lines[0]


def _train_args(data, out, **flags) -> list[str]:
    values = {
        "dataset": "npz",
        "train-data": data["train"],
        "test-data": data["test"],
        "imbalance-factor": 10,
        "model": "resnet8",
        "epochs": 1,
        "batch-size": 32,
        "device": "cpu",
        "out": out,
    }
    values.update(flags)
    args = ["train", "--no-progress"]
    for key, value in values.items():
        args += [f"--{key}", str(value)]
    return args


def _first_empty_class(n_max: int, num_classes: int, factor: float) -> int:
    counts = [int(n_max * (1 / factor) ** (i / (num_classes - 1))) for i in range(num_classes)]
    return counts.index(0)


# ---------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------


def _closed_form_weights(counts, beta):
    counts = np.asarray(counts, dtype=np.float64)
    effective = (1 - beta**counts) / (1 - beta)
    w = 1 / effective
    return effective, w * len(counts) / w.sum()


def _parse_table(stdout: str, num_betas: int):
    lines = stdout.strip().splitlines()
    rows = [line.split() for line in lines[1:]]
    effective = [[float(r[2 + 2 * b]) for r in rows] for b in range(num_betas)]
    weights = [[float(r[3 + 2 * b]) for r in rows] for b in range(num_betas)]
    return [int(r[0]) for r in rows], [float(r[1]) for r in rows], effective, weights


@pytest.mark.parametrize(
    "counts,betas",
    [
        (["5000", "500", "50"], ["0.999"]),
        (["100", "10", "1"], ["0.9", "0.99", "0.9999"]),
    ],
)
def test_weights_prints_the_class_balanced_weights(capsys, counts, betas):
    code, out, err = _main(capsys, ["weights", *counts, "--beta", *betas])
    assert code == 0, err
    index, n, effective, weights = _parse_table(out, len(betas))
    assert index == list(range(len(counts)))
    assert n == [float(c) for c in counts]
    for b, beta in enumerate(betas):
        library = class_balanced_weights([float(c) for c in counts], float(beta)).tolist()
        expected_e, expected_w = _closed_form_weights([float(c) for c in counts], float(beta))
        assert weights[b] == pytest.approx(library, abs=6e-5)
        assert weights[b] == pytest.approx(expected_w, abs=6e-5)
        assert effective[b] == pytest.approx(expected_e, abs=6e-5)
        assert sum(weights[b]) == pytest.approx(len(counts), abs=1e-3)


def test_the_module_entry_point_prints_the_weights():
    proc = subprocess.run(
        [sys.executable, "-m", "classbalanced", "weights", "5000", "500", "50", "--beta", "0.999"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    _, _, _, weights = _parse_table(proc.stdout, 1)
    assert weights[0] == pytest.approx(_closed_form_weights([5000, 500, 50], 0.999)[1], abs=6e-5)


@pytest.mark.parametrize("beta", ["1.5", "1", "-0.5"])
def test_weights_with_a_bad_beta_is_one_error_line(capsys, beta):
    code, _, err = _main(capsys, ["weights", "5000", "500", "--beta", beta])
    assert code == 2
    assert "beta" in _one_error_line(err)


def test_weights_with_a_bad_beta_prints_nothing_on_stdout(capsys):
    code, out, _ = _main(capsys, ["weights", "5000", "500", "--beta", "1.5"])
    assert code == 2
    assert out == ""


# ---------------------------------------------------------------------------
# one-line errors
# ---------------------------------------------------------------------------

BAD_TRAIN = {
    "unknown model": ({"model": "resnet_foo"}, ["resnet{6n+2}", "simple_cnn"]),
    "unknown loss": ({"loss": "hinge"}, ["softmax", "sigmoid", "focal"]),
    "unknown dataset": ({"dataset": "mnist"}, ["cifar10", "cifar100", "digits", "npz"]),
    "inverse imbalance factor": ({"imbalance-factor": 0.02}, ["--imbalance-factor 50"]),
    "beta 1.5": ({"beta": 1.5}, ["beta", "1.5"]),
    "negative gamma": ({"gamma": -1}, ["gamma"]),
    "epochs 0": ({"epochs": 0}, ["epochs"]),
    "batch size 0": ({"batch-size": 0}, ["batch_size"]),
    "missing npz": ({"train-data": "MISSING"}, ["missing.npz"]),
    "corrupt npz": ({"train-data": "CORRUPT"}, ["corrupt.npz"]),
    "test label out of range": ({"test-data": "TEST10"}, ["classes"]),
    "negative train label": ({"train-data": "NEGATIVE"}, ["negative label"]),
}


@pytest.mark.parametrize("case", list(BAD_TRAIN))
def test_bad_train_inputs_give_exit_2_and_one_line(capsys, tmp_path, data, case):
    flags, fragments = BAD_TRAIN[case]
    named = {
        "MISSING": data["missing"],
        "CORRUPT": data["corrupt"],
        "TEST10": data["test_label_10"],
        "NEGATIVE": data["train_negative"],
    }
    flags = {k: named.get(v, v) if isinstance(v, str) else v for k, v in flags.items()}
    out = tmp_path / "run"
    code, stdout, err = _main(capsys, _train_args(data, out, **flags))
    assert code == 2
    line = _one_error_line(err)
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_argparse_errors_are_one_line_too(capsys, tmp_path, data):
    code, _, err = _main(capsys, _train_args(data, tmp_path / "run", epochs="ten"))
    assert code == 2
    # argparse names the subcommand: "classbalanced train: error: ..."
    line = _one_error_line(err, prefix="classbalanced train: error:")
    assert "--epochs" in line and "ten" in line
    code, _, err = _main(capsys, ["train", "--no-such-flag"])
    assert code == 2
    assert "--no-such-flag" in _one_error_line(err, prefix="classbalanced")


def test_an_empty_class_after_subsetting_names_the_class(capsys, tmp_path, data):
    factor = 100  # 30 images per class: the tail classes would keep int(<1) = 0 images
    empty = _first_empty_class(PER_CLASS, NUM_CLASSES, factor)
    out = tmp_path / "run"
    code, _, err = _main(capsys, _train_args(data, out, **{"imbalance-factor": factor}))
    assert code == 2
    line = _one_error_line(err)
    assert f"class {empty}" in line
    assert "smaller imbalance factor" in line
    assert not out.exists() or not any(out.iterdir())


def test_errors_from_the_real_entry_point_are_one_line(tmp_path, data):
    args = _train_args(data, tmp_path / "run", **{"imbalance-factor": 0.02})
    proc = subprocess.run(
        [sys.executable, "-m", "classbalanced", *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    line = _one_error_line(proc.stderr)
    assert "50" in line
    assert proc.stdout == ""


# ---------------------------------------------------------------------------
# make-lt
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [10, 3.5, 1])
def test_make_lt_writes_indices_and_counts_following_the_formula(capsys, tmp_path, data, factor):
    out = tmp_path / "lt.json"
    args = ["make-lt", "--dataset", "npz", "--train-data", data["train"]]
    args += ["--imbalance-factor", factor, "--seed", 3, "--output", out]
    code, _, err = _main(capsys, args)
    assert code == 0, err
    result = json.loads(out.read_text())
    expected = [
        int(PER_CLASS * (1 / factor) ** (i / (NUM_CLASSES - 1)) + 1e-9) for i in range(NUM_CLASSES)
    ]
    assert result["counts"] == expected
    indices = np.asarray(result["indices"])
    assert len(indices) == len(set(indices.tolist())) == sum(expected)
    labels = data["train_labels"][indices]
    assert np.bincount(labels, minlength=NUM_CLASSES).tolist() == expected
    assert result["imbalance_factor"] == factor and result["seed"] == 3

    # a pure function of the seed
    again = tmp_path / "again.json"
    _main(capsys, [*args[:-1], again])
    assert json.loads(again.read_text())["indices"] == result["indices"]
    if factor != 1:
        other = tmp_path / "other.json"
        _main(capsys, [*args[:-3], 4, "--output", other])
        assert json.loads(other.read_text())["counts"] == expected
        assert json.loads(other.read_text())["indices"] != result["indices"]


def test_make_lt_refuses_an_inverse_imbalance_factor(capsys, tmp_path, data):
    out = tmp_path / "lt.json"
    args = ["make-lt", "--dataset", "npz", "--train-data", data["train"]]
    code, _, err = _main(capsys, [*args, "--imbalance-factor", "0.02", "--output", out])
    assert code == 2
    assert "50" in _one_error_line(err)
    assert not out.exists()


# ---------------------------------------------------------------------------
# demo and evaluate
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    argv = ["demo", "--epochs", "2", "--seeds", "1", "--out", str(out), "--no-progress"]
    code = cli.main(argv)
    return out, code


def test_demo_writes_summary_plots_and_results(demo):
    out, code = demo
    assert code == 0
    for name in ("class_distribution.png", "effective_number.png", "per_class_accuracy.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    summary = (out / "summary.md").read_text()
    assert "softmax" in summary and "cb_focal" in summary
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"softmax", "cb_focal"}
    for name, runs in results.items():
        assert len(runs) == 1
        run_metrics = json.loads((out / f"{name}-s0" / "metrics.json").read_text())
        assert runs[0]["accuracy"] == run_metrics["accuracy"]
        assert runs[0]["epoch"] == 2
        # the summary table shows this accuracy (mean of one seed)
        assert f"{100 * run_metrics['accuracy']:.1f}%" in summary
    assert results["cb_focal"][0]["loss"] == "focal" and results["cb_focal"][0]["beta"] == 0.999
    assert results["softmax"][0]["loss"] == "softmax"


def test_demo_refuses_to_run_again_without_overwrite(demo, capsys):
    out, _ = demo
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    code, _, err = _main(capsys, ["demo", "--epochs", "2", "--seeds", "1", "--out", out])
    assert code == 2
    assert "--overwrite" in _one_error_line(err)
    after = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before


@pytest.mark.parametrize("mine", ["per_class_accuracy.png", "notes.txt"])
def test_demo_refuses_a_folder_that_holds_no_demo(capsys, tmp_path, mine):
    """(The demo used to write its plots, results.json and summary.md into any folder,
    over a user's files of those names.)"""
    out = tmp_path / "mine"
    out.mkdir()
    (out / mine).write_text("mine")
    code, _, err = _main(capsys, ["demo", "--epochs", "1", "--seeds", "1", "--out", out])
    assert code == 2
    assert "is not empty and holds no demo" in _one_error_line(err)
    assert [p.name for p in out.iterdir()] == [mine] and (out / mine).read_text() == "mine"


def test_demo_checks_every_runs_config_before_training_the_first(capsys, tmp_path):
    """(A last seed beyond the range failed only after the runs before it had trained.)"""
    out = tmp_path / "demo"
    argv = ["demo", "--epochs", "1", "--seed", "4294967295", "--seeds", "2", "--out", out]
    code, stdout, err = _main(capsys, argv)
    assert code == 2 and "seed must be an integer in [0, 4294967295]" in _one_error_line(err)
    assert stdout == "" and not out.exists()


def test_demo_accepts_the_run_folders_of_an_interrupted_demo(tmp_path):
    from classbalanced.demo import _check_out

    for name in ("softmax-s0", "cb_focal-s12"):
        (tmp_path / name).mkdir()
    _check_out(tmp_path)  # resumed as the runs allow (train refuses a run without --overwrite)
    (tmp_path / "softmax-sx").mkdir()
    with pytest.raises(ValueError, match="found softmax-sx"):
        _check_out(tmp_path)


def test_demo_refuses_a_file_as_its_folder_before_training(capsys, tmp_path):
    out = tmp_path / "file.txt"
    out.write_text("mine")
    code, stdout, err = _main(capsys, ["demo", "--epochs", "1", "--seeds", "1", "--out", out])
    assert code == 2 and "exists and is not a folder" in _one_error_line(err)
    assert "softmax" not in stdout + err and out.read_text() == "mine"  # nothing started


def test_evaluate_prints_the_runs_accuracy(demo, capsys, tmp_path):
    out, _ = demo
    run = out / "softmax-s0"
    saved = json.loads((run / "metrics.json").read_text())
    written = tmp_path / "eval.json"
    code, stdout, err = _main(capsys, ["evaluate", run, "--device", "cpu", "--output", written])
    assert code == 0, err
    printed = json.loads(stdout)
    assert printed["accuracy"] == saved["accuracy"]
    assert printed["error_percent"] == pytest.approx(100 * (1 - saved["accuracy"]))
    for key in ("many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy"):
        assert printed[key] == saved[key]
    assert json.loads(written.read_text())["per_class_accuracy"] == saved["per_class_accuracy"]


def test_evaluate_output_may_go_into_the_run_folder_but_not_over_its_files(demo, capsys):
    out, _ = demo
    run = out / "softmax-s0"
    for _ in range(2):  # a second time over its own earlier output
        code, _, err = _main(
            capsys, ["evaluate", run, "--device", "cpu", "--output", run / "e.json"]
        )
        assert code == 0, err
    before = (run / "metrics.json").read_bytes()
    code, _, err = _main(capsys, ["evaluate", run, "--output", run / "metrics.json"])
    assert code == 2 and "would overwrite the input" in _one_error_line(err)
    assert (run / "metrics.json").read_bytes() == before
    (run / "e.json").unlink()


def test_evaluate_a_folder_without_a_run_is_one_error_line(capsys, tmp_path):
    code, _, err = _main(capsys, ["evaluate", tmp_path])
    assert code == 2
    _one_error_line(err)


# ---------------------------------------------------------------------------
# the train flags are generated from TrainConfig; registries reach the CLI
# ---------------------------------------------------------------------------

#: the flags `train` had when they were written by hand (none may disappear)
FLAGS_BEFORE = """--dataset --data-dir --train-data --test-data --imbalance-factor --profile
--image-size --download --no-download --num-workers --model --pretrained --no-pretrained --loss
--beta --gamma --reweight-schedule --reweight-epoch --sampler --sampler-beta --epochs
--batch-size --lr --momentum --nesterov --no-nesterov --weight-decay --no-decay-bias-and-norm
--no-no-decay-bias-and-norm --accumulate-steps --warmup-epochs --decay-epochs --decay-factors
--pad --flip --no-flip --eval-every --eval-batch-size --seed --device --precision
--channels-last --no-channels-last --compile --no-compile --sync-bn --no-sync-bn
--skip-nonfinite --no-skip-nonfinite --out --keep-checkpoints --progress --no-progress --resume
--overwrite --force --config""".split()


def _train_parser():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["train"]


def test_every_config_key_has_one_flag_and_no_old_flag_is_lost():
    import dataclasses

    from classbalanced.config import TrainConfig

    train = _train_parser()
    flags = {s for a in train._actions for s in a.option_strings}
    assert set(FLAGS_BEFORE) <= flags
    # permissions for one command (not settings of the run) are the only other flags
    permissions = {"accept_data_change", "fallback_checkpoint"}
    dests = {a.dest for a in train._actions} - {"help", "config"} - permissions
    assert dests == {f.name for f in dataclasses.fields(TrainConfig)}
    # every default is None: only flags the user gives override a config file
    assert all(a.default is None for a in train._actions if a.dest in dests)


def test_dataset_model_and_loss_help_list_every_registered_name():
    from classbalanced.data.registry import available_datasets
    from classbalanced.losses import available_losses

    helps = {a.dest: a.help for a in _train_parser()._actions}
    assert all(name in helps["dataset"] for name in available_datasets())
    assert len(available_datasets()) >= 9
    assert all(name in helps["loss"] for name in available_losses())
    assert "simple_cnn" in helps["model"] and "max_m=0.5" in helps["loss_options"]


def test_flags_parse_to_the_same_config_values():
    args = cli.build_parser().parse_args(
        ["train", "--dataset", "digits", "--no-flip", "--decay-epochs", "3", "4", "--resume"]
        + ["--loss", "ldam", "--loss-option", "max_m=0.25", "--loss-option", "s=10"]
    )
    cfg = cli._train_config(args)
    assert (cfg.dataset, cfg.flip, cfg.decay_epochs, cfg.resume) == ("digits", False, [3, 4], True)
    assert cfg.loss_options == {"max_m": 0.25, "s": 10.0}
    assert cfg.profile == "exp" and cfg.channels_last is True  # not given: the defaults


def test_loss_options_from_a_file_and_flags_merge(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[loss_options]\nmax_m = 0.3\ns = 20\n")  # the loss comes from a flag
    argv = ["train", "--config", str(path), "--loss", "ldam", "--loss-option", "s=5"]
    cfg = cli._train_config(cli.build_parser().parse_args(argv))
    assert cfg.resolved().loss_options == {"max_m": 0.3, "s": 5.0}


def test_a_malformed_loss_option_is_an_argparse_error(capsys):
    code, _, err = _main(capsys, ["train", "--loss-option", "max_m"])
    assert code == 2 and "KEY=NUMBER" in _one_error_line(err, prefix="classbalanced train")


def test_registering_a_dataset_model_and_loss_makes_them_usable_from_the_cli(
    capsys, tmp_path, monkeypatch
):
    from torch import nn

    from classbalanced import losses
    from classbalanced.data.arrays import ImageArrays
    from classbalanced.data.registry import DATASET_REGISTRY, register_dataset
    from classbalanced.losses.registry import LOSS_REGISTRY
    from classbalanced.models.registry import MODEL_REGISTRY, register_model

    rng = np.random.default_rng(0)
    arrays = ImageArrays(
        rng.integers(0, 256, (40, 6, 6, 1), dtype=np.uint8), np.arange(40) % 4, list("abcd")
    )
    seen = {}

    def build(counts, *, beta, gamma, reduction, scale: float = 1.0):
        seen["scale"] = scale
        return losses.ClassBalancedLoss(counts, beta=beta, loss_type="softmax", reduction=reduction)

    register_dataset("toy_registered", lambda **_: (arrays, arrays))
    register_model(
        "toy_linear", lambda n, *, in_channels: nn.Sequential(nn.Flatten(), nn.Linear(36, n))
    )
    losses.register_loss("toy_loss", build)
    try:
        helps = {a.dest: a.help for a in _train_parser()._actions}
        assert "toy_registered" in helps["dataset"] and "toy_linear" in helps["model"]
        assert "toy_loss: scale=1" in helps["loss_options"]
        code, _, err = _main(
            capsys,
            ["train", "--dataset", "toy_registered", "--model", "toy_linear", "--loss", "toy_loss"]
            + ["--loss-option", "scale=3", "--epochs", "2", "--batch-size", "8", "--device", "cpu"]
            + ["--no-progress", "--no-channels-last", "--out", str(tmp_path / "run")],
        )
        assert code == 0, err
        assert seen["scale"] == 3.0
        saved = json.loads((tmp_path / "run" / "config.json").read_text())
        assert saved["dataset"] == "toy_registered" and saved["loss_options"] == {"scale": 3.0}
    finally:
        DATASET_REGISTRY.pop("toy_registered")
        MODEL_REGISTRY.pop("toy_linear")
        LOSS_REGISTRY.pop("toy_loss")


# ---------------------------------------------------------------------------
# only argument errors are usage errors; a bug says where its traceback is
# ---------------------------------------------------------------------------


def test_an_unexpected_type_error_is_an_internal_error_with_a_traceback_file(capsys, monkeypatch):
    def buggy(args):
        return len(None)  # a bug, not a user's mistake

    monkeypatch.setattr(cli, "_cmd_weights", buggy)
    code, _, err = _main(capsys, ["weights", "10", "5"])
    assert code == cli.EXIT_INTERNAL != cli.EXIT_USAGE
    line = _one_error_line(err, prefix="classbalanced: internal error")
    assert "TypeError" in line
    path = Path(line.rsplit("full traceback in ", 1)[1].rstrip(")"))
    try:
        text = path.read_text()
        assert "Traceback" in text and "len(None)" in text
    finally:
        path.unlink()


def test_other_unexpected_exceptions_are_internal_errors_too(capsys, monkeypatch):
    def buggy(args):
        return {}["missing"]

    monkeypatch.setattr(cli, "_cmd_weights", buggy)
    code, _, err = _main(capsys, ["weights", "10", "5"])
    line = _one_error_line(err, prefix="classbalanced: internal error")
    assert code == 1 and "KeyError" in line
    Path(line.rsplit("full traceback in ", 1)[1].rstrip(")")).unlink()


def test_a_type_check_of_an_argument_stays_a_usage_error(capsys, monkeypatch):
    from classbalanced.models import build_model

    monkeypatch.setattr(cli, "_cmd_weights", lambda args: build_model("resnet8", "ten"))
    code, _, err = _main(capsys, ["weights", "10", "5"])
    assert code == 2 and "num_classes" in _one_error_line(err)


def test_train_files_without_dataset_are_refused_not_ignored(capsys, tmp_path, data, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a CIFAR download would land in ./data
    args = ["train", "--train-data", data["train"], "--test-data", data["test"], "--out", "run"]
    code, _, err = _main(capsys, args)
    assert code == 2
    line = _one_error_line(err)
    assert "cifar10 does not read train_data, test_data" in line and "--dataset npz" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no download, no run folder


def test_a_warm_up_longer_than_the_run_is_a_one_line_warning(capsys, tmp_path, data):
    code, _, err = _main(capsys, _train_args(data, tmp_path / "run", **{"warmup-epochs": 2}))
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert warnings == [
        "classbalanced: warning: a warm-up of 2 epochs does not end within a run of 1: "
        "the learning rate never reaches 0.025"
    ]


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-5"])
def test_sweep_stale_after_must_be_a_positive_number_of_seconds(capsys, tmp_path, value):
    """(nan used to be accepted: a claim would never, or at once, count as stale.)"""
    sweep = Path(__file__).resolve().parents[1] / "configs" / "sweeps" / "smoke.toml"
    argv = ["sweep", "--config", sweep, "--dry-run", "--out", tmp_path / "s"]
    code, _, err = _main(capsys, [*argv, "--stale-after", value])
    line = _one_error_line(err, prefix="classbalanced sweep: error:")
    assert code == 2 and "--stale-after" in line and "expected a positive number" in line
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "extra",
    [["--config", "c.toml"], ["--dry-run"], ["--extend"], ["--launcher", "ray"], ["--jobs", "2"]],
)
def test_sweep_status_refuses_the_flags_it_would_ignore(capsys, tmp_path, extra):
    """(--status printed the state and exited, silently ignoring a sweep file, --dry-run, ...)"""
    code, out, err = _main(capsys, ["sweep", "--status", tmp_path, *extra])
    line = _one_error_line(err)
    assert code == 2 and f"--status takes no {extra[0]}" in line and out == ""


@pytest.mark.parametrize("flag", ["--accept-data-change", "--fallback-checkpoint"])
def test_train_permissions_of_a_resume_need_resume(capsys, tmp_path, data, flag):
    """(Without --resume they were accepted and did nothing.)"""
    code, _, err = _main(capsys, [*_train_args(data, tmp_path / "run"), flag])
    assert code == 2 and f"{flag} acts on --resume only" in _one_error_line(err)
    assert not (tmp_path / "run").exists()


def test_a_yes_no_key_named_no_x_reads_no_x_and_x_not_no_no_x(capsys):
    """``no_decay_bias_and_norm``: ``--no-decay-bias-and-norm`` / ``--decay-bias-and-norm``
    (argparse's own pair was ``--no-no-decay-bias-and-norm``: still read, not listed)."""
    parse = cli.build_parser().parse_args
    for argv, value in (
        ([], None),
        (["--no-decay-bias-and-norm"], True),
        (["--decay-bias-and-norm"], False),
        (["--no-no-decay-bias-and-norm"], False),
        (["--decay-bias-and-norm", "--no-decay-bias-and-norm"], True),  # the last one wins
    ):
        args = parse(["train", "--dataset", "digits", *argv])
        assert args.no_decay_bias_and_norm is value, argv
    with pytest.raises(SystemExit):
        parse(["train", "--help"])
    shown = capsys.readouterr().out
    assert "--no-decay-bias-and-norm | --decay-bias-and-norm" in shown
    assert "--no-decay-bias-and-norm, --decay-bias-and-norm\n" in shown
    assert "no-no-" not in shown
