"""Sweep files: expansion counts, no duplicates, names, bad input."""

from __future__ import annotations

import itertools
import json

import pytest
from reproduce_helpers import SWEEPS

from classbalanced.reproduce.published import paper_cb_setting
from classbalanced.reproduce.sweep import expand_sweep, load_sweep, parse_sweep

FACTORS = [200, 100, 50, 20, 10, 1]
BETAS = [0.9, 0.99, 0.999, 0.9999]
GAMMAS = [0.5, 1.0, 2.0]


def _expected_table2_settings() -> set[tuple]:
    """(IF, loss, beta, gamma) of Table 2's search, written out independently."""
    expected = set()
    for factor in FACTORS:
        expected |= {(factor, loss, 0.0, None) for loss in ("softmax", "sigmoid")}
        expected |= {(factor, "focal", 0.0, g) for g in GAMMAS}
        if factor == 1:  # equal counts: every beta gives weight 1
            continue
        for loss, beta in itertools.product(("softmax", "sigmoid"), BETAS):
            expected.add((factor, loss, beta, None))
        for beta, g in itertools.product(BETAS, GAMMAS):
            expected.add((factor, "focal", beta, g))
    return expected


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_table2_grid(dataset):
    runs = expand_sweep(load_sweep(SWEEPS / f"{dataset}_table2.toml"))
    expected = _expected_table2_settings()
    assert len(expected) == 6 * 5 + 5 * (2 * 4 + 4 * 3) == 130
    assert len(runs) == len(expected)
    got = {
        (
            int(r.config.imbalance_factor),
            r.config.loss,
            r.config.beta,
            r.config.gamma if r.config.loss == "focal" else None,
        )
        for r in runs
    }
    assert got == expected
    names = [r.name for r in runs]
    assert len(set(names)) == len(names)
    configs = {json.dumps(r.config.to_dict(), sort_keys=True) for r in runs}
    assert len(configs) == len(runs)
    for r in runs:
        assert (r.config.dataset, r.config.epochs, r.config.model) == (dataset, 200, "resnet32")
        assert r.config.data_dir == "data" and r.config.seed == 0
    # every column's published class-balanced setting is on the grid
    for factor in FACTORS:
        setting = paper_cb_setting(dataset, factor)
        beta = setting["beta"] or 0.0
        assert any(
            r.config.imbalance_factor == factor
            and r.config.loss == setting["loss"]
            and r.config.beta == beta
            and (setting["gamma"] is None or r.config.gamma == setting["gamma"])
            for r in runs
        ), (dataset, factor)


def test_smoke_grid():
    runs = expand_sweep(load_sweep(SWEEPS / "smoke.toml"))
    assert [r.name for r in runs] == [
        "digits-if10-softmax-b0.0-s0",
        "digits-if10-softmax-b0.0-s1",
        "digits-if10-focal-b0.999-g1.0-s0",
        "digits-if10-focal-b0.999-g1.0-s1",
    ]
    assert all(r.config.epochs == 2 and r.config.model == "resnet8" for r in runs)


def test_expansion_is_deterministic_and_in_file_order():
    spec = load_sweep(SWEEPS / "cifar10_table2.toml")
    first = [r.name for r in expand_sweep(spec)]
    assert first == [r.name for r in expand_sweep(load_sweep(SWEEPS / "cifar10_table2.toml"))]
    assert first[:2] == ["cifar10-if200-softmax-b0.0-s0", "cifar10-if200-sigmoid-b0.0-s0"]
    assert "cifar10-if100-focal-b0.9999-g1.0-s0" in first


def test_duplicates_across_blocks_are_removed():
    spec = parse_sweep(
        {
            "base": {"dataset": "cifar10", "epochs": 4},
            "grid": [
                {"loss": ["softmax", "focal"], "beta": [0, 0.99], "seed": [0, 1]},
                {"loss": ["focal"], "beta": [0.99, 0.999], "seed": [1]},  # (focal, 0.99, 1) again
                {"loss": "softmax", "beta": 0.0, "seed": 0, "gamma": 1},  # default gamma: again
            ],
            "include": [{"loss": "sigmoid", "seed": 5}, {"loss": "softmax", "seed": 0}],
        }
    )
    runs = expand_sweep(spec)
    # 8 + 1 new (focal 0.999 seed 1) + 0 + 1 new (sigmoid seed 5)
    assert len(runs) == 10
    assert len({r.name for r in runs}) == 10
    assert runs[-1].name == "cifar10-if100-sigmoid-b0.0-s5"


def test_single_grid_table_and_scalars():
    spec = parse_sweep(
        {"base": {"dataset": "digits"}, "grid": {"seed": [0, 1, 2], "loss": "focal"}}
    )
    assert [r.name for r in expand_sweep(spec)] == [
        f"digits-if1-focal-b0.0-g1.0-s{s}" for s in range(3)
    ]
    only_base = expand_sweep(parse_sweep({"base": {"dataset": "digits", "loss": "sigmoid"}}))
    assert [r.name for r in only_base] == ["digits-if1-sigmoid-b0.0-s0"]


def test_names_carry_keys_that_change_the_run():
    # lr 0.1 is what the run gets without the key (0.1 * 128 / 128): not in the name;
    # model resnet8 differs from the default resnet32: in the name even though it is one value
    spec = parse_sweep(
        {"base": {"dataset": "cifar10"}, "grid": [{"lr": [0.05, 0.1], "model": ["resnet8"]}]}
    )
    assert [r.name for r in expand_sweep(spec)] == [
        "cifar10-if100-softmax-b0.0-lr_0.05-model_resnet8-s0",
        "cifar10-if100-softmax-b0.0-model_resnet8-s0",
    ]
    # gamma varied for softmax: a gamma other than the default is named
    spec = parse_sweep({"base": {"dataset": "cifar10"}, "grid": {"gamma": [1.0, 2.0]}})
    assert [r.name for r in expand_sweep(spec)] == [
        "cifar10-if100-softmax-b0.0-s0",
        "cifar10-if100-softmax-b0.0-g2.0-s0",
    ]
    # a key set in [base] is the reference: only other values are named
    spec = parse_sweep({"base": {"dataset": "digits", "lr": 0.05}, "grid": {"lr": [0.05, 0.2]}})
    assert [r.name for r in expand_sweep(spec)] == [
        "digits-if1-softmax-b0.0-s0",
        "digits-if1-softmax-b0.0-lr_0.2-s0",
    ]


def test_a_key_the_run_cannot_do_without_is_named():
    """Without ``train_data`` an npz run is not a config at all: the key changes the run."""
    spec = parse_sweep(
        {
            "base": {"dataset": "npz", "test_data": "test.npz"},
            "grid": {"train_data": ["a.npz", "b/a.npz"]},
        }
    )
    assert [r.name for r in expand_sweep(spec)] == [
        "npz-if1-softmax-b0.0-train_data_a.npz-s0",
        "npz-if1-softmax-b0.0-train_data_b_a.npz-s0",
    ]


def test_long_names_fit_a_file_name():
    """Long paths as values: NAME.toml and the temporary files beside it must stay under
    255 bytes; names that differ only far out stay apart, and stay the same run to run."""
    long = "/data/" + "d" * 150
    grid = {"train_data": [f"{long}/a.npz", f"{long}/b.npz"], "test_data": f"{long}/t.npz"}
    spec = {"base": {"dataset": "npz"}, "grid": {**grid, "seed": [3]}}
    names = [r.name for r in expand_sweep(parse_sweep(spec))]
    assert [len(n) for n in names] == [200, 200] and len(set(names)) == 2
    assert all(n.startswith("npz-if1-softmax-b0.0-test_data__data_ddd") for n in names)
    assert all(n.endswith("-s3") for n in names)
    assert names == [r.name for r in expand_sweep(parse_sweep(spec))]


def test_names_stay_stable_when_a_grid_grows():
    base = {"dataset": "digits", "imbalance_factor": 10, "epochs": 2}
    first = [{"loss": ["softmax", "focal"], "beta": [0.0, 0.999], "seed": [0]}]
    before = {
        r.name: r.config.to_dict() for r in expand_sweep(parse_sweep({"base": base, "grid": first}))
    }
    grown = [
        {
            "loss": ["softmax", "focal"],
            "beta": [0.0, 0.999],
            "seed": [0, 1],  # a seed added
            "weight_decay": [2e-4, 5e-4],  # a key added: 2e-4 is the default
            "batch_size": [128, 64],  # another: 128 is the default
        }
    ]
    after = {
        r.name: r.config.to_dict() for r in expand_sweep(parse_sweep({"base": base, "grid": grown}))
    }
    assert len(after) == 4 * 2 * 2 * 2
    for name, config in before.items():  # every earlier run keeps its name and config
        assert after[name] == config
    assert "digits-if10-softmax-b0.0-batch_size_64-weight_decay_0.0005-s1" in after


@pytest.mark.parametrize(
    "doc, error, match",
    [
        ({"base": {"datset": "cifar10"}}, ValueError, "unknown key 'datset'"),
        ({"grid": {"bta": [0.9]}}, ValueError, "unknown key 'bta'"),
        ({"base": {"out": "x"}}, ValueError, "set by the sweep"),
        ({"grid": {"resume": [True]}}, ValueError, "set by the sweep"),
        ({"grid": {"beta": []}}, ValueError, "empty list"),
        ({"grid": {"beta": [0.9, 1.5]}}, ValueError, r"beta=1\.5.*beta must be in \[0, 1\)"),
        ({"grid": {"epochs": ["ten"]}}, TypeError, "epochs"),
        ({"grids": {}}, ValueError, "unknown table"),
        ({"sweep": {"nme": "x"}}, ValueError, "unknown key"),
        ({"base": [1, 2]}, TypeError, r"\[base\]"),
    ],
)
def test_bad_sweeps_are_refused(doc, error, match):
    with pytest.raises(error, match=match):
        expand_sweep(parse_sweep(doc))


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="sweep file not found"):
        load_sweep(tmp_path / "nope.toml")
    yaml = tmp_path / "s.yaml"
    yaml.write_text("base: {}\n")
    with pytest.raises(ValueError, match="must be TOML"):
        load_sweep(yaml)
    broken = tmp_path / "s.toml"
    broken.write_text("[base\n")
    with pytest.raises(ValueError, match="cannot parse sweep file"):
        load_sweep(broken)
    dashed = tmp_path / "d.toml"
    dashed.write_text('[base]\ndataset = "digits"\nimbalance-factor = 10\n')
    assert expand_sweep(load_sweep(dashed))[0].config.imbalance_factor == 10.0


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_published_preset_holds_exactly_the_published_cells(dataset):
    from classbalanced.reproduce.published import (
        FOCAL_GAMMAS,
        IMBALANCE_FACTORS,
        published_error,
    )

    runs = expand_sweep(load_sweep(SWEEPS / f"{dataset}_table2_published.toml"))
    cells = {
        (r.config.imbalance_factor, r.config.loss, r.config.beta, r.config.gamma) for r in runs
    }
    wanted = set()
    for factor in IMBALANCE_FACTORS:
        wanted |= {(factor, "softmax", 0.0, 1.0), (factor, "sigmoid", 0.0, 1.0)}
        wanted |= {(factor, "focal", 0.0, g) for g in FOCAL_GAMMAS}
        setting = paper_cb_setting(dataset, factor)
        gamma = 1.0 if setting["gamma"] is None else setting["gamma"]
        wanted.add((factor, setting["loss"], setting["beta"] or 0.0, gamma))
    assert cells == wanted and len(runs) == len(wanted) == 35
    assert all(r.config.epochs == 200 and r.config.model == "resnet32" for r in runs)
    for factor, loss, beta, gamma in cells:  # every run is a cell the paper publishes
        method = "class_balanced" if beta > 0 or (factor == 1 and loss == "sigmoid") else loss
        assert published_error(dataset, factor, method, gamma=gamma) is not None


@pytest.mark.parametrize("dataset", ["inat2017", "inat2018", "imagenet"])
def test_table3_presets(dataset):
    runs = expand_sweep(load_sweep(SWEEPS / f"{dataset}_table3.toml"))
    assert [(r.config.loss, r.config.beta, r.config.gamma) for r in runs] == [
        ("softmax", 0.0, 1.0),
        ("focal", 0.999, 0.5),
    ]
    assert all(r.config.model == "resnet50" and r.config.epochs == 90 for r in runs)
