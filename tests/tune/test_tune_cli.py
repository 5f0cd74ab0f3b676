"""Bad input to classbalanced tune: one line, exit 2, nothing trained and no folder written."""

from __future__ import annotations

import contextlib
import io
import json
import sys

import pytest
from tune_helpers import SEARCH, write_data

from classbalanced import cli


def _main(*args) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main([str(a) for a in args])
    return code, err.getvalue()


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("classbalanced: error:"), err
    return lines[0]


@pytest.fixture
def data(tmp_path):
    return write_data(tmp_path)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--search", "betta=uniform(0,1)"], r"unknown key 'betta'; expected one of"),
        (["--search", "beta=uniform(0.9)"], r"expected uniform\(a, b\) with two finite numbers"),
        (["--search", "gamma=uniform(0, 2)"], r"no loss of the search reads gamma"),
        (["--search", "beta=uniform(0.5, 1.5)"], r"the base config refuses beta = 1.5"),
        (["--search", *SEARCH, "--metric", "accuracy"], r"--metric accuracy is not written by the trials"),
        (["--search", *SEARCH, "--metric", "val_f1"], r"expected one of val_accuracy, val_balanced_accuracy"),
        (["--search", *SEARCH, "--trials", "0"], r"--trials must be an integer >= 1, got 0"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line(data, tmp_path, extra, message):
    args = ["tune", "--config", data["config"], "--out", tmp_path / "out", "--trials", "3"]
    code, err = _main(*args, "--val-fraction", "0.25", *extra)
    assert code == 2
    assert pytest.importorskip("re").search(message, _one_line(err)), err
    assert not (tmp_path / "out").exists()


def test_a_validation_set_is_required_and_its_fraction_checked(data, tmp_path):
    args = ["tune", "--config", data["config"], "--out", tmp_path / "out", "--trials", "3"]
    code, err = _main(*args, "--search", *SEARCH)
    assert code == 2 and "tune chooses on a validation set: expected --val-fraction F" in err
    code, err = _main(*args, "--val-fraction", "0.7", "--search", *SEARCH)
    assert code == 2 and r"val_fraction must be in (0, 0.5], got 0.7" in _one_line(err)
    assert not (tmp_path / "out").exists()


def test_a_folder_of_another_search_is_refused_unless_extend(data, tmp_path):
    from classbalanced.tune.study import check_folder

    out = tmp_path / "out"
    out.mkdir()
    record = {
        "base": {"dataset": "digits"},
        "search": {"beta": "uniform(0, 0.5)"},
        "metric": "val_loss",
    }
    (out / "tune.json").write_text(json.dumps(record))
    (out / "study.journal").write_text("")
    args = [
        "tune",
        "--config",
        data["config"],
        "--out",
        out,
        "--trials",
        "3",
        "--val-fraction",
        "0.25",
    ]
    code, err = _main(*args, "--search", *SEARCH)
    assert code == 2
    line = _one_line(err)
    assert "holds a study of another base config (batch_size: None then, 16 now)" in line
    assert line.endswith("pass --extend to add trials with this one, or choose another --out")
    assert json.loads((out / "tune.json").read_text()) == record  # untouched
    new = {**record, "metric": "val_accuracy"}
    check_folder(out, new, extend=True)  # --extend records the new search
    assert json.loads((out / "tune.json").read_text()) == new


def test_without_optuna_one_line_names_the_extra(data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    args = ["tune", "--config", data["config"], "--out", tmp_path / "out", "--trials", "3"]
    code, err = _main(*args, "--val-fraction", "0.25", "--search", *SEARCH)
    assert code == 2
    assert "pip install 'classbalanced[tune]'" in _one_line(err)
    code, err = _main("tune", "--status", tmp_path)
    assert code == 2
