"""The Criterion protocol: every registered loss offers the trainer the same members, and the
trainer reads them (no probing with getattr / hasattr, no branching on loss names)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from classbalanced.config import TrainConfig
from classbalanced.engine.distributed import DistContext
from classbalanced.engine.network import build_network, build_training_model
from classbalanced.losses import ClassBalancedLoss, Criterion, build_loss, prior_bias
from classbalanced.losses.criterion import CRITERION_MEMBERS, missing_members
from classbalanced.losses.registry import LOSS_REGISTRY, register_loss
from classbalanced.models import NormedLinear
from classbalanced.models.registry import MODEL_REGISTRY, classifier, register_model

COUNTS = [50, 20, 5]


@pytest.mark.parametrize("name", sorted(LOSS_REGISTRY))
def test_every_registered_loss_is_a_criterion(name):
    loss = LOSS_REGISTRY[name](COUNTS, beta=0.9, gamma=1.0, reduction="mean")
    assert isinstance(loss, Criterion), missing_members(loss)
    assert isinstance(loss.normalized_classifier, bool)
    assert isinstance(loss.uses_prior_bias, bool)
    weight = torch.tensor([0.5, 1.0, 2.0])
    loss.set_weight(weight)
    z, y = torch.randn(6, 3, generator=torch.Generator().manual_seed(0)), torch.arange(6) % 3
    weighted = loss(z, y)
    loss.set_weight(None)
    assert not torch.equal(weighted, loss(z, y))  # set_weight changes the loss it computes


def _without(member: str) -> type:
    """A class with every Criterion member except ``member``."""
    body = {
        "normalized_classifier": False,
        "uses_prior_bias": False,
        "set_weight": lambda self, weight: None,
        "__call__": lambda self, logits, targets: logits.sum(),
    }
    del body[member]
    return type(f"Without_{member}", (), body)


@pytest.mark.parametrize("member", CRITERION_MEMBERS)
def test_a_module_lacking_a_member_is_not_a_criterion_and_is_refused(member):
    obj = _without(member)()
    assert not isinstance(obj, Criterion)
    assert missing_members(obj) == [member]
    register_loss("lacking", lambda counts, **_: _without(member)())
    try:
        with pytest.raises(TypeError, match=f"loss 'lacking' built a Without_{member} without "):
            build_loss("lacking", COUNTS)
    finally:
        LOSS_REGISTRY.pop("lacking")


class _Flagged(ClassBalancedLoss):
    """Softmax CB loss that asks for a cosine classifier and the bias prior."""

    normalized_classifier = False
    uses_prior_bias = True


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(model="resnet8", device="cpu", **kw)


def test_the_network_follows_the_criterions_members():
    plain = ClassBalancedLoss(COUNTS, beta=0.0, loss_type="softmax")
    flagged = _Flagged(COUNTS, beta=0.0, loss_type="softmax")
    model, groups = build_training_model(_cfg(), COUNTS, 3, flagged, DistContext())
    torch.testing.assert_close(classifier(model).bias.detach(), prior_bias(3), rtol=0, atol=0)
    assert [p is classifier(model).bias for p in groups[-1]["params"]] == [True]
    assert groups[-1]["weight_decay"] == 0.0
    model, _ = build_training_model(_cfg(), COUNTS, 3, plain, DistContext())
    assert not torch.equal(classifier(model).bias.detach(), prior_bias(3))
    cosine = _Flagged(COUNTS, beta=0.0, loss_type="softmax")
    cosine.normalized_classifier, cosine.uses_prior_bias = True, False
    assert isinstance(classifier(build_network(_cfg(), COUNTS, 3, cosine)), NormedLinear)
    assert isinstance(classifier(build_network(_cfg(), COUNTS, 3, plain)), nn.Linear)


def test_a_model_without_a_classifier_is_one_line_when_the_loss_needs_it():
    register_model("no_fc", lambda n, *, in_channels: nn.Sequential(nn.Flatten(), nn.LazyLinear(n)))
    try:
        flagged = _Flagged(COUNTS, beta=0.0, loss_type="softmax")
        with pytest.raises(ValueError, match=r"expected the model's classifier at model\.fc"):
            build_training_model(TrainConfig(model="no_fc"), COUNTS, 3, flagged, DistContext())
    finally:
        MODEL_REGISTRY.pop("no_fc")
