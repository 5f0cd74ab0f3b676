import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from classbalanced.losses import sigmoid_cross_entropy, sigmoid_focal_cross_entropy
from classbalanced.multilabel import (
    MultiLabelClassBalancedLoss,
    RunningClassCounts,
    multilabel_class_balanced_loss,
    positive_counts,
    positive_counts_from_loader,
)
from classbalanced.weights import class_balanced_weights

POS = [400, 90, 12, 3]
NEG = [600, 910, 988, 997]


def _batch(n=16, c=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, c, generator=g) * 3).to(dtype)
    targets = (torch.rand(n, c, generator=g) < 0.3).to(dtype)
    return logits, targets


def _reference(logits, targets, pos, neg, beta, gamma, reduction, weight_dtype=torch.float64):
    """Elementwise float64 loop over the documented definition (weights of ``weight_dtype``)."""

    def weights(counts):
        return class_balanced_weights(counts, beta, dtype=weight_dtype).double().tolist()

    w_pos = weights(pos)
    w_neg = [1.0] * len(pos) if neg is None else weights(neg)
    z, t = logits.double().tolist(), targets.double().tolist()
    rows = []
    for zb, tb in zip(z, t, strict=True):
        total = 0.0
        for j, (zz, tt) in enumerate(zip(zb, tb, strict=True)):
            p = 1.0 / (1.0 + math.exp(-zz))
            if tt == 1.0:
                total += w_pos[j] * (1.0 - p) ** gamma * -math.log(p)
            else:
                total += w_neg[j] * p**gamma * -math.log(1.0 - p)
        rows.append(total)
    if reduction == "none":
        return torch.tensor(rows, dtype=torch.float64)
    if reduction == "sum":
        return torch.tensor(sum(rows), dtype=torch.float64)
    return torch.tensor(sum(rows) / max(1.0, sum(map(sum, t))), dtype=torch.float64)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("neg", [None, NEG])
@pytest.mark.parametrize("beta", [0.0, 0.99, 0.9999])
def test_matches_loop_reference(beta, neg, gamma, reduction):
    logits, targets = _batch()
    got = multilabel_class_balanced_loss(
        logits, targets, POS, beta=beta, negatives_per_class=neg, gamma=gamma, reduction=reduction
    )
    want = _reference(logits, targets, POS, neg, beta, gamma, reduction)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)
    module = MultiLabelClassBalancedLoss(
        POS, beta=beta, negatives_per_class=neg, gamma=gamma, reduction=reduction
    )
    # the module's weights are float32 buffers
    want = _reference(logits, targets, POS, neg, beta, gamma, reduction, torch.float32)
    torch.testing.assert_close(module(logits, targets), want, rtol=1e-12, atol=1e-15)


def test_per_class_weighting_of_each_term():
    """A positive of class j is weighted by w_pos[j], a negative by w_neg[j], nothing else."""
    beta = 0.999
    w_pos = class_balanced_weights(POS, beta, dtype=torch.float64)
    w_neg = class_balanced_weights(NEG, beta, dtype=torch.float64)
    z = torch.zeros(1, 4, dtype=torch.float64)
    for j in range(4):
        t = torch.zeros(1, 4, dtype=torch.float64)
        t[0, j] = 1.0
        got = multilabel_class_balanced_loss(
            z, t, POS, beta=beta, negatives_per_class=NEG, gamma=0.0, reduction="sum"
        ).item()
        want = math.log(2) * (w_pos[j] + w_neg.sum() - w_neg[j]).item()
        assert got == pytest.approx(want, rel=1e-12)
    # an example with two positives: each term takes its own class's weight
    t = torch.tensor([[1.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    got = multilabel_class_balanced_loss(z, t, POS, beta=beta, gamma=0.0, reduction="none")
    want = math.log(2) * (w_pos[0] + w_pos[2] + 2.0)
    assert got.item() == pytest.approx(want.item(), rel=1e-12)


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0])
def test_agrees_with_single_label_loss_where_it_must(gamma):
    logits, _ = _batch(n=20, c=5, seed=3, dtype=torch.float32)
    labels = torch.arange(20) % 5
    one_hot = torch.nn.functional.one_hot(labels, 5).float()
    counts = [500, 100, 40, 9, 2]
    single = sigmoid_focal_cross_entropy if gamma else sigmoid_cross_entropy
    kwargs = {"gamma": gamma} if gamma else {}
    # beta = 0: every weight is 1 and both are the plain sigmoid / focal loss
    ours = multilabel_class_balanced_loss(logits, one_hot, counts, beta=0.0, gamma=gamma)
    torch.testing.assert_close(ours, single(logits, labels, **kwargs))
    # equal counts: the weights are all 1 for any beta
    ours = multilabel_class_balanced_loss(logits, one_hot, [50] * 5, beta=0.999, gamma=gamma)
    torch.testing.assert_close(ours, single(logits, labels, **kwargs))
    # with unequal counts they differ: the single-label loss weights every term by alpha_y
    alpha = class_balanced_weights(counts, 0.999)
    ours = multilabel_class_balanced_loss(logits, one_hot, counts, beta=0.999, gamma=gamma)
    theirs = single(logits, labels, alpha, **kwargs)
    assert not torch.allclose(ours, theirs)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_gradcheck(gamma):
    logits, targets = _batch(n=5, c=4, seed=1)
    logits.requires_grad_(True)

    def fn(z):
        return multilabel_class_balanced_loss(
            z, targets, POS, beta=0.99, negatives_per_class=NEG, gamma=gamma
        )

    assert torch.autograd.gradcheck(fn, (logits,))


def test_float64_logits_use_float64_weights():
    """The weights were rounded to float32, so float64 losses were off by ~1e-8 relative."""
    logits, targets = _batch(n=6, c=4)
    beta, pos, neg = 0.99, torch.tensor(POS, dtype=torch.float64), torch.tensor(NEG).double()
    w_pos, w_neg = ((1 - beta) / (1 - beta**n) for n in (pos, neg))  # closed form, sum = C
    w_pos, w_neg = w_pos * 4 / w_pos.sum(), w_neg * 4 / w_neg.sum()
    terms = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    expected = (terms * torch.where(targets > 0, w_pos, w_neg)).sum() / targets.sum()
    got = multilabel_class_balanced_loss(
        logits, targets, POS, beta=beta, negatives_per_class=NEG, gamma=0.0
    )
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=0)


@pytest.mark.slow
def test_module_compiles_with_fullgraph_and_equals_eager():
    """The eager 0/1 check of the targets read them on the host, which broke the graph."""
    logits, targets = _batch(n=6, c=4, dtype=torch.float32)
    module = MultiLabelClassBalancedLoss(POS, beta=0.99, negatives_per_class=NEG, gamma=0.5)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(logits, targets), module(logits, targets))


@pytest.mark.parametrize("gamma", [0.0, 0.25, 1.0, 2.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_extreme_logits_are_finite(gamma, dtype):
    big = 6e4 if dtype == torch.float16 else 1e4
    logits = torch.tensor([[big, -big, 0.0, -100.0], [-big, big, 30.0, 100.0]], dtype=dtype)
    targets = torch.tensor([[1, 1, 0, 1], [0, 0, 1, 0]])
    logits.requires_grad_(True)
    loss = multilabel_class_balanced_loss(
        logits, targets, POS, beta=0.999, negatives_per_class=NEG, gamma=gamma, reduction="sum"
    )
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    # a positive with logit -100 at gamma = 1 contributes w_pos * 100, not 0
    single = multilabel_class_balanced_loss(
        torch.tensor([[-100.0]]), torch.tensor([[1.0]]), [5], beta=0.9, gamma=1.0
    )
    assert single.item() == pytest.approx(100.0, rel=1e-6)


def test_mean_divides_by_positives_at_least_one():
    z = torch.zeros(3, 2)
    none = torch.zeros(3, 2)
    total = multilabel_class_balanced_loss(z, none, [5, 5], beta=0.9, reduction="sum")
    assert multilabel_class_balanced_loss(z, none, [5, 5], beta=0.9).item() == total.item()
    t = torch.tensor([[1, 1], [0, 1], [0, 0]])
    total = multilabel_class_balanced_loss(z, t, [5, 5], beta=0.9, reduction="sum")
    mean = multilabel_class_balanced_loss(z, t, [5, 5], beta=0.9)
    assert mean.item() == pytest.approx(total.item() / 3)


def test_module_buffers_and_set_beta():
    module = MultiLabelClassBalancedLoss(POS, beta=0.0, negatives_per_class=NEG, gamma=1.0)
    assert torch.equal(module.pos_weight, torch.ones(4))
    module.set_beta(0.999)
    torch.testing.assert_close(module.pos_weight, class_balanced_weights(POS, 0.999))
    torch.testing.assert_close(module.neg_weight, class_balanced_weights(NEG, 0.999))
    state = module.state_dict()
    assert set(state) == {"positives_per_class", "negatives_per_class", "pos_weight", "neg_weight"}
    plain = MultiLabelClassBalancedLoss(POS, beta=0.999)
    assert torch.equal(plain.neg_weight, torch.ones(4)) and plain.negatives_per_class is None
    assert "beta=0.999" in repr(plain)
    with pytest.raises(ValueError, match="4 classes"):
        plain(torch.zeros(2, 3), torch.zeros(2, 3))


@pytest.mark.parametrize("cast", [torch.nn.Module.half, torch.nn.Module.bfloat16])
def test_module_counts_and_weights_survive_module_dtype_casts(cast):
    """As for the single-label losses: .half() turned the count 70000 into inf (set_beta then
    failed) and rounded the weights the loss used."""
    pos, neg = [70000, 5000, 7], [7, 5000, 70000]
    module = MultiLabelClassBalancedLoss(pos, beta=0.9999, negatives_per_class=neg)
    logits, targets = _batch(n=6, c=3, dtype=torch.float32)
    expected = module(logits, targets)
    cast(module)
    for name, value in module.state_dict().items():
        assert value.dtype == torch.float32, name
    torch.testing.assert_close(module(logits, targets), expected, rtol=0, atol=0)
    module.set_beta(0.99)
    torch.testing.assert_close(module.neg_weight, class_balanced_weights(neg, 0.99))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: _loss(targets=torch.full((2, 4), 0.5)), ValueError, "only 0/1"),
        (lambda: _loss(targets=torch.zeros(2, 3)), ValueError, "logits' shape"),
        (lambda: _loss(pos=[1, 2, 3]), ValueError, "one count per class"),
        (
            lambda: _loss(pos=[1, 0, 3, 4]),
            ValueError,
            "positives_per_class: samples_per_class\\[1\\]",
        ),
        (
            lambda: _loss(neg=[1, 2]),
            ValueError,
            "negatives_per_class must have one count per class",
        ),
        (lambda: _loss(beta=1.0), ValueError, "beta must be in"),
        (lambda: _loss(gamma=-1.0), ValueError, "gamma"),
        (lambda: _loss(reduction="avg"), ValueError, "unknown reduction"),
        (lambda: _loss(logits=torch.zeros(2, 4, dtype=torch.long)), TypeError, "floating"),
    ],
)
def test_loss_validation(call, error, match):
    with pytest.raises(error, match=match):
        call()


def _loss(logits=None, targets=None, pos=POS, neg=None, beta=0.9, gamma=0.0, reduction="mean"):
    logits = torch.zeros(2, 4) if logits is None else logits
    targets = torch.zeros(2, 4) if targets is None else targets
    return multilabel_class_balanced_loss(
        logits, targets, pos, beta=beta, negatives_per_class=neg, gamma=gamma, reduction=reduction
    )


def test_positive_counts_inputs():
    matrix = np.array([[1, 0, 1], [1, 0, 0], [0, 0, 1], [1, 0, 1]])
    want = torch.tensor([3, 0, 3])
    for value in (matrix, matrix.astype(bool), matrix.astype(np.float32), torch.from_numpy(matrix)):
        got = positive_counts(value)
        assert got.dtype == torch.int64 and torch.equal(got, want)
    assert torch.equal(positive_counts(np.zeros((0, 3))), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="only 0/1"):
        positive_counts(np.array([[0, 2]]))
    with pytest.raises(ValueError, match="shape \\(N, C\\)"):
        positive_counts(np.array([0, 1]))
    with pytest.raises(TypeError, match="numpy array or tensor"):
        positive_counts("01")


def test_streaming_counts_equal_one_shot():
    g = torch.Generator().manual_seed(0)
    targets = (torch.rand(1003, 6, generator=g) < torch.linspace(0.6, 0.01, 6)).float()
    loader = DataLoader(TensorDataset(torch.zeros(1003, 2), targets), batch_size=64)
    counts, total = positive_counts_from_loader(loader, return_total=True)
    assert torch.equal(counts, positive_counts(targets)) and total == 1003
    bare = positive_counts_from_loader(targets.split(100))  # batches of bare targets
    assert torch.equal(bare, counts)
    running = RunningClassCounts(6)
    for _, y in loader:
        running.update(y)
    assert torch.equal(running.counts, counts.double())
    with pytest.raises(ValueError, match="at least one batch"):
        positive_counts_from_loader([])
    with pytest.raises(ValueError, match="earlier batches"):
        positive_counts_from_loader([torch.zeros(2, 3), torch.zeros(2, 4)])


def test_running_counts_with_decay_by_hand():
    running = RunningClassCounts(3, decay=0.5)
    batches = [torch.tensor([0, 0, 1]), torch.tensor([2, 2, 2, 2]), torch.tensor([1])]
    for b in batches:
        running.update(b)
    # ((0.5 * [2, 1, 0] + [0, 0, 4]) * 0.5) + [0, 1, 0]
    want = torch.tensor([0.5, 1.25, 2.0], dtype=torch.float64)
    assert running.counts.dtype == torch.float64
    torch.testing.assert_close(running.counts, want, rtol=0, atol=0)
    assert running.num_updates == 3
    # weights use max(counts, min_count): 0.5 -> 1
    torch.testing.assert_close(
        running.weights(0.99), class_balanced_weights([1.0, 1.25, 2.0], 0.99)
    )
    # multi-hot updates and numpy input
    multi = RunningClassCounts(3).update(np.array([[1, 0, 1], [1, 1, 0]])).update([[0, 0, 1]])
    torch.testing.assert_close(multi.counts, torch.tensor([2.0, 1.0, 2.0], dtype=torch.float64))
    # the counts property is a copy
    multi.counts.zero_()
    assert multi.counts.sum().item() == 5.0


def test_running_counts_unseen_classes_stay_finite():
    running = RunningClassCounts(4, min_count=2.0)
    running.update(torch.tensor([0] * 50 + [1] * 5))
    w = running.weights(0.9999)
    assert torch.isfinite(w).all() and w.sum().item() == pytest.approx(4.0, rel=1e-6)
    torch.testing.assert_close(w, class_balanced_weights([50, 5, 2, 2], 0.9999))
    fresh = RunningClassCounts(2)
    assert torch.equal(fresh.weights(0.99), torch.ones(2))  # nothing seen: all at min_count


def test_running_counts_state_dict_round_trip():
    running = RunningClassCounts(5, decay=0.9, min_count=0.5)
    g = torch.Generator().manual_seed(0)
    for _ in range(7):
        running.update(torch.randint(0, 5, (32,), generator=g))
    buffer = io.BytesIO()
    torch.save({"running": running.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)["running"]
    restored = RunningClassCounts(5)
    restored.load_state_dict(state)
    assert torch.equal(restored.counts, running.counts)
    assert (restored.decay, restored.min_count, restored.num_updates) == (0.9, 0.5, 7)
    batch = torch.tensor([4, 4, 0])
    assert torch.equal(restored.update(batch).counts, running.update(batch).counts)
    with pytest.raises(ValueError, match="classes"):
        RunningClassCounts(4).load_state_dict(state)
    with pytest.raises(ValueError, match="missing"):
        restored.load_state_dict({"counts": torch.zeros(5)})


def test_running_counts_bad_state_is_refused_whole():
    """A bad min_count was refused after decay had been replaced (a half-loaded object),
    and num_updates was taken as it came (negative, or int('x')'s own error)."""
    running = RunningClassCounts(3, decay=0.5).update(torch.tensor([0, 1]))
    state = dict(running.state_dict(), decay=0.9, min_count=-1.0)
    with pytest.raises(ValueError, match="min_count"):
        running.load_state_dict(state)
    assert running.decay == 0.5 and running.num_updates == 1
    for bad, error in ((-2, ValueError), ("x", TypeError), (1.5, TypeError)):
        with pytest.raises(error, match="num_updates must be an integer >= 0"):
            running.load_state_dict(dict(running.state_dict(), num_updates=bad))
    assert running.num_updates == 1


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: RunningClassCounts(3, decay=0.0), ValueError, "decay must be in"),
        (lambda: RunningClassCounts(3, decay=1.5), ValueError, "decay must be in"),
        (lambda: RunningClassCounts(3, min_count=0), ValueError, "min_count"),
        (lambda: RunningClassCounts(0), ValueError, "num_classes"),
        (lambda: RunningClassCounts(3).update(torch.tensor([0, 3])), ValueError, "in \\[0, 2\\]"),
        (lambda: RunningClassCounts(3).update(torch.tensor([0.0])), TypeError, "integer"),
        (lambda: RunningClassCounts(3).update(torch.zeros(2, 4)), ValueError, "3 columns"),
        (lambda: RunningClassCounts(3).update(torch.zeros(2, 3, 1)), ValueError, "shape"),
    ],
)
def test_running_counts_validation(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_gradgradcheck(gamma):
    logits, targets = _batch(n=4, c=4, seed=5)
    logits.requires_grad_(True)

    def loss(z):
        return multilabel_class_balanced_loss(
            z, targets, POS, beta=0.999, negatives_per_class=NEG, gamma=gamma, reduction="none"
        )

    assert torch.autograd.gradcheck(loss, (logits,), fast_mode=True)
    assert torch.autograd.gradgradcheck(loss, (logits,), fast_mode=True)
