"""The softmax family (softmax CE, class-balanced softmax, LDAM, logit-adjusted, balanced
softmax) against 50-digit mpmath when the true class wins or loses by a wide margin."""

import pytest
import torch

from classbalanced.losses import (
    BalancedSoftmaxLoss,
    balanced_softmax_loss,
    class_balanced_loss,
    ldam_loss,
    logit_adjusted_loss,
    softmax_cross_entropy,
)
from classbalanced.losses.softmax import softmax_ce_rows
from classbalanced.weights import class_balanced_weights

mpmath = pytest.importorskip("mpmath")

MARGINS = [0.0, 1e-3, 0.7, 3.0, 17.0, 20.0, 21.0, 25.0, 30.0, 40.0, 87.0, 90.0, 100.0]
MARGINS += [700.0, 745.0, 1e3, 1e4]
#: counts whose LDAM margins 0.5 * (1 / n) ** (1/4) are exact binary fractions
LDAM_COUNTS = [1.0, 16.0, 256.0, 4096.0]


def _rows(margin: float) -> list[tuple[list[float], int]]:
    """Rows of 4 logits and their class: the true class winning by ``margin`` (alone, tied
    with another class, or first of two close winners), losing by it, and both at once."""
    m = margin
    return [
        ([m, 0.0, -1.5, m - 2.5], 0),
        ([0.0, -3.0, m, 0.5], 2),
        ([m, m, 0.0, -1.0], 1),
        ([0.0, m, -3.0, 0.5], 0),
        ([-m, 0.0, 0.5, -1.0], 0),
        ([m, -m, 0.0, 1.0], 1),
    ]


def _batch(dtype):
    rows = [row for m in MARGINS for row in _rows(m)]
    z = torch.tensor([r for r, _ in rows], dtype=dtype)
    return z, torch.tensor([y for _, y in rows])


def _mp_ce(row, y: int) -> tuple[float, list[float]]:
    """``-log softmax(row)[y]`` and its gradient ``p - onehot(y)``, with 50 digits, the
    true class's entry as ``-sum_{j != y} p_j`` (no cancellation in the reference)."""
    with mpmath.workdps(50):
        x = [mpmath.mpf(v) for v in row]
        e = [mpmath.exp(v - x[y]) for v in x]
        others = sum(e[j] for j in range(len(x)) if j != y)
        grad = [e[j] / (1 + others) if j != y else -others / (1 + others) for j in range(len(x))]
        return mpmath.log1p(others), grad


def _assert_exact(got, expected, dtype, what, condition=1.0) -> None:
    """Within 8 ulps relative (times ``condition``), or ``finfo.tiny`` absolute where the
    exact value underflows."""
    eps, tiny = torch.finfo(dtype).eps, torch.finfo(dtype).tiny
    with mpmath.workdps(50):
        error = abs(mpmath.mpf(got) - expected)
        bound = 8 * eps * condition * abs(expected)
        assert error <= bound or error <= tiny, (what, got, float(expected))


def _check(per, logits, x_rows, targets, row_scale, grad_scale, dtype, conditioned=False):
    """``per[b] = row_scale[b] * CE(x_b, y_b)``, ``d sum(per) / d logits[b] =
    row_scale[b] * grad_scale * (p - onehot)(x_b)``, with ``x`` as mpmath rows.

    ``conditioned``: rows whose differences ``x_j - x_k`` are not exact in the dtype, so
    the tolerance is 8 ulps times the condition number of ``exp(x_j - x_k)``,
    ``1 + max_j |x_j - max(x)|``; otherwise 8 ulps (the test rows' differences are exact).
    """
    per.sum().backward()
    for b, (x, y) in enumerate(zip(x_rows, targets.tolist(), strict=True)):
        loss, grad = _mp_ce(x, y)
        cond = 1.0 + max(max(x) - v for v in x) if conditioned else 1.0
        _assert_exact(per[b].item(), row_scale[b] * loss, dtype, ("loss", x, y), cond)
        for j, g in enumerate(grad):
            got = logits.grad[b, j].item()
            expected = row_scale[b] * grad_scale * g
            _assert_exact(got, expected, dtype, ("grad", x, y, j), cond)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_cross_entropy_exact_at_every_margin(dtype, weighted):
    z, y = _batch(dtype)
    w = torch.tensor([0.3, 1.7, 2.5, 0.1], dtype=dtype) if weighted else None
    logits = z.clone().requires_grad_(True)
    per = softmax_cross_entropy(logits, y, w, reduction="none")
    scale = [1.0] * len(y) if w is None else [w[c].item() for c in y.tolist()]
    _check(per, logits, z.tolist(), y, scale, 1.0, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_class_balanced_softmax_exact_at_every_margin(dtype):
    z, y = _batch(dtype)
    counts = [500, 40, 7, 1]
    w = class_balanced_weights(counts, 0.99, dtype=dtype)
    logits = z.clone().requires_grad_(True)
    per = class_balanced_loss(logits, y, counts, beta=0.99, loss_type="softmax", reduction="none")
    _check(per, logits, z.tolist(), y, [w[c].item() for c in y.tolist()], 1.0, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weighted", [False, True])
def test_ldam_exact_at_every_margin(dtype, weighted):
    """Class offsets: the margins of these counts are exact, so the reference is LDAM's
    definition in exact arithmetic, ``CE(s * (z - Delta_y onehot(y)), y)``."""
    z, y = _batch(dtype)
    w = torch.tensor([0.3, 1.7, 2.5, 0.1], dtype=dtype) if weighted else None
    logits = z.clone().requires_grad_(True)
    s, max_m = 2.0, 0.5
    per = ldam_loss(logits, y, LDAM_COUNTS, w, max_m=max_m, s=s, reduction="none")
    with mpmath.workdps(50):
        delta = [max_m * mpmath.root(LDAM_COUNTS[0] / mpmath.mpf(n), 4) for n in LDAM_COUNTS]
        x_rows = [
            [s * (mpmath.mpf(v) - (delta[c] if j == c else 0)) for j, v in enumerate(row)]
            for row, c in zip(z.tolist(), y.tolist(), strict=True)
        ]
    scale = [1.0] * len(y) if w is None else [w[c].item() for c in y.tolist()]
    _check(per, logits, x_rows, y, scale, s, dtype)


PRIOR_COUNTS = [900.0, 60.0, 30.0, 10.0]


def _prior_rows(z, y, tau: float):
    """The adjusted logits ``z + tau * log(n)`` in 50 digits (exact offsets, no rounding)."""
    with mpmath.workdps(50):
        offsets = [tau * mpmath.log(mpmath.mpf(n)) for n in PRIOR_COUNTS]
        return [
            [mpmath.mpf(v) + o for v, o in zip(row, offsets, strict=True)] for row in z.tolist()
        ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("loss", ["logit_adjusted", "logit_adjusted_tau", "balanced_softmax"])
@pytest.mark.parametrize("weighted", [False, True])
def test_prior_shifted_losses_exact_at_every_margin(dtype, loss, weighted):
    """``CE(z + tau * log(n), y)`` with the offsets exact (50 digits): within 8 ulps at every
    margin, as the plain cross-entropy; adding rounded offsets to the logits would be off
    by about the margin in ulps (every adjusted difference rounded)."""
    z, y = _batch(dtype)
    w = torch.tensor([0.3, 1.7, 2.5, 0.1], dtype=dtype) if weighted else None
    logits = z.clone().requires_grad_(True)
    tau = {"logit_adjusted": 1.0, "logit_adjusted_tau": 1.5, "balanced_softmax": 1.0}[loss]
    if loss == "balanced_softmax":
        per = balanced_softmax_loss(logits, y, PRIOR_COUNTS, w, reduction="none")
    else:
        per = logit_adjusted_loss(logits, y, PRIOR_COUNTS, w, tau=tau, reduction="none")
    scale = [1.0] * len(y) if w is None else [w[c].item() for c in y.tolist()]
    _check(per, logits, _prior_rows(z, y, tau), y, scale, 1.0, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_an_offset_range_beyond_the_dtype_is_folded_and_finite(dtype):
    """Counts whose factors ``(n / max n) ** tau`` fall below ``eps``: those classes' offsets
    go into their logits (no ``inf * 0``): value and gradient within 8 ulps times the
    condition number ``1 + max_j |x_j - max x|`` of the adjusted rows (the folded offsets
    rounded into them)."""
    counts, tau = [1e6, 1.0, 3.0, 2e5], 60.0  # (1e-6) ** 60 underflows in both dtypes
    z, y = _batch(dtype)
    logits = z.clone().requires_grad_(True)
    per = logit_adjusted_loss(logits, y, counts, tau=tau, reduction="none")
    with mpmath.workdps(50):
        offsets = [tau * mpmath.log(mpmath.mpf(n)) for n in counts]
        x = [[mpmath.mpf(v) + o for v, o in zip(row, offsets, strict=True)] for row in z.tolist()]
    _check(per, logits, x, y, [1.0] * len(y), 1.0, dtype, conditioned=True)
    assert torch.isfinite(per).all() and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("counts", [PRIOR_COUNTS, [1e6, 1.0, 3.0, 2e5]])
def test_prior_shifted_losses_compile_fullgraph_to_eager(counts):
    """The logit-adjusted loss and balanced softmax (module and function) under
    ``torch.compile(fullgraph=True)``: no graph break (the eager path's host check of the
    folded classes stays out of the graph) and eager's values and gradients, with classes
    folded (tau 60) and without."""
    z, y = _batch(torch.float64)
    losses = [
        BalancedSoftmaxLoss(counts, reduction="none").double(),
        lambda x, t: logit_adjusted_loss(x, t, counts, tau=60.0, reduction="none"),
    ]
    for loss in losses:
        compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
        a, b = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
        got, want = compiled(a, y), loss(b, y)
        got.sum().backward()
        want.sum().backward()
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-300)
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-300)


def test_a_winning_margin_of_20_is_not_zero():
    """The issue's example: torch's cross-entropy returns 0 here in float32."""
    got = softmax_cross_entropy(torch.tensor([[20.0, 0.0]]), torch.tensor([0]))
    assert got.item() == pytest.approx(2.0611536e-9, rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_fullgraph_is_exact_at_every_margin(dtype):
    z, y = _batch(dtype)
    compiled = torch.compile(softmax_ce_rows, fullgraph=True, backend="aot_eager")
    logits = z.clone().requires_grad_(True)
    _check(compiled(logits, y), logits, z.tolist(), y, [1.0] * len(y), 1.0, dtype)


def test_torch_func_grad_vmap_hessian_equal_the_closed_forms():
    """``grad`` is ``p - onehot`` (exact at a margin of 40 in float64), per-sample gradients
    through ``vmap``, and the Hessian ``diag(p) - p p^T`` of a row (to 8000 ulps: no
    exactness is claimed for it, only no cancellation)."""
    z = torch.tensor([[40.0, 0.0, -1.0], [0.0, 3.0, -2.0], [1.0, 1.0, 0.5]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1])

    def loss(logits, targets):
        return softmax_cross_entropy(logits, targets, reduction="sum", validate_args=False)

    grad = torch.func.grad(loss)(z, y)
    for b in range(3):
        _, expected = _mp_ce(z[b].tolist(), int(y[b]))
        for j in range(3):
            _assert_exact(grad[b, j].item(), expected[j], torch.float64, (b, j))
    per_sample = torch.func.vmap(torch.func.grad(lambda zi, yi: loss(zi[None], yi[None])))(z, y)
    torch.testing.assert_close(per_sample, grad, rtol=0, atol=0)
    for b in range(3):
        hessian = torch.func.hessian(lambda r, b=b: loss(r[None], y[b : b + 1]))(z[b])
        with mpmath.workdps(50):
            e = [mpmath.exp(mpmath.mpf(v)) for v in z[b].tolist()]
            p = [v / sum(e) for v in e]  # H_jj = p_j (1 - p_j): 5.8e-18 at the winner, not 0
            for i in range(3):
                for j in range(3):
                    exact = (p[i] if i == j else 0) - p[i] * p[j]
                    _assert_exact(hessian[i, j].item(), exact, torch.float64, (b, i, j), 1e3)


def test_second_derivatives_pass_gradgradcheck_at_wide_margins():
    z = torch.tensor([[30.0, 0.0, -1.0], [0.0, 30.0, 2.0]], dtype=torch.float64)
    y = torch.tensor([0, 0])
    w = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)

    def f(logits):
        return softmax_cross_entropy(logits, y, w, reduction="none")

    assert torch.autograd.gradgradcheck(f, (z.clone().requires_grad_(True),))


@pytest.mark.parametrize("bad", [-1, 4])
@pytest.mark.parametrize("grad", [True, False])
def test_out_of_range_index_without_validation_raises(bad, grad):
    """``validate_args=False`` reads nothing on the host; the true logit's gather still checks
    the index (CPU: torch's error; CUDA: a device-side assert), so -1 (which plain indexing
    would take as the last class) and C fail rather than give a loss."""
    z = torch.zeros(3, 4, requires_grad=True)
    y = torch.tensor([0, bad, 1])
    counts = [10, 5, 3, 1]
    losses = [
        lambda: softmax_cross_entropy(z, y, torch.ones(4), validate_args=False),
        lambda: ldam_loss(z, y, counts, validate_args=False),
        lambda: logit_adjusted_loss(z, y, counts, validate_args=False),
        lambda: balanced_softmax_loss(z, y, counts, validate_args=False),
    ]
    for loss in losses:  # an IndexError where a per-class vector is indexed first
        with pytest.raises((RuntimeError, IndexError), match="out of bounds"):
            with torch.set_grad_enabled(grad):
                loss()
