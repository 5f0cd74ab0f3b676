"""A new run's metrics.json holds the metrics that matter on imbalanced data, consistent
with scikit-learn on its own confusion matrix, and the run drew and listed their plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as sk


def test_run_writes_balanced_metrics_and_plots(tiny_run):
    m = json.loads((tiny_run.out / "metrics.json").read_text())
    for key in ("balanced_accuracy", "macro_f1", "ece", "mean_class_accuracy"):
        assert isinstance(m[key], float), key
    cm = np.asarray(m["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == m["num_test_images"]
    # the labels and predictions the confusion matrix counts, back to sklearn
    y, p = (
        np.concatenate([np.full(cm[t].sum(), t) for t in range(10)]),
        np.concatenate([np.repeat(np.arange(10), cm[t]) for t in range(10)]),
    )
    assert m["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, p), abs=1e-12)
    assert m["macro_f1"] == pytest.approx(sk.f1_score(y, p, average="macro"), abs=1e-12)
    sp, sr, sf, _ = sk.precision_recall_fscore_support(y, p, labels=range(10), zero_division=0)
    np.testing.assert_allclose(m["per_class_precision"], sp, atol=1e-12)
    np.testing.assert_allclose(m["per_class_recall"], sr, atol=1e-12)
    np.testing.assert_allclose(m["per_class_f1"], sf, atol=1e-12)
    assert m["mean_class_accuracy"] == m["balanced_accuracy"]
    bins = m["calibration"]
    assert sum(bins["count"]) == m["num_test_images"]
    ece = sum(
        n / cm.sum() * abs(a - c)
        for n, a, c in zip(bins["count"], bins["accuracy"], bins["confidence"], strict=True)
        if n
    )
    assert m["ece"] == pytest.approx(ece, abs=1e-9)
    listed = json.loads((tiny_run.out / "run.json").read_text())["files"]
    for png in ("confusion_matrix.png", "reliability.png"):
        assert png in listed
        with Image.open(tiny_run.out / png) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    history = json.loads((tiny_run.out / "history.json").read_text())
    assert "confusion_matrix" not in history[-1] and "balanced_accuracy" in history[-1]
