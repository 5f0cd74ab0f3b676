"""Property-based tests (hypothesis): every input gives a correct finite result or a clear error."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from classbalanced import class_balanced_loss, class_balanced_weights, effective_number

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

counts_st = st.lists(st.integers(min_value=1, max_value=10**7), min_size=1, max_size=12)
beta_st = st.one_of(
    st.sampled_from([0.0, 0.9, 0.99, 0.999, 0.9999, 0.999999, 1 - 1e-12]),
    st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)


@SETTINGS
@given(counts=counts_st, beta=beta_st)
def test_weights_are_finite_positive_and_sum_to_c(counts, beta):
    e = effective_number(counts, beta)
    n = torch.tensor(counts, dtype=torch.float64)
    assert torch.all(torch.isfinite(e))
    assert torch.all(e >= 1 - 1e-9) and torch.all(e <= n * (1 + 1e-9))
    w = class_balanced_weights(counts, beta)
    assert torch.all(torch.isfinite(w)) and torch.all(w > 0)
    assert float(w.double().sum()) == pytest.approx(len(counts), rel=1e-5)
    # a class with more samples never gets a larger weight
    order = np.argsort(counts, kind="stable")
    ws = w.numpy()[order]
    assert np.all(np.diff(ws) <= 1e-6 * ws.max())


@SETTINGS
@given(
    beta=st.floats(allow_nan=True, allow_infinity=True),
    counts=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=4),
)
def test_bad_weight_inputs_raise_clear_errors(beta, counts):
    try:
        w = class_balanced_weights(counts, beta)
    except (ValueError, TypeError) as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert torch.all(torch.isfinite(w))
        assert 0 <= beta < 1 and all(math.isfinite(c) and c > 0 for c in counts)


@st.composite
def loss_inputs(draw):
    n = draw(st.integers(min_value=0, max_value=6))
    c = draw(st.integers(min_value=1, max_value=7))
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]))
    scale = draw(st.sampled_from([1.0, 10.0, 100.0, 1e4]))
    seed = draw(st.integers(min_value=0, max_value=2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    logits = (
        (torch.randn(n, c, generator=g, dtype=torch.float64) * scale).clamp(-6e4, 6e4).to(dtype)
    )
    targets = torch.randint(0, c, (n,), generator=g)
    counts = draw(st.lists(st.integers(min_value=1, max_value=5000), min_size=c, max_size=c))
    beta = draw(st.sampled_from([0.0, 0.9, 0.999, 0.9999]))
    gamma = draw(st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 5.0]))
    loss_type = draw(st.sampled_from(["softmax", "sigmoid", "focal"]))
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    return logits, targets, counts, beta, gamma, loss_type, reduction


@SETTINGS
@given(loss_inputs())
def test_losses_finite_with_finite_gradients(args):
    logits, targets, counts, beta, gamma, loss_type, reduction = args
    logits.requires_grad_(True)
    value = class_balanced_loss(
        logits, targets, counts, beta=beta, loss_type=loss_type, gamma=gamma, reduction=reduction
    )
    assert value.dtype == (torch.float64 if logits.dtype == torch.float64 else torch.float32)
    assert torch.all(torch.isfinite(value)) and torch.all(value >= 0)
    value.sum().backward()
    assert torch.all(torch.isfinite(logits.grad.float()))
    # the same numbers as the float64 definition (for moderate logits, where it is itself exact)
    z = logits.detach().double()
    if z.numel() and z.abs().max() < 30:
        w = class_balanced_weights(counts, beta, dtype=torch.float64)[targets]
        onehot = F.one_hot(targets, z.shape[1]).double()
        if loss_type == "softmax":
            per = F.cross_entropy(z, targets, reduction="none") * w
        else:
            p = torch.sigmoid(z)
            pt = onehot * p + (1 - onehot) * (1 - p)
            g = gamma if loss_type == "focal" else 0.0
            per = ((1 - pt) ** g * -torch.log(pt)).sum(1) * w
        expected = (
            per
            if reduction == "none"
            else per.sum()
            if reduction == "sum"
            else per.sum() / len(per)
        )
        torch.testing.assert_close(value.double(), expected, rtol=2e-5, atol=1e-5)


@SETTINGS
@given(
    shape=st.sampled_from([(3,), (2, 3, 1), (0, 2)]),
    tdtype=st.sampled_from([torch.int64, torch.float32, torch.bool]),
    loss_type=st.sampled_from(["softmax", "sigmoid", "focal", "bogus"]),
)
def test_malformed_targets_raise_one_line_errors(shape, tdtype, loss_type):
    logits = torch.zeros(2, 3)
    targets = torch.zeros(shape, dtype=tdtype)
    with pytest.raises((ValueError, TypeError)) as info:
        class_balanced_loss(logits, targets, [1, 2, 3], beta=0.9, loss_type=loss_type)
    assert "\n" not in str(info.value)
