"""EvalCounts / summarize against an independent numpy computation on random logits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from classbalanced.engine import EvalCounts, summarize

# many: > 100, medium: 20..100 (inclusive), few: < 20
TRAIN_COUNTS = [1000, 101, 100, 50, 20, 19, 3, 1]
EXPECTED_GROUP = ["many", "many", "medium", "medium", "medium", "few", "few", "few"]


def _reference(logits: np.ndarray, labels: np.ndarray, train_counts, k=5) -> dict:
    """What the metrics must be, computed from scratch with numpy."""
    num_classes = logits.shape[1]
    order = np.argsort(-logits, axis=1)
    hit1 = order[:, 0] == labels
    hitk = (order[:, :k] == labels[:, None]).any(axis=1)
    per_class = []
    for c in range(num_classes):
        mine = labels == c
        per_class.append(float(hit1[mine].mean()) if mine.any() else None)
    counts = np.asarray(train_counts)
    groups = {
        "many": counts > 100,
        "medium": (counts >= 20) & (counts <= 100),
        "few": counts < 20,
    }

    def mean_over(mask):
        values = [per_class[c] for c in range(num_classes) if mask[c] and per_class[c] is not None]
        return None if not values else float(np.mean(values))

    accuracy = float(hit1.mean())
    return {
        "accuracy": accuracy,
        "error_percent": 100 * (1 - accuracy),
        f"top{k}_accuracy": float(hitk.mean()),
        "per_class_accuracy": per_class,
        "mean_class_accuracy": mean_over(np.ones(num_classes, bool)),
        "many_shot_accuracy": mean_over(groups["many"]),
        "medium_shot_accuracy": mean_over(groups["medium"]),
        "few_shot_accuracy": mean_over(groups["few"]),
        "num_many_shot_classes": int(groups["many"].sum()),
        "num_medium_shot_classes": int(groups["medium"].sum()),
        "num_few_shot_classes": int(groups["few"].sum()),
        "num_test_images": len(labels),
    }


def _random_batch(rng, n, num_classes, absent=()):
    present = [c for c in range(num_classes) if c not in absent]
    labels = rng.choice(present, size=n)
    logits = rng.normal(size=(n, num_classes))
    # make top-1 right about half the time, so accuracies are not all ~1/C
    boost = rng.random(n) < 0.5
    logits[boost, labels[boost]] += 3.0
    return logits.astype(np.float32), labels.astype(np.int64)


def _counts_of(logits, labels, num_classes, batch_sizes=None, k=5):
    counts = EvalCounts.zeros(num_classes, k=k)
    if batch_sizes is None:
        batch_sizes = [len(labels)]
    start = 0
    for size in batch_sizes:
        counts.update(
            torch.from_numpy(logits[start : start + size]),
            torch.from_numpy(labels[start : start + size]),
        )
        start += size
    assert start == len(labels)
    return counts


def _assert_close(actual: dict, expected: dict) -> None:
    for key, value in expected.items():
        got = actual[key]
        if isinstance(value, list):
            assert len(got) == len(value), key
            for g, v in zip(got, value, strict=True):
                assert (g is None) == (v is None), (key, got, value)
                if v is not None:
                    assert g == pytest.approx(v, abs=1e-12), (key, got, value)
        elif value is None:
            assert got is None, (key, got)
        else:
            assert got == pytest.approx(value, abs=1e-12), (key, got, value)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_summary_matches_numpy_on_random_logits(seed):
    rng = np.random.default_rng(seed)
    num_classes = len(TRAIN_COUNTS)
    # class 3 (medium) and class 7 (few) have no test images
    logits, labels = _random_batch(rng, 301, num_classes, absent=(3, 7))
    counts = _counts_of(logits, labels, num_classes, batch_sizes=[1, 64, 100, 136])
    metrics = summarize(counts, TRAIN_COUNTS)
    expected = _reference(logits, labels, TRAIN_COUNTS)
    _assert_close(metrics, expected)
    assert metrics["per_class_accuracy"][3] is None
    assert metrics["per_class_accuracy"][7] is None
    assert metrics["error_percent"] == pytest.approx(100 * (1 - metrics["accuracy"]))
    assert metrics["top5_error_percent"] == pytest.approx(100 * (1 - metrics["top5_accuracy"]))
    # the raw counts themselves
    assert counts.total.tolist() == np.bincount(labels, minlength=num_classes).tolist()
    hit1 = logits.argmax(1) == labels
    assert counts.correct.tolist() == np.bincount(labels[hit1], minlength=num_classes).tolist()


def test_group_thresholds_are_strict_above_100_and_below_20():
    counts = EvalCounts.zeros(len(TRAIN_COUNTS), k=1)
    labels = torch.arange(len(TRAIN_COUNTS))
    counts.update(torch.nn.functional.one_hot(labels).float(), labels)  # all right
    m = summarize(counts, TRAIN_COUNTS)
    groups = {g: EXPECTED_GROUP.count(g) for g in ("many", "medium", "few")}
    assert m["num_many_shot_classes"] == groups["many"] == 2
    assert m["num_medium_shot_classes"] == groups["medium"] == 3
    assert m["num_few_shot_classes"] == groups["few"] == 3
    # only the classes of one group right: that group's accuracy is 1, the others 0
    for group in ("many", "medium", "few"):
        logits = torch.zeros(len(TRAIN_COUNTS), len(TRAIN_COUNTS))
        for c, g in enumerate(EXPECTED_GROUP):
            logits[c, c if g == group else (c + 1) % len(TRAIN_COUNTS)] = 1.0
        counts = EvalCounts.zeros(len(TRAIN_COUNTS), k=1)
        counts.update(logits, labels)
        m = summarize(counts, TRAIN_COUNTS)
        for other in ("many", "medium", "few"):
            assert m[f"{other}_shot_accuracy"] == (1.0 if other == group else 0.0), (group, other)


def test_empty_groups_and_groups_without_test_images_are_none():
    # no many-shot class at all; the only few-shot class (index 2) has no test image
    train_counts = [100, 20, 5]
    counts = EvalCounts.zeros(3, k=2)
    counts.update(torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]]), torch.tensor([0, 1]))
    m = summarize(counts, train_counts)
    assert m["many_shot_accuracy"] is None
    assert m["num_many_shot_classes"] == 0
    assert m["few_shot_accuracy"] is None
    assert m["num_few_shot_classes"] == 1
    assert m["per_class_accuracy"] == [1.0, 0.0, None]
    assert m["medium_shot_accuracy"] == 0.5
    assert m["mean_class_accuracy"] == 0.5
    assert m["accuracy"] == 0.5
    # top-2: class 1's label is the second-best logit
    assert m["top2_accuracy"] == 1.0
    assert m["num_test_images"] == 2


def test_group_mean_is_per_class_not_per_image():
    # many-shot group: class 0 has 9 test images all right, class 1 has 1 image wrong
    counts = EvalCounts.zeros(2, k=1)
    labels = torch.tensor([0] * 9 + [1])
    logits = torch.zeros(10, 2)
    logits[:, 0] = 1.0  # always predicts class 0
    counts.update(logits, labels)
    m = summarize(counts, [500, 200])
    assert m["accuracy"] == pytest.approx(0.9)
    assert m["many_shot_accuracy"] == pytest.approx(0.5)  # mean of 1.0 and 0.0
    assert m["mean_class_accuracy"] == pytest.approx(0.5)


def _summable_parts(seed=5):
    rng = np.random.default_rng(seed)
    num_classes = len(TRAIN_COUNTS)
    la, ya = _random_batch(rng, 57, num_classes, absent=(6,))
    lb, yb = _random_batch(rng, 91, num_classes, absent=(0,))
    a = _counts_of(la, ya, num_classes)
    b = _counts_of(lb, yb, num_classes)
    whole = _counts_of(np.concatenate([la, lb]), np.concatenate([ya, yb]), num_classes)
    return a, b, whole, (np.concatenate([la, lb]), np.concatenate([ya, yb]))


def test_counts_sum_like_the_concatenated_batches():
    a, b, whole, (logits, labels) = _summable_parts()
    summed = EvalCounts.from_stacked(a.stacked() + b.stacked(), a.k)  # what an all-reduce does
    assert torch.equal(summed.stacked(), whole.stacked())
    assert summarize(summed, TRAIN_COUNTS) == summarize(whole, TRAIN_COUNTS)
    _assert_close(summarize(summed, TRAIN_COUNTS), _reference(logits, labels, TRAIN_COUNTS))
    # averaging the two halves' accuracies would be wrong (different sizes): make sure
    # the test data can tell the difference
    mean_of_parts = (
        summarize(a, TRAIN_COUNTS)["accuracy"] + summarize(b, TRAIN_COUNTS)["accuracy"]
    ) / 2
    assert not math.isclose(mean_of_parts, summarize(whole, TRAIN_COUNTS)["accuracy"])


def test_unreadable_images_sum_across_ranks_and_are_reported():
    """Test images skipped as unreadable travel in the counts' all-reduce (summed over
    ranks like every other count) and are reported beside ``num_test_images``."""
    a, b, whole, _ = _summable_parts()
    a.unreadable, b.unreadable = 2, 3
    summed = EvalCounts.from_stacked(a.stacked() + b.stacked(), a.k)  # what an all-reduce does
    assert summed.unreadable == (a + b).unreadable == 5
    metrics = summarize(summed, TRAIN_COUNTS)
    assert metrics["num_unreadable_test_images"] == 5
    assert metrics["num_test_images"] == summarize(whole, TRAIN_COUNTS)["num_test_images"]
    assert summarize(whole, TRAIN_COUNTS)["num_unreadable_test_images"] == 0
    three = EvalCounts.from_stacked(a.stacked() * 3, a.k)  # three ranks alike
    assert three.unreadable == 6 and torch.equal(three.total, a.total * 3)


def test_counts_support_the_plus_operator():
    a, b, whole, _ = _summable_parts()
    a_before, b_before = a.stacked().clone(), b.stacked().clone()
    assert summarize(a + b, TRAIN_COUNTS) == summarize(whole, TRAIN_COUNTS)
    assert torch.equal(a.stacked(), a_before) and torch.equal(b.stacked(), b_before)  # no aliasing


class _Lookup(torch.nn.Module):
    """Image ``i`` (a 1x1 uint8 image of value ``i``, normalised to ``i / 128 - 1``) -> row
    ``i`` of ``table``."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def forward(self, x):
        return self.table[((x.reshape(len(x)) + 1) * 128).round().long()]


def test_evaluate_counts_every_class_of_the_model_when_the_last_ones_have_no_test_image():
    from classbalanced.engine import evaluate

    rng = np.random.default_rng(3)
    logits, labels = _random_batch(rng, 57, len(TRAIN_COUNTS), absent=(6, 7))  # the last two
    images = torch.arange(len(labels), dtype=torch.uint8).reshape(-1, 1, 1, 1)
    model = _Lookup(torch.from_numpy(logits))
    counts = evaluate(model, images, torch.from_numpy(labels), batch_size=10)
    _assert_close(summarize(counts, TRAIN_COUNTS), _reference(logits, labels, TRAIN_COUNTS))
    with pytest.raises(
        ValueError, match="expected training counts of the 8 evaluated classes, got 6"
    ):
        summarize(counts, TRAIN_COUNTS[:6])  # the counts of the classes the test set holds


@pytest.mark.parametrize("precision", ["fp64", "float16", "FP16"])
def test_evaluate_refuses_a_precision_it_would_take_for_fp16(precision):
    from classbalanced.engine import evaluate

    images = torch.zeros(2, 1, 1, 1, dtype=torch.uint8)
    model = _Lookup(torch.zeros(256, 3))
    with pytest.raises(
        ValueError, match=f"expected a precision in fp32, bf16, fp16, got '{precision}'"
    ):
        evaluate(model, images, torch.zeros(2, dtype=torch.long), precision=precision)
