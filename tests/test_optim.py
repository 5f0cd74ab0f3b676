import pytest
from torch import nn

from classbalanced.optim import parameter_groups


def test_parameter_groups():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 3))
    decay, skip = parameter_groups(net, 2e-4, no_decay=[net[3].bias])
    assert decay["weight_decay"] == 2e-4 and skip["weight_decay"] == 0.0
    ids = lambda g: {id(p) for p in g["params"]}  # noqa: E731
    assert ids(skip) == {id(net[3].bias)}
    assert ids(decay) | ids(skip) == {id(p) for p in net.parameters()}
    decay, skip = parameter_groups(net, 1e-4, bias_and_norm=True)
    assert ids(decay) == {id(net[0].weight), id(net[3].weight)}
    assert ids(skip) == {id(net[0].bias), id(net[1].weight), id(net[1].bias), id(net[3].bias)}
    assert ids(parameter_groups(net, 1e-4, no_decay=["3.bias"])[1]) == {id(net[3].bias)}
    with pytest.raises(ValueError, match="unknown parameter 'fc.bias'"):
        parameter_groups(net, 1e-4, no_decay=["fc.bias"])


def test_parameter_groups_refuse_what_would_be_silently_ignored_or_reversed():
    net = nn.Linear(4, 3)
    other = nn.Linear(4, 3)  # e.g. a copy of the model: its bias is not the model's
    with pytest.raises(ValueError, match="not a parameter of the model"):
        parameter_groups(net, 1e-4, no_decay=[other.bias])
    for bad in (-1e-4, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=f"expected a finite weight_decay >= 0, got {bad}"):
            parameter_groups(net, bad)
