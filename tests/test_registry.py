"""The one registry helper (classbalanced.registry) and its four users: losses, models, data
sets, launchers."""

from __future__ import annotations

import pytest
import torch

from classbalanced.data.registry import available_datasets, dataset_options, is_large_dataset
from classbalanced.losses import available_losses, build_loss, loss_options
from classbalanced.losses.comparison import ldam_margins
from classbalanced.models.registry import MODEL_REGISTRY, check_model_name
from classbalanced.registry import Registry


def test_register_lookup_and_refusals():
    reg = Registry("widget")
    reg.register("a", len, description="first")

    @reg.register("b")
    def b():
        return 2

    assert reg.names() == ["a", "b"] and reg.lookup("b") is b
    assert reg.info["a"] == {"description": "first"}
    with pytest.raises(ValueError, match="unknown widget 'c': expected one of a, b"):
        reg.lookup("c")
    with pytest.raises(ValueError, match="already registered 'a'"):
        reg.register("a", len)
    with pytest.raises(TypeError, match="callable widget builder, got int"):
        reg.register("d", 3)
    with pytest.raises(ValueError, match="non-empty widget name"):
        reg.register(" e", len)
    assert "d" not in reg and "d" not in reg.info
    reg.pop("a")
    assert "a" not in reg.info and reg.names() == ["b"]


def test_case_insensitive_registry():
    reg = Registry("model", case_insensitive=True)
    reg.register("Net", len)
    assert reg.lookup("NET") is len and reg.names() == ["net"]
    assert reg.pop("NeT") is len  # any spelling that looks it up removes it, info included
    assert reg.names() == [] and reg.info == {}
    reg.register("net", len)  # the name is free again


def test_the_four_registries_share_the_helper():
    from classbalanced.data import registry as data_registry
    from classbalanced.launch import LAUNCHER_REGISTRY, available_launchers
    from classbalanced.losses import registry as losses

    assert isinstance(LAUNCHER_REGISTRY, Registry)
    assert available_launchers() == ["local", "ray", "slurm"]
    assert LAUNCHER_REGISTRY.info["local"]["options"] == {"jobs"}
    assert isinstance(losses.LOSS_REGISTRY, Registry)
    assert isinstance(MODEL_REGISTRY, Registry)
    assert isinstance(data_registry.DATASET_REGISTRY, Registry)
    assert {"cifar10", "digits", "npz", "folder", "inat2018", "imagenet"} <= set(
        available_datasets()
    )
    assert dataset_options("folder") == ("train_data", "test_data", "image_size")
    assert is_large_dataset("inat2017") and not is_large_dataset("digits")
    assert check_model_name("resnet20") == "resnet20"
    with pytest.raises(ValueError, match="6n\\+2"):
        check_model_name("resnet21")


def test_loss_options_reach_the_loss():
    assert loss_options("ldam") == {"max_m": 0.5, "s": 30.0}
    assert loss_options("logit_adjusted") == {"tau": 1.0}
    assert all(loss_options(name) == {} for name in ("softmax", "sigmoid", "focal"))
    counts = [100, 10, 1]
    loss = build_loss("ldam", counts, max_m=0.2, s=5.0)
    torch.testing.assert_close(loss.margins.double(), ldam_margins(counts, max_m=0.2).double())
    assert loss.s == 5.0
    assert build_loss("logit_adjusted", counts, tau=0.5).tau == 0.5
    with pytest.raises(ValueError, match="loss 'softmax' has no option tau: expected one of: none"):
        build_loss("softmax", counts, tau=1.0)
    with pytest.raises(ValueError, match="has no option margin: expected one of: max_m, s"):
        build_loss("ldam", counts, margin=1.0)
    assert set(available_losses()) >= {"ldam", "logit_adjusted"}
