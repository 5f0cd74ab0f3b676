"""Every preset in configs/ loads, resolves and means what its name says."""

from pathlib import Path

import pytest

from classbalanced.config import config_from_sources

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.*ml"))


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
    root = Path(__file__).resolve().parents[1] / "configs"
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
    root = Path(__file__).resolve().parents[1] / "configs"
    for loss in ("softmax", "cb_focal"):
        path = root / f"{dataset}_{loss}.toml"
        cfg = config_from_sources(path).resolved()
        assert (cfg.dataset, cfg.model, cfg.pretrained) == (dataset, model, pretrained)
        assert cfg.imbalance_factor == 1.0  # the lists are the long-tailed sets
        assert (cfg.loss, cfg.beta) == (("softmax", 0.0) if loss == "softmax" else ("focal", 0.999))
        text = path.read_text()
        assert "Liu et al." in text and "Kang et al." in text  # sources cited
