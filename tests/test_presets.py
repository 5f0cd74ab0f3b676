"""Every preset (src/classbalanced/presets/, configs/ of the clone) loads, resolves and
means what its name says; --config finds one by name; `classbalanced presets` lists them."""

from pathlib import Path

import pytest

from classbalanced import presets
from classbalanced.cli import main
from classbalanced.config import config_from_sources
from classbalanced.reproduce.sweep import load_sweep

ROOT = Path(presets.__file__).parent
CONFIGS = sorted(ROOT.glob("*.*ml"))
SWEEPS = sorted((ROOT / "sweeps").glob("*.toml"))


def test_presets_exist():
    names = {p.name for p in CONFIGS}
    for ds in ("cifar10", "cifar100"):
        assert {f"{ds}_balanced.toml", f"{ds}_lt_beta0.toml", f"{ds}_lt_cb.toml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_preset_resolves(path):
    cfg = config_from_sources(path).resolved()
    if "balanced" in path.name:
        assert cfg.imbalance_factor == 1.0 and cfg.decay_factors == [0.1, 0.01]
    if "_lt_" in path.name and path.name.startswith("cifar"):
        assert cfg.imbalance_factor > 1 and cfg.decay_factors == [0.01, 0.0001]
    if "beta0" in path.name:
        assert cfg.beta == 0.0
    if "_lt_cb" in path.name and path.name.startswith("cifar"):
        assert cfg.beta == 0.9999
    if path.name.startswith("cifar"):
        assert (cfg.model, cfg.epochs, cfg.batch_size, cfg.lr) == ("resnet32", 200, 128, 0.1)
        assert (cfg.warmup_epochs, cfg.decay_epochs, cfg.weight_decay) == (5, [160, 180], 2e-4)


@pytest.mark.parametrize("dataset", ["inat2017", "inat2018", "imagenet"])
def test_large_scale_presets_follow_the_paper(dataset):
    root = ROOT
    cb = config_from_sources(root / f"{dataset}_cb_focal.toml").resolved()
    soft = config_from_sources(root / f"{dataset}_softmax.toml").resolved()
    assert (cb.loss, cb.beta, cb.gamma) == ("focal", 0.999, 0.5)
    assert (soft.loss, soft.beta) == ("softmax", 0.0)
    for cfg in (cb, soft):
        assert cfg.model == "resnet50" and cfg.epochs == 90 and cfg.nesterov
        assert cfg.lr == pytest.approx(0.1 * cfg.batch_size / 256)
        assert cfg.weight_decay == 1e-4 and cfg.no_decay_bias_and_norm
        assert cfg.warmup_epochs == 5 and cfg.decay_epochs == [30, 60, 80]
        assert cfg.decay_factors == pytest.approx([0.1, 0.01, 0.001])


@pytest.mark.parametrize(
    ("dataset", "model", "pretrained"),
    [("imagenet_lt", "resnet50", False), ("places_lt", "resnet152", True)],
)
def test_list_benchmark_presets(dataset, model, pretrained):
    root = ROOT
    for loss in ("softmax", "cb_focal"):
        path = root / f"{dataset}_{loss}.toml"
        cfg = config_from_sources(path).resolved()
        assert (cfg.dataset, cfg.model, cfg.pretrained) == (dataset, model, pretrained)
        assert cfg.imbalance_factor == 1.0  # the lists are the long-tailed sets
        assert (cfg.loss, cfg.beta) == (("softmax", 0.0) if loss == "softmax" else ("focal", 0.999))
        text = path.read_text()
        assert "Liu et al." in text and "Kang et al." in text  # sources cited


def test_the_clone_s_configs_folder_is_the_package_s_presets():
    configs = Path(__file__).resolve().parents[1] / "configs"
    assert configs.resolve() == ROOT.resolve()
    assert len(CONFIGS) == 17 and len(SWEEPS) == 9


@pytest.mark.parametrize(
    "name", ["cifar10_lt_cb", "cifar10_lt_cb.toml", "configs/cifar10_lt_cb.toml"]
)
def test_a_preset_is_found_by_name_where_no_file_has_it(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the clone: no configs/ here
    assert presets.find_config(name) == ROOT / "cifar10_lt_cb.toml"
    assert config_from_sources(name).beta == 0.9999
    assert presets.find_config("digits_demo") == ROOT / "digits_demo.yaml"


@pytest.mark.parametrize(
    "name", ["cifar10_table2", "cifar10_table2.toml", "configs/sweeps/cifar10_table2.toml"]
)
def test_a_sweep_grid_is_found_by_name(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = load_sweep(name)
    assert spec.name == "cifar10_table2"
    assert Path(spec.source) == ROOT / "sweeps" / "cifar10_table2.toml"
    assert presets.preset_path("cifar10_table2") is None  # a grid is not a training preset


def test_a_file_of_that_name_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cifar10_lt_cb").write_text('dataset = "digits"\n')
    with pytest.raises(ValueError, match="must end in .toml"):  # the file, not the preset
        config_from_sources("cifar10_lt_cb")
    (tmp_path / "cifar10_lt_cb.toml").write_text('dataset = "digits"\nbeta = 0.5\n')
    assert config_from_sources("cifar10_lt_cb.toml").beta == 0.5


def test_an_unknown_name_is_one_line_listing_the_presets(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", "cifar10_lt_cbb", "--out", "o"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("classbalanced: error: config file not found")
    assert all(p.stem in err[0] for p in CONFIGS)
    assert main(["sweep", "--config", "nope", "--out", "o", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(p.stem in err[0] for p in SWEEPS)
    assert not list(tmp_path.iterdir())  # nothing written


def test_presets_command_lists_every_preset_with_its_first_comment_line(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "train --config NAME:" and "sweep --config NAME:" in out
    listed = {line.split()[0]: line.split(None, 1)[1] for line in out if line.startswith("  ")}
    assert set(listed) == {p.stem for p in [*CONFIGS, *SWEEPS]}
    for path in [*CONFIGS, *SWEEPS]:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# ") and listed[path.stem] == first[2:].rstrip(":")
    descriptions = [listed[p.stem] for p in [*CONFIGS, *SWEEPS]]
    assert len(set(descriptions)) == len(descriptions)  # each says which one it is
