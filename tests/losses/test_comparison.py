import io
import math

import pytest
import torch
import torch.nn.functional as F

from classbalanced.losses import available_losses, build_loss, softmax_cross_entropy
from classbalanced.losses.comparison import (
    BalancedSoftmaxLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    balanced_softmax_loss,
    ldam_loss,
    ldam_margins,
    logit_adjusted_loss,
    post_hoc_logit_adjustment,
)
from classbalanced.schedules import ReweightSchedule
from classbalanced.weights import class_balanced_weights

COUNTS = [500, 120, 40, 9, 2]
REDUCTIONS = ["mean", "sum", "none"]
# float32: absolute error ~ eps * |logits| in log-sum-exp (tiny losses of confident examples)
DTYPES = [(torch.float32, 2e-6, 2e-5), (torch.float64, 1e-12, 1e-12)]


# ---------------------------------------------------------------------------
# float64 loop references written straight from the papers' formulas
# ---------------------------------------------------------------------------


def _ce(row, label):
    m = max(row)
    return m + math.log(sum(math.exp(v - m) for v in row)) - row[label]


def _per_example(z, y, w, adjust_row):
    """``w[y_b] * CE(adjust_row(z_b, y_b), y_b)`` for every example b."""
    per = []
    for row, label in zip(z.tolist(), y.tolist(), strict=True):
        weight = 1.0 if w is None else w[label]
        per.append(weight * _ce(adjust_row(row, label), label))
    return per


def ref_margins(counts, max_m):
    # Delta_j = C / n_j^(1/4), with C such that the largest margin is max_m
    raw = [1.0 / n**0.25 for n in counts]
    scale = max_m / max(raw)
    return [scale * r for r in raw]


def ref_ldam(z, y, counts, w, max_m, s):
    delta = ref_margins(counts, max_m)

    def adjust(row, label):
        return [s * (v - (delta[j] if j == label else 0.0)) for j, v in enumerate(row)]

    return _per_example(z, y, w, adjust)


def ref_logit_adjusted(z, y, counts, w, tau):
    total = sum(counts)
    log_pi = [math.log(n / total) for n in counts]

    def adjust(row, _label):
        return [v + tau * lp for v, lp in zip(row, log_pi, strict=True)]

    return _per_example(z, y, w, adjust)


def ref_balanced_softmax(z, y, counts, w):
    log_n = [math.log(n) for n in counts]

    def adjust(row, _label):
        return [v + ln for v, ln in zip(row, log_n, strict=True)]

    return _per_example(z, y, w, adjust)


def reduce_ref(per, reduction):
    if reduction == "none":
        return torch.tensor(per, dtype=torch.float64)
    total = sum(per)
    return torch.tensor(total if reduction == "sum" else total / len(per), dtype=torch.float64)


def make_batch(n=9, c=5, seed=0, scale=3.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(n, c, generator=g, dtype=torch.float64) * scale).to(dtype)
    y = torch.randint(0, c, (n,), generator=g)
    w = torch.rand(c, generator=g, dtype=torch.float64) * 2 + 0.1
    return z, y, w


def _weights(w, weighted, dtype):
    return (w.to(dtype), w.tolist()) if weighted else (None, None)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype, rtol, atol", DTYPES)
@pytest.mark.parametrize("max_m, s", [(0.5, 30.0), (0.3, 1.0), (1.2, 5.0)])
def test_ldam_matches_loop_reference(max_m, s, dtype, rtol, atol, reduction, weighted):
    z, y, w = make_batch(dtype=dtype, scale=0.5 if s == 30.0 else 3.0)
    weight, w_list = _weights(w, weighted, dtype)
    got = ldam_loss(z, y, COUNTS, weight, max_m=max_m, s=s, reduction=reduction)
    assert got.dtype == dtype
    expected = reduce_ref(ref_ldam(z.double(), y, COUNTS, w_list, max_m, s), reduction)
    torch.testing.assert_close(got.double(), expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype, rtol, atol", DTYPES)
@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
def test_logit_adjusted_matches_loop_reference(tau, dtype, rtol, atol, reduction, weighted):
    z, y, w = make_batch(seed=1, dtype=dtype)
    weight, w_list = _weights(w, weighted, dtype)
    got = logit_adjusted_loss(z, y, COUNTS, weight, tau=tau, reduction=reduction)
    assert got.dtype == dtype
    expected = reduce_ref(ref_logit_adjusted(z.double(), y, COUNTS, w_list, tau), reduction)
    torch.testing.assert_close(got.double(), expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype, rtol, atol", DTYPES)
def test_balanced_softmax_matches_loop_reference(dtype, rtol, atol, reduction, weighted):
    z, y, w = make_batch(seed=2, dtype=dtype)
    weight, w_list = _weights(w, weighted, dtype)
    got = balanced_softmax_loss(z, y, COUNTS, weight, reduction=reduction)
    assert got.dtype == dtype
    expected = reduce_ref(ref_balanced_softmax(z.double(), y, COUNTS, w_list), reduction)
    torch.testing.assert_close(got.double(), expected, rtol=rtol, atol=atol)


def test_weighted_mean_divides_by_n_not_by_sum_of_weights():
    z, y, w = make_batch(n=8, seed=3, dtype=torch.float64)
    for fn in (
        lambda r, wt: ldam_loss(z, y, COUNTS, wt, reduction=r),
        lambda r, wt: logit_adjusted_loss(z, y, COUNTS, wt, reduction=r),
        lambda r, wt: balanced_softmax_loss(z, y, COUNTS, wt, reduction=r),
    ):
        torch.testing.assert_close(fn("mean", w), fn("sum", w) / 8)
        assert not torch.allclose(fn("mean", w), fn("sum", w) / w[y].sum())
        torch.testing.assert_close(fn("none", w), fn("none", None) * w[y])


# ---------------------------------------------------------------------------
# closed forms
# ---------------------------------------------------------------------------


def test_ldam_without_margin_and_scale_is_cross_entropy():
    z, y, w = make_batch(n=16, seed=4, dtype=torch.float64)
    torch.testing.assert_close(ldam_loss(z, y, COUNTS, max_m=0.0, s=1.0), F.cross_entropy(z, y))
    torch.testing.assert_close(
        ldam_loss(z, y, COUNTS, w, max_m=0.0, s=1.0, reduction="none"),
        softmax_cross_entropy(z, y, w, reduction="none"),
    )
    # only the scale: CE of s * z
    torch.testing.assert_close(
        ldam_loss(z, y, COUNTS, max_m=0.0, s=7.0), F.cross_entropy(7.0 * z, y)
    )


def test_ldam_margin_only_lowers_the_true_logit():
    z, y, _ = make_batch(n=16, seed=5, dtype=torch.float64)
    delta = ldam_margins(COUNTS, 0.5)
    shifted = z - F.one_hot(y, 5).double() * delta[y].unsqueeze(1)
    torch.testing.assert_close(
        ldam_loss(z, y, COUNTS, max_m=0.5, s=30.0, reduction="none"),
        F.cross_entropy(30.0 * shifted, y, reduction="none"),
    )
    # a margin can only increase the loss
    plain = F.cross_entropy(z, y, reduction="none")
    assert torch.all(ldam_loss(z, y, COUNTS, s=1.0, reduction="none") > plain)


def test_logit_adjusted_with_tau_zero_is_cross_entropy():
    z, y, w = make_batch(n=16, seed=6)
    torch.testing.assert_close(logit_adjusted_loss(z, y, COUNTS, tau=0.0), F.cross_entropy(z, y))
    torch.testing.assert_close(
        logit_adjusted_loss(z, y, COUNTS, w.float(), tau=0.0),
        softmax_cross_entropy(z, y, w.float()),
    )


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-6), (torch.float64, 1e-14)])
def test_balanced_softmax_equals_logit_adjusted_with_tau_one(dtype, rtol):
    z, y, w = make_batch(n=32, c=5, seed=7, dtype=dtype, scale=5.0)
    for weight in (None, w.to(dtype)):
        torch.testing.assert_close(
            balanced_softmax_loss(z, y, COUNTS, weight, reduction="none"),
            logit_adjusted_loss(z, y, COUNTS, weight, tau=1.0, reduction="none"),
            rtol=rtol,
            atol=rtol,
        )
    # and it is a different loss from tau = 0.5 (the test can tell them apart)
    assert not torch.allclose(
        balanced_softmax_loss(z, y, COUNTS), logit_adjusted_loss(z, y, COUNTS, tau=0.5)
    )


def test_uniform_counts_reduce_to_cross_entropy():
    z, y, _ = make_batch(n=12, seed=8, dtype=torch.float64)
    uniform = [7] * 5
    ce = F.cross_entropy(z, y)
    torch.testing.assert_close(logit_adjusted_loss(z, y, uniform, tau=3.0), ce)
    torch.testing.assert_close(balanced_softmax_loss(z, y, uniform), ce)
    # equal margins 0.5 on every class: CE of z - 0.5 * onehot
    torch.testing.assert_close(
        ldam_loss(z, y, uniform, max_m=0.5, s=1.0),
        F.cross_entropy(z - 0.5 * F.one_hot(y, 5).double(), y),
    )


def test_post_hoc_adjustment_formula_and_it_favours_rare_classes():
    counts = [900, 90, 10]
    pi = torch.tensor(counts, dtype=torch.float64) / 1000
    z, _, _ = make_batch(n=6, c=3, seed=9, dtype=torch.float64)
    for tau in (0.0, 0.5, 1.0, 2.0):
        adjusted = post_hoc_logit_adjustment(z, counts, tau=tau)
        torch.testing.assert_close(adjusted, z - tau * torch.log(pi), rtol=1e-14, atol=1e-14)
    assert torch.equal(post_hoc_logit_adjustment(z, counts, tau=0.0), z)
    # a head-class prediction that is only mildly confident flips to the rare class
    crafted = torch.tensor([[3.0, 0.0, 1.0], [8.0, 0.0, 1.0]])
    assert crafted.argmax(1).tolist() == [0, 0]
    adjusted = post_hoc_logit_adjustment(crafted, counts)
    assert adjusted.argmax(1).tolist() == [2, 0]  # 3 - log .9 < 1 - log .01; 8 - log .9 > that
    assert adjusted.dtype == torch.float32
    # the input is not modified and gradients flow
    x = crafted.clone().requires_grad_(True)
    post_hoc_logit_adjustment(x, counts).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    # half precision is up-cast
    assert post_hoc_logit_adjustment(crafted.half(), counts).dtype == torch.float32


# ---------------------------------------------------------------------------
# margins
# ---------------------------------------------------------------------------


def test_ldam_margins():
    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]  # CIFAR-10, IF 100
    for max_m in (0.5, 0.3, 1.0):
        delta = ldam_margins(counts, max_m)
        assert delta.dtype == torch.float64 and delta.shape == (10,)
        assert delta.max().item() == pytest.approx(max_m, abs=1e-15)
        assert delta[-1].item() == pytest.approx(max_m, abs=1e-15)  # the rarest class
        assert torch.all(delta[1:] > delta[:-1])  # fewer samples, larger margin
        torch.testing.assert_close(
            delta, torch.tensor(ref_margins(counts, max_m), dtype=torch.float64)
        )
        # Delta_j * n_j^(1/4) is the same constant for every class
        const = delta * torch.tensor(counts, dtype=torch.float64) ** 0.25
        torch.testing.assert_close(const, torch.full_like(const, const[0].item()))
    # unsorted counts: the order follows the counts, not the index
    delta = ldam_margins([16, 10000, 81], 0.5)
    torch.testing.assert_close(delta, torch.tensor([0.5, 0.1, 0.5 * 2 / 3], dtype=torch.float64))
    assert torch.equal(ldam_margins(counts, 0.0), torch.zeros(10, dtype=torch.float64))
    module = LDAMLoss(counts, max_m=0.5)
    torch.testing.assert_close(module.margins, ldam_margins(counts, 0.5).float())


# ---------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_gradcheck(reduction, weighted):
    z, y, w = make_batch(n=5, c=5, seed=10, dtype=torch.float64, scale=1.0)
    weight = w if weighted else None
    z.requires_grad_(True)
    fns = [
        lambda x: ldam_loss(x, y, COUNTS, weight, max_m=0.5, s=3.0, reduction=reduction),
        lambda x: logit_adjusted_loss(x, y, COUNTS, weight, tau=1.5, reduction=reduction),
        lambda x: balanced_softmax_loss(x, y, COUNTS, weight, reduction=reduction),
        lambda x: post_hoc_logit_adjustment(x, COUNTS, tau=0.7),
    ]
    for fn in fns:
        assert torch.autograd.gradcheck(fn, (z,))


def test_logit_adjusted_gradient_is_softmax_of_adjusted_logits_minus_onehot():
    z, y, _ = make_batch(n=6, seed=11, dtype=torch.float64)
    x = z.clone().requires_grad_(True)
    logit_adjusted_loss(x, y, COUNTS, tau=1.0, reduction="sum").backward()
    pi = torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS)
    expected = torch.softmax(z + torch.log(pi), dim=1) - F.one_hot(y, 5).double()
    torch.testing.assert_close(x.grad, expected)


# ---------------------------------------------------------------------------
# precision, extremes, empty batch
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_logits_compute_in_float32(half):
    z = torch.tensor([[-12.0, 12.0, 0.0, -12.0, 4.0], [12.0, -12.0, 12.0, 3.0, -6.0]])
    y = torch.tensor([0, 4])
    w = torch.tensor([0.5, 1.0, 1.5, 2.0, 3.0])
    for fn in (
        lambda x: ldam_loss(x, y, COUNTS, w, reduction="none"),
        lambda x: logit_adjusted_loss(x, y, COUNTS, w, tau=1.0, reduction="none"),
        lambda x: balanced_softmax_loss(x, y, COUNTS, w, reduction="none"),
    ):
        zh = z.to(half).requires_grad_(True)
        got = fn(zh)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, fn(z), rtol=1e-6, atol=1e-6)
        got.sum().backward()
        assert zh.grad.dtype == half and torch.all(torch.isfinite(zh.grad.float()))


def test_autocast_logits_match_float32():
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 5)
    x, y = torch.randn(16, 8) * 4, torch.randint(0, 5, (16,))
    for module in (LDAMLoss(COUNTS), LogitAdjustedLoss(COUNTS), BalancedSoftmaxLoss(COUNTS)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = layer(x)
            assert logits.dtype == torch.bfloat16
            loss = module(logits, y)
        assert loss.dtype == torch.float32
        torch.testing.assert_close(loss, module(logits.float(), y), rtol=1e-6, atol=1e-6)


def test_huge_logits_stay_finite():
    z = torch.tensor([[1e4, -1e4, 0.0, 0.0, 0.0], [-1e4, 1e4, 0.0, 0.0, 0.0]], requires_grad=True)
    y = torch.tensor([0, 0])
    losses = [
        ldam_loss(z, y, COUNTS, reduction="none"),
        logit_adjusted_loss(z, y, COUNTS, reduction="none"),
        balanced_softmax_loss(z, y, COUNTS, reduction="none"),
    ]
    total = sum(loss.sum() for loss in losses)
    total.backward()
    assert all(torch.all(torch.isfinite(loss)) for loss in losses)
    assert torch.all(torch.isfinite(z.grad))
    # the second example's loss is essentially the logit gap (times s for LDAM)
    assert losses[1][1].item() == pytest.approx(2e4 - math.log(500 / 120), rel=1e-6)
    assert losses[0][1].item() == pytest.approx(30 * (2e4 + ldam_margins(COUNTS)[0].item()))


def test_empty_batch_gives_zero():
    z, y = torch.zeros(0, 5, requires_grad=True), torch.zeros(0, dtype=torch.long)
    for value in (
        ldam_loss(z, y, COUNTS),
        logit_adjusted_loss(z, y, COUNTS),
        balanced_softmax_loss(z, y, COUNTS),
        LDAMLoss(COUNTS)(z, y),
    ):
        assert value.item() == 0.0
    assert ldam_loss(z, y, COUNTS, reduction="none").shape == (0,)


# ---------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------


def _pairs(weight, reduction):
    """(module, functional) pairs with the same hyper-parameters."""
    return [
        (
            LDAMLoss(COUNTS, weight, max_m=0.4, s=10.0, reduction=reduction),
            lambda z, y, w: ldam_loss(z, y, COUNTS, w, max_m=0.4, s=10.0, reduction=reduction),
        ),
        (
            LogitAdjustedLoss(COUNTS, weight, tau=1.5, reduction=reduction),
            lambda z, y, w: logit_adjusted_loss(z, y, COUNTS, w, tau=1.5, reduction=reduction),
        ),
        (
            BalancedSoftmaxLoss(COUNTS, weight, reduction=reduction),
            lambda z, y, w: balanced_softmax_loss(z, y, COUNTS, w, reduction=reduction),
        ),
    ]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_module_equals_function(reduction, weighted):
    z, y, w = make_batch(n=10, seed=12)
    weight = w.float() if weighted else None
    for module, fn in _pairs(weight, reduction):
        assert module.uses_prior_bias is False
        torch.testing.assert_close(module(z, y), fn(z, y, weight), rtol=0, atol=0)
        if weighted:
            assert torch.equal(module.weight, weight)
        else:
            assert module.weight is None
        # float64 logits: the module's float32 count buffer is exact for integer counts
        module64 = module(z.double(), y)
        assert module64.dtype == torch.float64
        torch.testing.assert_close(module64, fn(z.double(), y, weight), rtol=1e-14, atol=1e-14)


def test_set_weight_then_forward_equals_weighted_function():
    z, y, w = make_batch(n=10, seed=13)
    w = w.float()
    for module, fn in _pairs(None, "mean"):
        unweighted = module(z, y)
        module.set_weight(w)
        assert torch.equal(module.weight, w)
        torch.testing.assert_close(module(z, y), fn(z, y, w), rtol=0, atol=0)
        assert not torch.allclose(module(z, y), unweighted)
        module.set_weight(None)
        assert module.weight is None
        torch.testing.assert_close(module(z, y), unweighted, rtol=0, atol=0)
        with pytest.raises(ValueError, match=r"weight must have shape \(5,\), got \(4,\)"):
            module.set_weight(torch.ones(4))
        with pytest.raises(ValueError, match="finite values >= 0"):
            module.set_weight(torch.tensor([1.0, -1.0, 1.0, 1.0, 1.0]))
        with pytest.raises(TypeError, match="weight must be a tensor"):
            module.set_weight([1.0] * 5)


def test_deferred_reweighting_schedule_drives_the_modules():
    z, y, _ = make_batch(n=10, seed=14)
    schedule = ReweightSchedule("drw", COUNTS, beta=0.9999, start_epoch=2)
    cb = class_balanced_weights(COUNTS, 0.9999)
    for module, fn in _pairs(None, "mean"):
        for epoch in range(4):
            module.set_weight(schedule.weight_at(epoch))
            expected = fn(z, y, None if epoch < 2 else cb)
            torch.testing.assert_close(module(z, y), expected, rtol=0, atol=0)


def test_state_dict_round_trip_and_buffers_move():
    module = LDAMLoss(COUNTS, torch.arange(1.0, 6.0), max_m=0.3)
    assert set(module.state_dict()) == {"samples_per_class", "weight"}
    assert set(LDAMLoss(COUNTS).state_dict()) == {"samples_per_class"}
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    other = LDAMLoss([1] * 5, torch.ones(5), max_m=0.3)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    z, y, _ = make_batch(seed=15)
    torch.testing.assert_close(other(z, y), module(z, y), rtol=0, atol=0)
    moved = module.to(torch.float64)
    assert moved.weight.dtype == torch.float32  # buffers keep their dtype
    assert moved(z, y).dtype == torch.float32  # the result follows the logits


def test_extra_repr():
    assert repr(LDAMLoss(COUNTS)) == (
        "LDAMLoss(num_classes=5, max_m=0.5, s=30.0, reduction='mean', weighted=False)"
    )
    assert repr(LogitAdjustedLoss(COUNTS, torch.ones(5), tau=2, reduction="sum")) == (
        "LogitAdjustedLoss(num_classes=5, tau=2.0, reduction='sum', weighted=True)"
    )
    assert repr(BalancedSoftmaxLoss(COUNTS, reduction="none")) == (
        "BalancedSoftmaxLoss(num_classes=5, reduction='none', weighted=False)"
    )


# ---------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------


def test_registry_builds_the_comparison_losses():
    names = set(available_losses())
    assert {"ldam", "logit_adjusted", "balanced_softmax"} <= names
    assert {"softmax", "sigmoid", "focal"} <= names
    z, y, _ = make_batch(seed=16)
    for name, cls, fn in (
        ("ldam", LDAMLoss, ldam_loss),
        ("logit_adjusted", LogitAdjustedLoss, logit_adjusted_loss),
        ("balanced_softmax", BalancedSoftmaxLoss, balanced_softmax_loss),
    ):
        loss = build_loss(name, COUNTS)
        assert type(loss) is cls and loss.weight is None and loss.uses_prior_bias is False
        torch.testing.assert_close(loss(z, y), fn(z, y, COUNTS), rtol=0, atol=0)
        # gamma is ignored; beta > 0 starts from the class-balanced weights
        weighted = build_loss(name, COUNTS, beta=0.999, gamma=2.0, reduction="none")
        assert torch.equal(weighted.weight, class_balanced_weights(COUNTS, 0.999))
        assert weighted.reduction == "none"
        torch.testing.assert_close(
            weighted(z, y), fn(z, y, COUNTS, weighted.weight, reduction="none"), rtol=0, atol=0
        )
        with pytest.raises(ValueError, match=r"beta must be in \[0, 1\), got 1.0"):
            build_loss(name, COUNTS, beta=1.0)
    ldam = build_loss("ldam", COUNTS)
    assert (ldam.max_m, ldam.s) == (0.5, 30.0)
    assert build_loss("logit_adjusted", COUNTS).tau == 1.0


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------


def _call(name, **overrides):
    args = dict(
        logits=torch.zeros(4, 3),
        targets=torch.tensor([0, 1, 2, 1]),
        samples_per_class=[30, 20, 10],
        weight=None,
        reduction="mean",
    )
    args.update(overrides)
    fn = {"ldam": ldam_loss, "la": logit_adjusted_loss, "bs": balanced_softmax_loss}[name]
    return fn(args.pop("logits"), args.pop("targets"), args.pop("samples_per_class"), **args)


COMMON_BAD = [
    (dict(samples_per_class=[30, 0, 10]), ValueError, r"samples_per_class\[1\] must be"),
    (dict(samples_per_class=[30, -2, 10]), ValueError, r"samples_per_class\[1\] must be"),
    (dict(samples_per_class=[30, 20]), ValueError, r"expected 3 counts for logits \(4, 3\), got 2"),
    (dict(samples_per_class="abc"), TypeError, "samples_per_class must be a list"),
    (dict(targets=torch.tensor([0, 1, 3, 1])), ValueError, r"class indices in \[0, 2\], got 3"),
    (dict(targets=torch.tensor([0, -1, 2, 1])), ValueError, r"class indices in \[0, 2\], got -1"),
    (dict(targets=torch.tensor([0, 1, 2])), ValueError, r"shape \(N,\) = \(4,\)"),
    (dict(targets=torch.zeros(4, 3)), TypeError, "int64 class indices of shape"),
    (dict(targets=[0, 1, 2, 1]), TypeError, "targets must be a torch.Tensor, got list"),
    (dict(logits=torch.zeros(4, 3, dtype=torch.long)), TypeError, "floating-point"),
    (dict(logits=torch.zeros(4)), ValueError, r"shape \(N, C\)"),
    (
        dict(logits=[[0.0]]),
        TypeError,
        "logits must be a torch.Tensor of shape \\(N, C\\), got list",
    ),
    (dict(weight=torch.ones(2)), ValueError, r"weight must have one entry per class, shape \(3,\)"),
    (dict(weight=torch.tensor([1.0, -1.0, 1.0])), ValueError, "finite values >= 0"),
    (dict(weight=[1.0, 1.0, 1.0]), TypeError, "weight must be a tensor"),
    (dict(reduction="avg"), ValueError, "unknown reduction 'avg': expected one of 'mean'"),
]


@pytest.mark.parametrize("name", ["ldam", "la", "bs"])
@pytest.mark.parametrize("overrides, error, match", COMMON_BAD)
def test_bad_inputs(name, overrides, error, match):
    with pytest.raises(error, match=match):
        _call(name, **overrides)


@pytest.mark.parametrize(
    "name, overrides, error, match",
    [
        ("ldam", dict(max_m=-0.1), ValueError, "max_m must be a finite number >= 0, got -0.1"),
        ("ldam", dict(max_m=float("nan")), ValueError, "max_m must be a finite number >= 0"),
        ("ldam", dict(max_m="0.5"), TypeError, "max_m must be a number >= 0, got '0.5'"),
        ("ldam", dict(s=0.0), ValueError, "s must be a finite number > 0, got 0.0"),
        ("ldam", dict(s=float("inf")), ValueError, "s must be a finite number > 0, got inf"),
        ("ldam", dict(s=True), TypeError, "s must be a number > 0, got True"),
        ("la", dict(tau=-1.0), ValueError, "tau must be a finite number >= 0, got -1.0"),
        ("la", dict(tau=None), TypeError, "tau must be a number >= 0, got None"),
    ],
)
def test_bad_hyper_parameters(name, overrides, error, match):
    with pytest.raises(error, match=match):
        _call(name, **overrides)


def test_bad_module_and_post_hoc_inputs():
    with pytest.raises(ValueError, match=r"expected 4 counts for logits \(2, 4\), got 5"):
        LDAMLoss(COUNTS)(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"samples_per_class\[4\] must be"):
        BalancedSoftmaxLoss([3, 2, 1, 1, 0])
    with pytest.raises(ValueError, match="unknown reduction 'avg'"):
        LogitAdjustedLoss(COUNTS, reduction="avg")
    with pytest.raises(ValueError, match="tau must be a finite number >= 0"):
        LogitAdjustedLoss(COUNTS, tau=-0.5)
    with pytest.raises(ValueError, match="s must be a finite number > 0"):
        LDAMLoss(COUNTS, s=-1.0)
    with pytest.raises(ValueError, match=r"weight must have shape \(5,\)"):
        LDAMLoss(COUNTS, torch.ones(3))
    with pytest.raises(ValueError, match="max_m must be a finite number >= 0"):
        ldam_margins(COUNTS, -1.0)
    with pytest.raises(ValueError, match=r"expected 5 counts for logits \(2, 5\), got 3"):
        post_hoc_logit_adjustment(torch.zeros(2, 5), [3, 2, 1])
    with pytest.raises(ValueError, match="tau must be a finite number >= 0"):
        post_hoc_logit_adjustment(torch.zeros(2, 5), COUNTS, tau=-1.0)
    with pytest.raises(TypeError, match="floating-point"):
        post_hoc_logit_adjustment(torch.zeros(2, 5, dtype=torch.long), COUNTS)


@pytest.mark.parametrize("name", ["ldam", "logit_adjusted", "balanced_softmax"])
def test_gradgradcheck_with_a_weight_that_requires_grad(name):
    """Second derivatives in float64, also with respect to the per-class weight."""
    fn = {"ldam": ldam_loss, "logit_adjusted": logit_adjusted_loss}.get(name, balanced_softmax_loss)
    g = torch.Generator().manual_seed(3)
    z = torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(5, generator=g, dtype=torch.float64) + 0.5).requires_grad_(True)
    y = torch.tensor([0, 4, 2, 4])
    kwargs = {"s": 2.0} if name == "ldam" else {}

    def loss(logits, weight):
        return fn(logits, y, COUNTS, weight, reduction="none", **kwargs)

    assert torch.autograd.gradcheck(loss, (z, w), fast_mode=True)
    assert torch.autograd.gradgradcheck(loss, (z, w), fast_mode=True)
