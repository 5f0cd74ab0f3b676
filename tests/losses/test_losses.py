import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss as tv_focal

import classbalanced as cb
from classbalanced.losses import (
    ClassBalancedLoss,
    WeightedLoss,
    available_losses,
    build_loss,
    class_balanced_loss,
    init_prior_bias_,
    kernels,
    prior_bias,
    sigmoid_cross_entropy,
    sigmoid_focal_cross_entropy,
    softmax_cross_entropy,
)
from classbalanced.weights import class_balanced_weights

GAMMAS = [0.0, 0.5, 1.0, 2.0]


# ---------------------------------------------------------------------------
# float64 loop references written straight from the definitions (paper eq. 6-9)
# ---------------------------------------------------------------------------


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def ref_softmax(z, y, w):
    per = []
    for row, label in zip(z.tolist(), y.tolist(), strict=True):
        m = max(row)
        lse = m + math.log(sum(math.exp(v - m) for v in row))
        per.append(w[label] * (lse - row[label]))
    return per, len(per)


def ref_binary(z, t, w, gamma):
    """Dense targets t (N, C): per-example sum over classes, weight (t_b . w) / sum(t_b)
    (mean(w) for a row without labels), normaliser sum(t)."""
    per = []
    for row, trow in zip(z.tolist(), t.tolist(), strict=True):
        mass = sum(trow)
        wb = (
            sum(tj * wj for tj, wj in zip(trow, w, strict=True)) / mass if mass else sum(w) / len(w)
        )
        total = 0.0
        for zj, tj in zip(row, trow, strict=True):
            p = _sigmoid(zj)
            bce = -(tj * math.log(p) + (1 - tj) * math.log(1 - p))
            pt = tj * p + (1 - tj) * (1 - p) if tj in (0.0, 1.0) else None
            if pt is not None:
                mod = (1 - pt) ** gamma
            else:  # soft label: the release's modulator exp(-g t z - g log(1 + exp(-z)))
                mod = math.exp(-gamma * tj * zj - gamma * math.log(1 + math.exp(-zj)))
            total += mod * bce
        per.append(wb * total)
    positives = sum(sum(r) for r in t.tolist())
    return per, positives if positives > 0 else 1.0


def reduce_ref(per, normaliser, reduction):
    if reduction == "none":
        return torch.tensor(per, dtype=torch.float64)
    if reduction == "sum":
        return torch.tensor(sum(per), dtype=torch.float64)
    return torch.tensor(sum(per) / normaliser, dtype=torch.float64)


def make_batch(n=7, c=5, seed=0, scale=3.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(n, c, generator=g, dtype=torch.float64) * scale).to(dtype)
    y = torch.randint(0, c, (n,), generator=g)
    w = torch.rand(c, generator=g, dtype=torch.float64) * 2 + 0.1
    return z, y, w


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 2e-6), (torch.float64, 1e-12)])
def test_softmax_matches_loop_reference(reduction, dtype, rtol):
    z, y, w = make_batch(dtype=dtype)
    got = softmax_cross_entropy(z, y, w.to(dtype), reduction=reduction)
    assert got.dtype == dtype
    expected = reduce_ref(*ref_softmax(z.double(), y, w.tolist()), reduction)
    torch.testing.assert_close(got.double(), expected, rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 2e-6), (torch.float64, 1e-12)])
def test_focal_and_sigmoid_match_loop_reference(gamma, reduction, dtype, rtol):
    z, y, w = make_batch(n=9, c=6, seed=1, dtype=dtype)
    t = F.one_hot(y, 6).double()
    expected = reduce_ref(*ref_binary(z.double(), t, w.tolist(), gamma), reduction)
    got = sigmoid_focal_cross_entropy(z, y, w.to(dtype), gamma=gamma, reduction=reduction)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), expected, rtol=rtol, atol=1e-12)
    # the same through the dense (multi-hot) path
    got_dense = sigmoid_focal_cross_entropy(
        z, t.to(dtype), w.to(dtype), gamma=gamma, reduction=reduction
    )
    torch.testing.assert_close(got_dense.double(), expected, rtol=rtol, atol=1e-12)
    if gamma == 0.0:
        got_sig = sigmoid_cross_entropy(z, y, w.to(dtype), reduction=reduction)
        torch.testing.assert_close(got_sig.double(), expected, rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_multi_hot_and_soft_targets_match_reference(gamma):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(6, 4, generator=g, dtype=torch.float64) * 2
    t = (torch.rand(6, 4, generator=g) < 0.4).double()
    t[0] = 0.0  # an example without positives
    t[1, 2] = 0.3  # a soft label
    w = torch.tensor([0.5, 1.0, 2.0, 0.25], dtype=torch.float64)
    for reduction in ("mean", "sum", "none"):
        got = sigmoid_focal_cross_entropy(z, t, w, gamma=gamma, reduction=reduction)
        expected = reduce_ref(*ref_binary(z, t, w.tolist(), gamma), reduction)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # bool multi-hot is accepted too; no positives at all: mean divides by 1, not 0
    assert torch.isfinite(sigmoid_cross_entropy(z, torch.zeros(6, 4, dtype=torch.bool)))


def test_mean_normalisers_follow_the_paper():
    z, y, w = make_batch(n=8, c=3)
    n = z.shape[0]
    for loss in (softmax_cross_entropy, sigmoid_cross_entropy):
        torch.testing.assert_close(
            loss(z, y, w.float()), loss(z, y, w.float(), reduction="sum") / n
        )
    t = torch.zeros(8, 3)
    t[0, 0] = t[0, 1] = t[3, 2] = 1.0
    torch.testing.assert_close(
        sigmoid_focal_cross_entropy(z, t, gamma=2.0),
        sigmoid_focal_cross_entropy(z, t, gamma=2.0, reduction="sum") / 3,
    )


# ---------------------------------------------------------------------------
# closed forms and invariants
# ---------------------------------------------------------------------------


def test_beta_zero_gives_plain_losses():
    z, y, _ = make_batch(n=16, c=10, seed=4)
    counts = [100, 50, 20, 10, 5, 4, 3, 2, 1, 1]
    onehot = F.one_hot(y, 10).float()
    torch.testing.assert_close(
        class_balanced_loss(z, y, counts, beta=0.0, loss_type="softmax"), F.cross_entropy(z, y)
    )
    torch.testing.assert_close(
        class_balanced_loss(z, y, counts, beta=0.0, loss_type="sigmoid"),
        F.binary_cross_entropy_with_logits(z, onehot, reduction="sum") / 16,
    )
    for gamma in GAMMAS:
        torch.testing.assert_close(
            class_balanced_loss(z, y, counts, beta=0.0, loss_type="focal", gamma=gamma),
            tv_focal(z, onehot, alpha=-1, gamma=gamma, reduction="sum") / 16,
        )


def test_class_balanced_equals_weighted_definition():
    z, y, _ = make_batch(n=12, c=4, seed=5, dtype=torch.float64)
    counts, beta = [400, 40, 8, 2], 0.99
    w = class_balanced_weights(counts, beta, dtype=torch.float64)
    per = F.cross_entropy(z, y, reduction="none") * w[y]
    torch.testing.assert_close(
        class_balanced_loss(z, y, counts, beta=beta, loss_type="softmax"), per.mean()
    )
    onehot = F.one_hot(y, 4).double()
    elem = tv_focal(z, onehot, alpha=-1, gamma=0.5, reduction="none")
    torch.testing.assert_close(
        class_balanced_loss(z, y, counts, beta=beta, loss_type="focal", gamma=0.5),
        (elem * w[y].unsqueeze(1)).sum() / 12,
    )


@pytest.mark.parametrize("loss_type", ["softmax", "focal"])
def test_float64_logits_use_float64_weights(loss_type):
    """The weights were rounded to float32, so float64 losses were off by ~1e-8 relative."""
    z, y, _ = make_batch(n=12, c=4, seed=5, dtype=torch.float64)
    counts, beta = torch.tensor([400.0, 40.0, 8.0, 2.0], dtype=torch.float64), 0.99
    alpha = (1 - beta) / (1 - beta**counts)  # the paper's closed form, then sum = C
    alpha = alpha * 4 / alpha.sum()
    got = class_balanced_loss(z, y, counts, beta=beta, loss_type=loss_type, gamma=0.5)
    expected = {"softmax": softmax_cross_entropy, "focal": sigmoid_focal_cross_entropy}[loss_type]
    kwargs = {"gamma": 0.5} if loss_type == "focal" else {}
    torch.testing.assert_close(got, expected(z, y, alpha, **kwargs), rtol=1e-14, atol=0)


def test_focal_at_most_sigmoid_elementwise_and_gamma_zero_is_sigmoid():
    z = torch.linspace(-20, 20, 401, dtype=torch.float64).unsqueeze(1)  # C = 1: one term per row
    for label in (0, 1):
        y = torch.full((401,), label) if label == 0 else None
        t = torch.full((401, 1), float(label), dtype=torch.float64)
        targets = y if y is not None else t
        bce = sigmoid_cross_entropy(z, targets, reduction="none")
        torch.testing.assert_close(
            sigmoid_focal_cross_entropy(z, targets, gamma=0.0, reduction="none"), bce
        )
        for gamma in (0.5, 1.0, 2.0, 5.0):
            focal = sigmoid_focal_cross_entropy(z, targets, gamma=gamma, reduction="none")
            assert torch.all(focal <= bce)
            assert torch.all(focal >= 0)


# ---------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", GAMMAS + [0.25])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradcheck_binary_losses(gamma, reduction):
    z, y, w = make_batch(n=5, c=4, seed=6, dtype=torch.float64, scale=2.0)
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: sigmoid_focal_cross_entropy(x, y, w, gamma=gamma, reduction=reduction), (z,)
    )
    t = (torch.rand(5, 4, generator=torch.Generator().manual_seed(0)) < 0.5).double()
    assert torch.autograd.gradcheck(
        lambda x: sigmoid_focal_cross_entropy(x, t, w, gamma=gamma, reduction=reduction), (z,)
    )


def test_gradcheck_softmax():
    z, y, w = make_batch(n=5, c=4, seed=7, dtype=torch.float64)
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: softmax_cross_entropy(x, y, w, reduction="none"), (z,)
    )


@pytest.mark.parametrize("gamma", GAMMAS)
def test_gradient_matches_autograd_of_the_definition(gamma):
    """The fused index-target kernel's hand-written gradient == autograd of the plain formula."""
    z, y, w = make_batch(n=32, c=50, seed=8, dtype=torch.float64, scale=6.0)
    z1 = z.clone().requires_grad_(True)
    z2 = z.clone().requires_grad_(True)
    sigmoid_focal_cross_entropy(z1, y, w, gamma=gamma).backward()
    onehot = F.one_hot(y, 50).double()
    (tv_focal(z2, onehot, alpha=-1, gamma=gamma, reduction="none") * w[y].unsqueeze(1)).sum().div(
        32
    ).backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-10, atol=1e-14)


SECOND_ORDER_CASES = [("softmax", 0.0, "index")] + [
    (loss_type, gamma, kind)
    for loss_type, gammas in (("sigmoid", [0.0]), ("focal", [0.0, 0.5, 1.0, 2.0, 2.5]))
    for gamma in gammas
    for kind in ("index", "dense", "soft")
]


@pytest.mark.parametrize("loss_type, gamma, targets_kind", SECOND_ORDER_CASES)
@pytest.mark.parametrize("weighted", [False, True])
def test_gradgradcheck_every_loss(loss_type, gamma, targets_kind, weighted):
    """Second derivatives (create_graph=True) are exact: gradgradcheck in float64."""
    z, y, w = make_batch(n=4, c=3, seed=11, dtype=torch.float64, scale=2.0)
    targets = {
        "index": y,
        "dense": F.one_hot(y, 3).double(),
        "soft": torch.rand(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64),
    }[targets_kind]
    inputs = (
        (z.requires_grad_(True), w.requires_grad_(True)) if weighted else (z.requires_grad_(True),)
    )

    def fn(*args):
        weight = args[1] if weighted else None
        if loss_type == "softmax":
            return softmax_cross_entropy(args[0], targets, weight, reduction="none")
        g = gamma if loss_type == "focal" else 0.0
        return sigmoid_focal_cross_entropy(args[0], targets, weight, gamma=g, reduction="none")

    assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=True)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 2.5])
@pytest.mark.parametrize("weighted", [False, True])
def test_index_targets_give_the_second_derivatives_of_one_hot(gamma, weighted):
    """The reproducer: a gradient penalty through a linear layer, index vs one-hot targets."""
    g = torch.Generator().manual_seed(12)
    x = torch.randn(8, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 3, (8,), generator=g)
    w = (torch.rand(3, generator=g, dtype=torch.float64) + 0.5) if weighted else None
    grads = []
    for targets in (y, F.one_hot(y, 3).double()):
        torch.manual_seed(0)
        layer = nn.Linear(4, 3).double()
        loss = sigmoid_focal_cross_entropy(layer(x), targets, w, gamma=gamma)
        (gx,) = torch.autograd.grad(loss, x, create_graph=True)
        gx.pow(2).sum().backward()
        grads.append(torch.cat([layer.weight.grad.flatten(), layer.bias.grad]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-15)
    assert grads[0].abs().max() > 1e-6  # a real second-order signal was compared


def test_torch_func_transforms_equal_autograd(gamma=0.5):
    """torch.func.grad / vmap / hessian (per-sample gradients, MAML) raised "must override
    the setup_context staticmethod": the fused kernels have no functorch rules."""
    z, y, w = make_batch(n=5, c=4, seed=15, dtype=torch.float64, scale=4.0)
    z[0, y[0]], z[1, 0] = -100.0, 100.0  # saturated terms: still exact and finite
    targets = {"index": y, "dense": F.one_hot(y, 4).double()}
    for kind, t in targets.items():

        def loss(logits, t=t):
            return sigmoid_focal_cross_entropy(logits, t, w, gamma=gamma, validate_args=False)

        x = z.clone().requires_grad_(True)
        (expected,) = torch.autograd.grad(loss(x), x, create_graph=True)
        torch.testing.assert_close(torch.func.grad(loss)(z), expected, rtol=1e-12, atol=0)
        # per-sample gradients: a batch of one example per vmap lane
        per_sample = torch.func.vmap(torch.func.grad(lambda zi, ti: loss(zi[None], ti[None])))
        rows = [torch.autograd.grad(loss(x[i : i + 1], t[i : i + 1]), x)[0][i] for i in range(5)]
        torch.testing.assert_close(per_sample(z, t), torch.stack(rows), rtol=1e-12, atol=0)
        hessian = torch.func.hessian(lambda r, t=t: loss(r[None], t[:1]))(z[0])
        rows = [torch.autograd.grad(expected[0, j], x, retain_graph=True)[0][0] for j in range(4)]
        torch.testing.assert_close(hessian, 5 * torch.stack(rows), rtol=1e-10, atol=1e-15)
        assert kind and torch.isfinite(hessian).all()


def test_soft_targets_receive_exact_gradients():
    z, y, w = make_batch(n=5, c=4, seed=13, dtype=torch.float64, scale=2.0)
    t = torch.rand(5, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    t.requires_grad_(True)
    for gamma in (0.0, 1.5):
        fn = lambda tt, g=gamma: sigmoid_focal_cross_entropy(z, tt, w, gamma=g)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (t,))


def test_weight_that_requires_grad_receives_its_gradient():
    z, y, w = make_batch(n=6, c=3, seed=14, dtype=torch.float64)
    w.requires_grad_(True)
    for loss in (
        lambda ww: softmax_cross_entropy(z, y, ww),
        lambda ww: sigmoid_focal_cross_entropy(z, y, ww, gamma=0.5),
        lambda ww: sigmoid_focal_cross_entropy(z, F.one_hot(y, 3).double(), ww, gamma=0.5),
    ):
        (gw,) = torch.autograd.grad(loss(w), w)
        assert gw.abs().sum() > 0
        assert torch.autograd.gradcheck(loss, (w,))


# ---------------------------------------------------------------------------
# multi-hot weighting
# ---------------------------------------------------------------------------


def test_multi_hot_beta_zero_is_exactly_the_unweighted_loss():
    """The reproducer: all-negative rows and rows with several labels, beta = 0."""
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(15))
    t = torch.tensor([[0.0, 0, 0], [1, 1, 0], [1, 1, 1], [0, 0, 1], [0.3, 0, 0.9]])
    for loss_type in ("sigmoid", "focal"):
        for reduction in ("none", "sum", "mean"):
            got = class_balanced_loss(
                z, t, [10, 200, 3000], beta=0.0, loss_type=loss_type, gamma=2.0, reduction=reduction
            )
            plain = _apply_plain(loss_type, z, t, reduction)
            assert torch.equal(got, plain)
    zero = class_balanced_loss(
        torch.zeros(2, 3), t[:2], [10, 10, 10], beta=0.0, loss_type="sigmoid", reduction="none"
    )
    torch.testing.assert_close(zero, torch.full((2,), 3 * math.log(2)))


def _apply_plain(loss_type, z, t, reduction):
    gamma = 2.0 if loss_type == "focal" else 0.0
    return sigmoid_focal_cross_entropy(z, t, None, gamma=gamma, reduction=reduction)


def test_multi_hot_row_weight_is_the_mean_weight_of_its_labels():
    z = torch.zeros(4, 3, dtype=torch.float64)
    t = torch.tensor([[1.0, 0, 0], [1, 1, 0], [0, 0, 0], [0.5, 0, 1]], dtype=torch.float64)
    w = torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64)
    got = sigmoid_cross_entropy(z, t, w, reduction="none")
    row_weight = torch.tensor([3.0, 2.0, 1.5, (1.5 + 0.5) / 1.5], dtype=torch.float64)
    torch.testing.assert_close(got, row_weight * 3 * math.log(2), rtol=1e-15, atol=0)
    # a one-hot row weighs exactly what its class index weighs
    torch.testing.assert_close(
        sigmoid_cross_entropy(z[:1], t[:1], w, reduction="none"),
        sigmoid_cross_entropy(z[:1], torch.tensor([0]), w, reduction="none"),
    )


# ---------------------------------------------------------------------------
# exactness at the dtype's extremes
# ---------------------------------------------------------------------------


def _mp_focal(z: float, label: int, gamma: float) -> tuple[float, float]:
    """Loss and derivative of one focal term, evaluated with 60-digit mpmath."""
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(60):
        s = mpmath.mpf(z) if label == 0 else -mpmath.mpf(z)  # the term is f(s), s = -z for t = 1
        p = 1 / (1 + mpmath.exp(-s))
        softplus = mpmath.log1p(mpmath.exp(s)) if s < 0 else s + mpmath.log1p(mpmath.exp(-s))
        q = 1 / (1 + mpmath.exp(s))
        loss = p**gamma * softplus
        dloss = p**gamma * (gamma * q * softplus + p)
        return float(loss), float(dloss if label == 0 else -dloss)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 2.5])
@pytest.mark.parametrize("dense", [False, True])
def test_exact_to_the_last_bits_against_mpmath(dtype, gamma, dense):
    """Both labels at logits from 0 to the dtype's largest: loss and gradient within a few
    ulps times the condition number of the formula (1 + gamma |z|)."""
    _check_against_mpmath(dtype, gamma, dense)


def _check_against_mpmath(dtype, gamma, dense):
    big = torch.finfo(dtype).max
    grid = [0.0, 1e-3, 0.7, 3.0, 17.0, 21.0, 25.0, 40.0, 90.0, 700.0, 1e4, 1e30, big / 3, big]
    values = [v for x in grid for v in (x, -x) if abs(v) <= big]
    z = torch.tensor(values, dtype=dtype)
    tolerance = 8 * torch.finfo(dtype).eps
    tiny = torch.finfo(dtype).tiny  # below it (subnormals) only absolute accuracy is meaningful
    for label in (0, 1):
        if dense:
            logits, targets = (
                z.unsqueeze(1),
                torch.full((len(values), 1), float(label), dtype=dtype),
            )
        else:  # column 1 holds a term that is exactly 0: the positive at +1e4 or a negative at -1e4
            other = torch.full_like(z, 1e4 if label == 0 else -1e4)
            logits = torch.stack([z, other], 1)
            targets = torch.full((len(values),), 0 if label == 1 else 1)
        logits.requires_grad_(True)
        per = sigmoid_focal_cross_entropy(logits, targets, gamma=gamma, reduction="none")
        per.sum().backward()
        for i, v in enumerate(z.tolist()):
            expected, dexpected = _mp_focal(v, label, gamma)
            got, dgot = per[i].item(), logits.grad[i, 0].item()
            # (1 - p_t)**gamma has condition number ~gamma |z|: no formula can do better
            rel = tolerance * (1 + gamma * abs(v))
            assert got == pytest.approx(expected, rel=rel, abs=tiny), (v, label)
            assert dgot == pytest.approx(dexpected, rel=rel, abs=tiny), (v, label)


@pytest.fixture(params=["block", "chunked"])
def index_kernel_path(request, monkeypatch):
    """The class-index kernel in one block (inputs of at most ``_BLOCK_ELEMENTS`` elements)
    or in chunks of rows (block threshold 0 and chunks of one row, so that small test inputs
    take that path); checks that the intended path ran."""
    if request.param == "chunked":
        monkeypatch.setattr(kernels, "_BLOCK_ELEMENTS", 0)
        monkeypatch.setattr(kernels, "_CHUNK_ELEMENTS", 1)
    calls = []
    block = kernels._index_focal_block
    monkeypatch.setattr(kernels, "_index_focal_block", lambda *a: calls.append(1) or block(*a))
    yield request.param
    assert bool(calls) == (request.param == "block")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 2.5])
def test_both_sides_of_the_block_threshold_are_exact(dtype, gamma, index_kernel_path):
    """Class indices, block and chunked: exact against mpmath at every magnitude."""
    _check_against_mpmath(dtype, gamma, dense=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 2.5])
def test_block_and_chunked_kernels_agree_to_the_last_bits(dtype, gamma, monkeypatch):
    """The same inputs on both sides of the threshold: losses and gradients within 4 ulps
    (summation order and vectorised vs scalar tails differ, not the formula)."""
    g = torch.Generator().manual_seed(5)
    z = (8 * torch.randn(64, 33, generator=g)).to(dtype)
    y = torch.randint(0, 33, (64,), generator=g)
    w = torch.rand(33, generator=g, dtype=dtype) + 0.1
    results = []
    # one block; chunks of 63 rows and 1 row
    for block_elements, chunk_elements in ((64 * 33, 1), (64 * 33 - 1, 64 * 33 - 1)):
        monkeypatch.setattr(kernels, "_BLOCK_ELEMENTS", block_elements)
        monkeypatch.setattr(kernels, "_CHUNK_ELEMENTS", chunk_elements)
        x = z.clone().requires_grad_(True)
        per = sigmoid_focal_cross_entropy(x, y, w, gamma=gamma, reduction="none")
        per.sum().backward()
        results.append((per.detach(), x.grad))
    (block, block_grad), (chunked, chunked_grad) = results
    eps, tiny = torch.finfo(dtype).eps, torch.finfo(dtype).tiny
    torch.testing.assert_close(block, chunked, rtol=4 * eps, atol=tiny)
    torch.testing.assert_close(block_grad, chunked_grad, rtol=4 * eps, atol=tiny)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.5])
def test_loss_without_gradient_equals_the_differentiable_loss(gamma, index_kernel_path):
    """Under no_grad, or for logits that do not require grad, the kernel skips the gradient;
    the loss is the same to the last bit."""
    z, y, w = make_batch(n=6, c=5, seed=8, scale=6.0)
    expected = sigmoid_focal_cross_entropy(
        z.clone().requires_grad_(True), y, w, gamma=gamma, reduction="none"
    )
    assert expected.requires_grad
    with torch.no_grad():
        no_grad = sigmoid_focal_cross_entropy(
            z.clone().requires_grad_(True), y, w, gamma=gamma, reduction="none"
        )
    plain = sigmoid_focal_cross_entropy(z, y, w, gamma=gamma, reduction="none")
    torch.testing.assert_close(no_grad, expected.detach(), rtol=0, atol=0)
    torch.testing.assert_close(plain, expected.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.5])
def test_second_backward_of_a_retained_graph_gives_the_same_gradient(gamma, index_kernel_path):
    """Backward scales the kernel's gradient in place; a second backward recomputes it."""
    z, y, w = make_batch(n=6, c=5, seed=3, scale=4.0)
    z.requires_grad_(True)
    loss = sigmoid_focal_cross_entropy(z, y, w, gamma=gamma)
    (first,) = torch.autograd.grad(loss, z, retain_graph=True)
    (second,) = torch.autograd.grad(loss, z, retain_graph=True)
    loss.backward()
    torch.testing.assert_close(second, first, rtol=0, atol=0)
    torch.testing.assert_close(z.grad, first, rtol=0, atol=0)
    expected = torch.autograd.grad(
        sigmoid_focal_cross_entropy(z, F.one_hot(y, 5).float(), w, gamma=gamma), z
    )[0]
    torch.testing.assert_close(first, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.5])
def test_compiled_formula_is_exact_against_mpmath(dtype, gamma):
    """The pointwise expression the compiler fuses (log with a first-order correction in
    place of log1p), evaluated as it is: exact at every magnitude, both labels."""
    big = torch.finfo(dtype).max
    grid = [0.0, 1e-3, 0.7, 3.0, 5.0, 17.0, 20.0, 25.0, 40.0, 90.0, 700.0, 1e4, 1e30, big]
    values = [v for x in grid for v in (x, -x) if abs(v) <= big]
    z = torch.tensor(values, dtype=dtype).unsqueeze(1).expand(-1, 2).contiguous()
    per, grad = kernels._index_focal_fused(z, torch.zeros(len(values), 1, dtype=torch.long), gamma)
    tolerance, tiny = 8 * torch.finfo(dtype).eps, torch.finfo(dtype).tiny
    for i, v in enumerate(values):
        (pos, dpos), (neg, dneg) = _mp_focal(v, 1, gamma), _mp_focal(v, 0, gamma)
        rel = tolerance * (1 + gamma * abs(v))
        assert per[i].item() == pytest.approx(pos + neg, rel=rel, abs=tiny), v
        assert grad[i, 0].item() == pytest.approx(dpos, rel=rel, abs=tiny), v
        assert grad[i, 1].item() == pytest.approx(dneg, rel=rel, abs=tiny), v


def test_compiled_backward_row_scaling_op_is_registered_correctly():
    """The opaque in-place op of the compiled backward: it scales its argument's rows, and
    its schema (a mutated argument) and fake kernel agree."""
    grad = torch.randn(4, 3, dtype=torch.float64)
    scale = torch.randn(4, dtype=torch.float64)
    expected = grad * scale.unsqueeze(1)
    kernels._scale_rows_(grad, scale)
    torch.testing.assert_close(grad, expected, rtol=0, atol=0)
    torch.library.opcheck(kernels._scale_rows_, (grad, scale))


def test_float64_positive_keeps_its_log1p_beyond_the_softplus_threshold():
    """The reproducer: -log sigmoid(-25) = 25 + log1p(e^-25), not 25."""
    z = torch.tensor([[-25.0]], dtype=torch.float64)
    got = sigmoid_cross_entropy(z, torch.tensor([0])) - 25
    assert got.item() == pytest.approx(math.log1p(math.exp(-25.0)), rel=1e-15)
    got_dense = sigmoid_cross_entropy(z, torch.ones(1, 1, dtype=torch.float64)) - 25
    assert got_dense.item() == pytest.approx(math.log1p(math.exp(-25.0)), rel=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_nan_gradient_beyond_max_over_gamma(dtype):
    """The reproducer: one-hot targets with gamma > 1 at |z| > finfo.max / gamma."""
    big = torch.finfo(dtype).max / 1.5
    z = torch.tensor([[-big], [big]], dtype=dtype, requires_grad=True)
    t = torch.tensor([[1.0], [0.0]], dtype=dtype)
    sigmoid_focal_cross_entropy(z, t, gamma=2.0, reduction="sum").backward()
    torch.testing.assert_close(z.grad, torch.tensor([[-1.0], [1.0]], dtype=dtype))


# ---------------------------------------------------------------------------
# extreme logits, half precision, compile
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dense", [False, True])
def test_positive_with_very_negative_logit_counts_fully(dense):
    z = torch.tensor([[-100.0, 0.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0]]) if dense else torch.tensor([0])
    w = torch.tensor([3.0, 1.0])
    loss = sigmoid_focal_cross_entropy(z, targets, w, gamma=1.0, reduction="none")
    # 3 * (100 + 0.5 * log 2): the positive contributes its full BCE (modulator 1)
    assert loss.item() == pytest.approx(3 * (100 + 0.5 * math.log(2)), rel=1e-6)
    loss.sum().backward()
    assert z.grad[0, 0].item() == pytest.approx(-3.0, rel=1e-6)


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("gamma", GAMMAS)
def test_huge_logits_stay_finite_and_exact(dense, gamma):
    z = torch.tensor([[1e4, -1e4, 1e4], [-1e4, 1e4, -1e4]], requires_grad=True)
    y = torch.tensor([0, 0])
    targets = F.one_hot(y, 3).float() if dense else y
    per = sigmoid_focal_cross_entropy(z, targets, gamma=gamma, reduction="none")
    # row 0: positive at +1e4 -> 0; negatives at -1e4 -> 0 and +1e4 -> 1e4
    # row 1: positive at -1e4 -> 1e4; negatives at +1e4 -> 1e4 and -1e4 -> 0
    torch.testing.assert_close(per, torch.tensor([1e4, 2e4]))
    per.sum().backward()
    assert torch.all(torch.isfinite(z.grad))
    expected_grad = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 1.0, 0.0]])
    torch.testing.assert_close(z.grad, expected_grad)
    softmax = softmax_cross_entropy(z, y)
    assert torch.isfinite(softmax)


@pytest.mark.parametrize("dense", [False, True])
def test_gamma_below_one_has_finite_gradient_when_pt_to_one(dense):
    z = torch.tensor([[60.0, -60.0, -200.0], [30.0, -90.0, 0.0]], requires_grad=True)
    y = torch.tensor([0, 0])
    targets = F.one_hot(y, 3).float() if dense else y
    sigmoid_focal_cross_entropy(z, targets, gamma=0.5).backward()
    assert torch.all(torch.isfinite(z.grad))
    # the naive pow form is NaN here, which is why we don't use it
    zz = z.detach().clone().requires_grad_(True)
    pt = torch.where(F.one_hot(y, 3).bool(), torch.sigmoid(zz), 1 - torch.sigmoid(zz))
    (
        (1 - pt) ** 0.5
        * F.binary_cross_entropy_with_logits(zz, F.one_hot(y, 3).float(), reduction="none")
    ).sum().backward()
    assert not torch.all(torch.isfinite(zz.grad))


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("loss_type", ["softmax", "sigmoid", "focal"])
def test_half_precision_matches_float32(half, loss_type):
    z = torch.tensor([[-12.0, 12.0, 0.0, -12.0], [12.0, -12.0, 12.0, 3.0]])
    y = torch.tensor([0, 1])  # positives at -12: the classic half-precision failure
    counts = [10, 20, 30, 40]
    full = class_balanced_loss(
        z, y, counts, beta=0.99, loss_type=loss_type, gamma=0.5, reduction="none"
    )
    zh = z.to(half).requires_grad_(True)
    got = class_balanced_loss(
        zh, y, counts, beta=0.99, loss_type=loss_type, gamma=0.5, reduction="none"
    )
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, full, rtol=1e-6, atol=1e-6)
    got.sum().backward()
    assert zh.grad.dtype == half and torch.all(torch.isfinite(zh.grad.float()))


def test_autocast_bfloat16_logits_match_float32():
    torch.manual_seed(0)
    layer = nn.Linear(8, 5)
    x = torch.randn(16, 8) * 4
    y = torch.randint(0, 5, (16,))
    loss_fn = ClassBalancedLoss([50, 20, 10, 5, 2], beta=0.999, loss_type="focal", gamma=1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(x)
        assert logits.dtype == torch.bfloat16
        loss = loss_fn(logits, y)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, loss_fn(logits.float(), y), rtol=1e-6, atol=1e-6)


def _fresh(z):
    return z.detach().clone().requires_grad_(True)


def _compiled_and_eager(fn, z, backend, *args):
    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    z1, z2 = _fresh(z), _fresh(z)
    eager_value, compiled_value = fn(z1, *args), compiled(z2, *args)
    eager_value.sum().backward()
    compiled_value.sum().backward()
    return (compiled_value, z2.grad), (eager_value, z1.grad)


@pytest.mark.slow
def test_compiled_fullgraph_equals_eager_for_list_numpy_tensor_counts_and_any_gamma():
    """fullgraph capture (aot_eager: dynamo + autograd tracing) for every kind of counts,
    and a second and third gamma (which used to fail on a symbolic float)."""
    import numpy as np

    z, y, _ = make_batch(n=6, c=4, seed=9, scale=4.0)
    counts = [400, 40, 8, 2]

    def fn(logits, samples_per_class, gamma):
        return class_balanced_loss(
            logits, y, samples_per_class, beta=0.999, loss_type="focal", gamma=gamma
        )

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    for samples_per_class in (counts, np.array(counts), torch.tensor(counts)):
        for gamma in (0.5, 2.0, 0.0):
            z1, z2 = _fresh(z), _fresh(z)
            expected, got = fn(z1, samples_per_class, gamma), compiled(z2, samples_per_class, gamma)
            expected.backward()
            got.backward()
            torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(z2.grad, z1.grad, rtol=1e-6, atol=1e-8)
        torch._dynamo.reset()  # fresh recompile budget for the next kind of counts


@pytest.mark.slow
def test_compiled_index_kernel_is_exact_at_the_extremes():
    """The pointwise formula the compiler fuses gives the eager kernel's values at any logit."""
    big = torch.finfo(torch.float32).max
    row = [0.0, 0.7, -3.0, 17.0, -25.0, 90.0, -700.0, 1e30, -big, big]
    z = torch.tensor([row, [-v for v in row]])
    for gamma in (0.0, 0.5, 2.5):
        for y in (torch.tensor([0, 3]), torch.tensor([9, 8])):

            def fn(x, g=gamma, t=y):
                return sigmoid_focal_cross_entropy(x, t, gamma=g, reduction="none")

            (value, grad), (expected, expected_grad) = _compiled_and_eager(fn, z, "aot_eager")
            torch.testing.assert_close(value, expected, rtol=2e-6, atol=0)
            torch.testing.assert_close(grad, expected_grad, rtol=2e-6, atol=1e-30)
        torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", ["softmax", "focal"])
def test_compiled_module_and_function_with_inductor_equal_eager(loss_type):
    """The default backend (inductor) fuses the kernels; values and gradients stay eager's."""
    z, y, _ = make_batch(n=16, c=12, seed=9, scale=4.0)
    module = ClassBalancedLoss(list(range(1, 13)), beta=0.99, loss_type=loss_type, gamma=0.5)
    (value, grad), (expected, expected_grad) = _compiled_and_eager(
        lambda x: module(x, y), z, "inductor"
    )
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("opaque_scaling", [False, True])
def test_compiled_backward_on_both_sides_of_the_threshold(opaque_scaling, monkeypatch):
    """Compiled backward: above the threshold the opaque row scaling (the forward's
    gradient kept), below it a plain product; both give eager's gradient."""
    torch._dynamo.reset()
    if opaque_scaling:  # the test's 30 elements count as large
        monkeypatch.setattr(kernels, "_BLOCK_ELEMENTS", 0)
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm.code)
        return make_boxed_func(gm.forward)

    z, y, w = make_batch(n=6, c=5, seed=4, scale=4.0)

    def fn(x):
        return sigmoid_focal_cross_entropy(x, y, w, gamma=0.5, reduction="sum")

    backend = aot_autograd(fw_compiler=record, bw_compiler=record)
    (value, grad), (expected, expected_grad) = _compiled_and_eager(fn, z, backend)
    assert len(graphs) == 2 and ("scale_rows" in graphs[1]) == opaque_scaling
    torch.testing.assert_close(value, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-30)
    torch._dynamo.reset()


@pytest.mark.slow
def test_compiled_in_place_backward_of_a_retained_graph_gives_the_same_gradient(monkeypatch):
    """The compiled backward scales the kept gradient in place: a second backward of a
    retained graph (a loss scale other than 1) must still give eager's gradient."""
    torch._dynamo.reset()
    monkeypatch.setattr(kernels, "_BLOCK_ELEMENTS", 0)  # the opaque in-place scaling
    z, y, w = make_batch(n=6, c=5, seed=21, scale=4.0)
    compiled = torch.compile(
        lambda x: 3.0 * sigmoid_focal_cross_entropy(x, y, w, gamma=0.5), fullgraph=True
    )
    x, x_eager = _fresh(z), _fresh(z)
    (3.0 * sigmoid_focal_cross_entropy(x_eager, y, w, gamma=0.5)).backward()
    loss = compiled(x)
    for _ in range(2):
        x.grad = None
        loss.backward(retain_graph=True)
        torch.testing.assert_close(x.grad, x_eager.grad, rtol=1e-6, atol=1e-30)
    torch._dynamo.reset()


def _out_of_range_batch(bad: int, loss_type: str):
    z, y, w = make_batch(n=5, c=4, seed=3)
    y[2] = bad
    gamma = 0.5 if loss_type == "focal" else 0.0

    def fn(logits):
        return sigmoid_focal_cross_entropy(logits, y, w, gamma=gamma, validate_args=False)

    return fn, z


@pytest.mark.parametrize("loss_type", ["sigmoid", "focal"])
@pytest.mark.parametrize("bad", [-1, 4])
@pytest.mark.parametrize("grad", [True, False])
def test_out_of_range_index_without_validation_raises_not_a_wrong_loss(
    loss_type, bad, grad, index_kernel_path
):
    """``validate_args=False`` (no host read): a class index of -1 or C used to become a
    row without a positive label (a wrong loss) in the block kernel; the kernels' gather
    checks it where it runs (here: torch's index error; CUDA: a device-side assert)."""
    fn, z = _out_of_range_batch(bad, loss_type)
    with pytest.raises(RuntimeError, match="out of bounds"), torch.set_grad_enabled(grad):
        fn(z.requires_grad_(True)).sum().backward()


@pytest.mark.slow
@pytest.mark.parametrize("bad", [-1, 4])
def test_compiled_out_of_range_index_without_validation_raises(bad):
    """The compiled kernel's gather keeps its bounds check (inductor's, in the kernel)."""
    torch._dynamo.reset()
    fn, z = _out_of_range_batch(bad, "focal")
    with pytest.raises(RuntimeError, match="out of bounds"):
        torch.compile(fn, fullgraph=True)(z.requires_grad_(True)).backward()
    torch._dynamo.reset()


@pytest.mark.slow
def test_inductor_compiled_focal_is_exact_at_the_extremes():
    """The C++ kernel inductor generates keeps the exact formula (the first-order log1p
    correction is not folded away): compiled values and gradients equal eager's, per logit."""
    big = torch.finfo(torch.float32).max
    row = [0.0, 0.7, -3.0, -5.0, 17.0, -20.0, -25.0, 90.0, -700.0, 1e30, -big, big]
    z = torch.tensor([row, [-v for v in row]])
    y = torch.tensor([0, 3])

    def fn(x):
        return sigmoid_focal_cross_entropy(x, y, gamma=0.5, reduction="none")

    (value, grad), (expected, expected_grad) = _compiled_and_eager(fn, z, "inductor")
    torch.testing.assert_close(value, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-30)


# ---------------------------------------------------------------------------
# modules, registry, state_dict
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("loss_type", ["softmax", "sigmoid", "focal"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_module_equals_function(loss_type, reduction):
    z, y, _ = make_batch(n=10, c=4, seed=10)
    counts = [300, 30, 10, 3]
    module = ClassBalancedLoss(
        counts, beta=0.999, loss_type=loss_type, gamma=2.0, reduction=reduction
    )
    expected = class_balanced_loss(
        z, y, counts, beta=0.999, loss_type=loss_type, gamma=2.0, reduction=reduction
    )
    torch.testing.assert_close(module(z, y), expected, rtol=0, atol=0)
    assert module.uses_prior_bias == (loss_type != "softmax")


def test_state_dict_round_trip_and_buffers_move():
    module = ClassBalancedLoss([500, 50, 5], beta=0.99, loss_type="focal", gamma=0.5)
    assert set(module.state_dict()) == {"weight", "samples_per_class"}
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    other = ClassBalancedLoss([1, 1, 1], beta=0.0, loss_type="focal", gamma=0.5)
    assert torch.equal(other.weight, torch.ones(3))
    other.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(other.weight, module.weight)
    moved = module.to(torch.float64)
    assert moved.weight.dtype == torch.float32  # buffers keep their dtype (see below)


@pytest.mark.parametrize("cast", [nn.Module.half, nn.Module.bfloat16, nn.Module.double])
def test_counts_and_weights_survive_module_dtype_casts(cast):
    """The reproducer: .half() turned 70000 into inf, .to(bfloat16) rounded 5000 to 4992."""
    counts = [70000, 5000, 7]
    module = ClassBalancedLoss(counts, beta=0.9999, loss_type="focal")
    weight = module.weight.clone()
    cast(module)
    assert torch.equal(module.samples_per_class, torch.tensor(counts, dtype=torch.float32))
    assert torch.equal(module.weight, weight)
    module.set_beta(0.99)
    torch.testing.assert_close(module.weight, class_balanced_weights(counts, 0.99))
    z, y, _ = make_batch(n=4, c=3)
    expected = class_balanced_loss(z, y, counts, beta=0.99, loss_type="focal")
    torch.testing.assert_close(module(z, y), expected, rtol=0, atol=0)


def test_set_beta_and_set_weight_schedule_reweighting():
    module = ClassBalancedLoss([500, 50, 5], beta=0.0, loss_type="softmax")
    assert torch.equal(module.weight, torch.ones(3))
    module.set_beta(0.999)
    torch.testing.assert_close(module.weight, class_balanced_weights([500, 50, 5], 0.999))
    module.set_weight(torch.ones(3))
    assert torch.equal(module.weight, torch.ones(3))
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        module.set_weight(torch.ones(4))
    module.set_weight(None)  # DRW before its switch: then the shape was no longer checked
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        module.set_weight(torch.ones(4))


def test_registry_builds_named_losses():
    assert {"softmax", "sigmoid", "focal"} <= set(available_losses())
    loss = build_loss("focal", [10, 5], beta=0.9, gamma=0.5)
    assert isinstance(loss, ClassBalancedLoss) and loss.loss_type == "focal" and loss.gamma == 0.5
    with pytest.raises(
        ValueError, match=r"unknown loss 'ldam2': expected one of .*'focal'.*'softmax'"
    ):
        build_loss("ldam2", [10, 5])
    with pytest.raises(ValueError, match="already registered"):
        cb.register_loss("focal", lambda *a, **k: None)


def test_weighted_loss_without_weights_is_plain():
    z, y, _ = make_batch()
    torch.testing.assert_close(WeightedLoss("softmax")(z, y), F.cross_entropy(z, y))


# ---------------------------------------------------------------------------
# prior bias
# ---------------------------------------------------------------------------


def test_prior_bias_closed_form():
    for c in (2, 10, 100, 8142):
        b = prior_bias(c)
        torch.testing.assert_close(b, torch.full((c,), -math.log(c - 1)))
        torch.testing.assert_close(
            torch.sigmoid(b.double()),
            torch.full((c,), 1 / c, dtype=torch.float64),
            rtol=1e-6,
            atol=0,
        )
    per_class = prior_bias(3, [0.5, 0.25, 0.01])
    torch.testing.assert_close(per_class, torch.tensor([0.0, -math.log(3), -math.log(99)]))
    layer = init_prior_bias_(nn.Linear(7, 4))
    torch.testing.assert_close(layer.bias.detach(), torch.full((4,), -math.log(3)))


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((0,), ValueError, "num_classes must be an integer >= 1, got 0"),
        ((1,), ValueError, "explicit prior"),
        ((3, 1.0), ValueError, "strictly between 0 and 1"),
        ((3, [0.1, 0.2]), ValueError, r"shape \(3,\)"),
        ((2.5,), TypeError, "num_classes must be an integer >= 1"),
    ],
)
def test_prior_bias_errors(args, error, match):
    with pytest.raises(error, match=match):
        prior_bias(*args)


def test_init_prior_bias_errors():
    with pytest.raises(ValueError, match="bias=None"):
        init_prior_bias_(nn.Linear(3, 2, bias=False))
    with pytest.raises(TypeError, match="expects an nn.Linear"):
        init_prior_bias_(nn.Conv2d(1, 1, 1))


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------


def _cbl(**overrides):
    args = dict(
        logits=torch.zeros(4, 3),
        targets=torch.tensor([0, 1, 2, 1]),
        samples_per_class=[30, 20, 10],
        beta=0.9,
        loss_type="focal",
        gamma=1.0,
        reduction="mean",
    )
    args.update(overrides)
    return class_balanced_loss(
        args.pop("logits"), args.pop("targets"), args.pop("samples_per_class"), **args
    )


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        (dict(beta=1.0), ValueError, r"beta must be in \[0, 1\), got 1.0"),
        (dict(beta=-0.5), ValueError, r"beta must be in \[0, 1\)"),
        (dict(gamma=-1.0), ValueError, "gamma must be a finite number >= 0, got -1.0"),
        (dict(gamma="2"), TypeError, "gamma must be a number"),
        (
            dict(samples_per_class=[30, 0, 10]),
            ValueError,
            r"samples_per_class\[1\] .* drop that class",
        ),
        (
            dict(samples_per_class=[30, 20]),
            ValueError,
            "expected 3 counts for logits \\(4, 3\\), got 2",
        ),
        (dict(targets=torch.tensor([0, 1, 3, 1])), ValueError, r"class indices in \[0, 2\], got 3"),
        (
            dict(targets=torch.tensor([0, -1, 2, 1])),
            ValueError,
            r"class indices in \[0, 2\], got -1",
        ),
        (dict(targets=torch.tensor([0, 1, 2])), ValueError, r"shape \(N,\) = \(4,\)"),
        (
            dict(targets=torch.zeros(4, 2)),
            ValueError,
            "multi-hot targets must have the logits' shape",
        ),
        (dict(targets=torch.full((4, 3), 2.0)), ValueError, r"must lie in \[0, 1\]"),
        (dict(targets=torch.zeros(4)), TypeError, "int64 class indices of shape"),
        (dict(targets=[0, 1, 2, 1]), TypeError, "targets must be a torch.Tensor, got list"),
        (
            dict(loss_type="softmax", targets=torch.zeros(4, 3)),
            TypeError,
            "int64 class indices of shape",
        ),
        (
            dict(loss_type="hinge"),
            ValueError,
            "unknown loss_type 'hinge': expected one of 'softmax', 'sigmoid', 'focal'",
        ),
        (
            dict(reduction="avg"),
            ValueError,
            "unknown reduction 'avg': expected one of 'mean', 'sum', 'none'",
        ),
        (dict(logits=torch.zeros(4, 3, dtype=torch.long)), TypeError, "floating-point"),
        (dict(logits=torch.zeros(4)), ValueError, r"shape \(N, C\)"),
        (dict(logits=[[0.0]]), TypeError, "logits must be a torch.Tensor"),
        (
            dict(targets=torch.tensor([0, 1, 2, 1], device="meta")),
            ValueError,
            "logits' device cpu, got targets on meta",
        ),
    ],
)
def test_bad_inputs(overrides, error, match):
    with pytest.raises(error, match=match):
        _cbl(**overrides)


def test_bad_weights():
    z, y = torch.zeros(2, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        sigmoid_focal_cross_entropy(z, y, torch.ones(2))
    with pytest.raises(ValueError, match="finite values >= 0"):
        softmax_cross_entropy(z, y, torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(TypeError, match="weight must be a tensor"):
        softmax_cross_entropy(z, y, [1.0, 1.0, 1.0])


@pytest.mark.parametrize(
    "dtype", [torch.int8, torch.uint8, torch.int32, torch.uint16, torch.uint64]
)
def test_class_indices_of_every_integer_width(dtype):
    """uint16 / uint32 / uint64 targets failed with torch's NotImplementedError ("aminmax")."""
    z, y, w = make_batch(n=6, c=4, seed=2)
    for fn in (softmax_cross_entropy, sigmoid_focal_cross_entropy):
        expected = fn(z, y, w.float(), reduction="none")
        torch.testing.assert_close(fn(z, y.to(dtype), w.float(), reduction="none"), expected)
        with pytest.raises(ValueError, match=r"class indices in \[0, 3\], got 4"):
            fn(z, torch.tensor([0, 1, 4, 1, 1, 1], dtype=dtype))


def test_integer_multi_hot_targets_are_multi_hot():
    """F.one_hot gives int64 (N, C) targets: they were refused as class indices of the
    wrong shape; they are multi-hot, like float or bool ones."""
    z, y, w = make_batch(n=6, c=4, seed=2)
    w = w.float()
    multi_hot = F.one_hot(y, 4)
    multi_hot[0, (y[0] + 1) % 4] = 1
    for fn in (sigmoid_cross_entropy, sigmoid_focal_cross_entropy):
        torch.testing.assert_close(fn(z, multi_hot, w), fn(z, multi_hot.float(), w))
    with pytest.raises(ValueError, match=r"multi-hot targets must lie in \[0, 1\]"):
        sigmoid_cross_entropy(z, multi_hot * 2)
    with pytest.raises(ValueError, match=r"class-index targets must have shape \(N,\)"):
        softmax_cross_entropy(z, multi_hot)


def test_complex_weights_and_targets_are_refused():
    """Their imaginary part was dropped with a warning, not refused."""
    z, y = torch.zeros(2, 3), torch.tensor([0, 1])
    weight = torch.ones(3, dtype=torch.complex64)
    with pytest.raises(TypeError, match="weight must hold real numbers, got dtype torch.complex64"):
        softmax_cross_entropy(z, y, weight)
    with pytest.raises(TypeError, match="weight must hold real numbers"):
        WeightedLoss("focal", weight)
    with pytest.raises(TypeError, match="targets must be .* got dtype torch.complex64"):
        sigmoid_cross_entropy(z, torch.zeros(2, 3, dtype=torch.complex64))


def test_empty_batch_gives_zero_not_nan():
    z, y = torch.zeros(0, 3, requires_grad=True), torch.zeros(0, dtype=torch.long)
    for loss_type in ("softmax", "sigmoid", "focal"):
        value = class_balanced_loss(z, y, [3, 2, 1], beta=0.9, loss_type=loss_type)
        assert value.item() == 0.0


def test_public_names_do_not_shadow_torchvision_or_torch_functional():
    """A user who swaps one import for the other must not get silently different numbers."""
    import torchvision.ops

    for name in cb.__all__:
        for namespace in (torchvision.ops, F, nn):
            assert getattr(namespace, name, None) in (None, getattr(cb, name)), name


def test_every_loss_is_a_function_and_module_pair():
    pairs = {
        "class_balanced_loss": "ClassBalancedLoss",
        "ldam_loss": "LDAMLoss",
        "logit_adjusted_loss": "LogitAdjustedLoss",
        "balanced_softmax_loss": "BalancedSoftmaxLoss",
        "multilabel_class_balanced_loss": "MultiLabelClassBalancedLoss",
    }
    z, y, _ = make_batch(n=6, c=3, seed=16)
    counts = [30, 20, 10]
    for function, module in pairs.items():
        assert function in cb.__all__ and module in cb.__all__
        if function == "multilabel_class_balanced_loss":
            t = F.one_hot(y, 3)
            kwargs = {"beta": 0.9}
            expected = getattr(cb, function)(z, t, counts, **kwargs)
            got = getattr(cb, module)(counts, **kwargs)(z, t)
        else:
            kwargs = (
                {"beta": 0.9, "loss_type": "focal"} if function == "class_balanced_loss" else {}
            )
            expected = getattr(cb, function)(z, y, counts, **kwargs)
            got = getattr(cb, module)(counts, **kwargs)(z, y)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_the_literal_types_list_the_accepted_choices():
    from typing import get_args

    from classbalanced.losses.functional import LOSS_TYPES, REDUCTIONS
    from classbalanced.losses.types import LossType, Reduction

    assert get_args(Reduction) == REDUCTIONS
    assert get_args(LossType) == LOSS_TYPES
