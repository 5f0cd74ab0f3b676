"""``hubconf.py``: torch.hub.load from a local clone (``source="local"``)."""

from __future__ import annotations

from pathlib import Path

import torch

import classbalanced as cb
from classbalanced.models.registry import build_model

REPO = Path(__file__).resolve().parents[2]


def test_hub_loads_registered_models():
    model = torch.hub.load(str(REPO), "resnet32", source="local", num_classes=10)
    reference = build_model("resnet32", 10)
    assert type(model) is type(reference) and model.fc.out_features == 10
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in reference.parameters()
    )
    v2 = torch.hub.load(str(REPO), "resnet56_v2", source="local", num_classes=4)
    assert (v2.depth, v2.version) == (56, "v2")
    any_depth = torch.hub.load(str(REPO), "model", source="local", name="resnet26", num_classes=4)
    assert any_depth.depth == 26
    grey = torch.hub.load(str(REPO), "simple_cnn", source="local", num_classes=3, in_channels=1)
    assert grey(torch.zeros(2, 1, 8, 8)).shape == (2, 3)


def test_hub_load_run(use_run):
    trained = torch.hub.load(str(REPO), "load_run", source="local", run_dir=str(use_run.out))
    direct = cb.load_run(use_run.out)
    files = sorted(use_run.test.glob("5/*.png"))[:4]
    assert torch.equal(trained.logits(files), direct.logits(files))
