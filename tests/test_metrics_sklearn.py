"""The metrics of ``classbalanced.metrics`` and ``engine.metrics.summarize`` against
scikit-learn (balanced_accuracy_score, f1_score, precision_recall_fscore_support,
confusion_matrix) and a hand-computed expected calibration error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as sk

from classbalanced import metrics as cbm
from classbalanced.engine.metrics import EvalCounts, scalar_metrics, summarize


def _hand_ece(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Guo et al.'s ECE written out: bins ((m-1)/M, m/M], a loop over bins and images."""
    total = 0.0
    n = len(confidence)
    for m in range(1, bins + 1):
        low, high = (m - 1) / bins, m / bins
        members = [
            i for i in range(n) if (low < confidence[i] <= high) or (m == 1 and confidence[i] == 0)
        ]
        if members:
            acc = sum(bool(correct[i]) for i in members) / len(members)
            conf = sum(float(confidence[i]) for i in members) / len(members)
            total += len(members) / n * abs(acc - conf)
    return total


def _case(seed: int, n: int = 300, c: int = 7, missing: int | None = 3):
    """Random logits and labels; class ``missing`` has no true image (and some predictions)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, c, (n,), generator=g)
    if missing is not None:
        labels[labels == missing] = 0
    logits = torch.randn(n, c, generator=g, dtype=torch.float64) * 2
    logits[torch.arange(n), labels] += 1.5  # better than chance
    return logits, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pure_metrics_match_sklearn(seed):
    logits, labels = _case(seed)
    pred = logits.argmax(1)
    y, p = labels.numpy(), pred.numpy()
    cm = cbm.confusion_matrix(pred, labels, 7)
    assert np.array_equal(cm.numpy(), sk.confusion_matrix(y, p, labels=range(7)))
    assert cbm.accuracy(cm) == pytest.approx(sk.accuracy_score(y, p), abs=1e-15)
    with pytest.warns(UserWarning):  # sklearn warns of the class without true images
        expected_bal = sk.balanced_accuracy_score(y, p)
    assert cbm.balanced_accuracy(cm) == pytest.approx(expected_bal, abs=1e-12)
    assert cbm.macro_f1(cm) == pytest.approx(sk.f1_score(y, p, average="macro"), abs=1e-12)
    precision, recall, f1 = cbm.per_class_prf(cm)
    sp, sr, sf, _ = sk.precision_recall_fscore_support(y, p, labels=range(7), zero_division=0)
    np.testing.assert_allclose(precision.numpy(), sp, atol=1e-12)
    np.testing.assert_allclose(recall.numpy(), sr, atol=1e-12)
    np.testing.assert_allclose(f1.numpy(), sf, atol=1e-12)
    conf, top = cbm.top1_confidence(logits)
    assert torch.equal(top, pred)
    ece = cbm.expected_calibration_error(cbm.calibration_bins(conf, top == labels))
    assert ece == pytest.approx(_hand_ece(conf.numpy(), (top == labels).numpy()), abs=1e-12)


def test_ece_closed_forms():
    # every image in one bin: ECE = |accuracy - confidence|
    conf = torch.full((10,), 0.8, dtype=torch.float64)
    right = torch.tensor([True] * 6 + [False] * 4)
    assert cbm.expected_calibration_error(cbm.calibration_bins(conf, right)) == pytest.approx(0.2)
    # a confidence on a bin edge belongs to the lower bin ((m-1)/M, m/M]
    sums = cbm.calibration_bins(
        torch.tensor([1 / 15, 2 / 15], dtype=torch.float64), torch.tensor([True, True])
    )
    assert sums[0, :2].tolist() == [1.0, 1.0]
    # perfectly calibrated bins: 0
    conf = torch.tensor([0.5, 0.5, 1.0, 1.0], dtype=torch.float64)
    right = torch.tensor([True, False, True, True])
    assert cbm.expected_calibration_error(cbm.calibration_bins(conf, right)) == 0.0


def test_summarize_matches_sklearn_batched_and_summed():
    """Counts in batches, summed as an all-reduce sums them, give sklearn's numbers."""
    logits, labels = _case(5, n=257, c=6, missing=None)
    whole, parts = EvalCounts.zeros(6), [EvalCounts.zeros(6), EvalCounts.zeros(6)]
    whole.update(logits.float(), labels)
    for i, start in enumerate(range(0, 257, 100)):
        parts[i % 2].update(logits[start : start + 100].float(), labels[start : start + 100])
    summed = EvalCounts.from_stacked(parts[0].stacked() + parts[1].stacked(), 5)
    assert torch.equal(summed.confusion, whole.confusion)
    assert torch.allclose(summed.calibration, whole.calibration, rtol=0, atol=1e-12)
    m = summarize(summed, [500, 200, 90, 40, 10, 5])
    y, p = labels.numpy(), logits.argmax(1).numpy()
    assert m["confusion_matrix"] == sk.confusion_matrix(y, p).tolist()
    assert m["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, p), abs=1e-12)
    assert m["mean_class_accuracy"] == m["balanced_accuracy"]
    assert m["macro_f1"] == pytest.approx(sk.f1_score(y, p, average="macro"), abs=1e-12)
    sp, sr, sf, _ = sk.precision_recall_fscore_support(y, p, zero_division=0)
    np.testing.assert_allclose(m["per_class_precision"], sp, atol=1e-12)
    np.testing.assert_allclose(m["per_class_recall"], sr, atol=1e-12)
    np.testing.assert_allclose(m["per_class_f1"], sf, atol=1e-12)
    conf = torch.softmax(logits.float(), 1).max(1).values.double().numpy()
    assert m["ece"] == pytest.approx(_hand_ece(conf, p == y), abs=1e-9)
    assert sum(m["calibration"]["count"]) == 257
    assert not set(scalar_metrics(m)) & {"confusion_matrix", "per_class_f1", "calibration"}
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(y, p), abs=1e-15)


def test_confusion_left_out_above_the_limit(monkeypatch):
    import classbalanced.engine.metrics as em

    monkeypatch.setattr(em, "CONFUSION_MAX_CLASSES", 3)
    counts = EvalCounts.zeros(4, k=1)
    counts.update(torch.eye(4), torch.arange(4))
    assert counts.confusion is None
    again = EvalCounts.from_stacked(counts.stacked() * 3, 1)  # three ranks
    assert again.confusion is None and again.total.tolist() == [3, 3, 3, 3]
    m = summarize(again, [5, 5, 5, 5])
    assert m["confusion_matrix"] is None and m["macro_f1"] == 1.0 and m["balanced_accuracy"] == 1.0


def test_metrics_refuse_bad_labels():
    with pytest.raises(ValueError, match=r"expected targets in \[0, 3\)"):
        cbm.confusion_matrix(torch.tensor([0]), torch.tensor([3]), 3)
    with pytest.raises(ValueError, match="expected predictions as integer"):
        cbm.confusion_matrix(torch.tensor([0.5]), torch.tensor([0]), 3)
    assert cbm.balanced_accuracy(torch.zeros(2, 2, dtype=torch.long)) is None
    assert math.isclose(cbm.expected_calibration_error(torch.zeros(3, 15)), 0.0)
