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
    if "_lt_" in path.name:
        assert cfg.imbalance_factor > 1 and cfg.decay_factors == [0.01, 0.0001]
    if "beta0" in path.name:
        assert cfg.beta == 0.0
    if "_lt_cb" in path.name:
        assert cfg.beta == 0.9999
    if path.name.startswith("cifar"):
        assert (cfg.model, cfg.epochs, cfg.batch_size, cfg.lr) == ("resnet32", 200, 128, 0.1)
        assert (cfg.warmup_epochs, cfg.decay_epochs, cfg.weight_decay) == (5, [160, 180], 2e-4)
