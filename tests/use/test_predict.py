"""``load_run``, ``TrainedClassifier`` and ``classbalanced predict`` on a finished run."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

import classbalanced as cb
from classbalanced import cli
from classbalanced.data.arrays import load_image_folder
from classbalanced.engine.evaluate import evaluate_run


def _csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_predict_folder_equals_evaluate(use_run, tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert cli.main(["predict", str(use_run.out), str(use_run.test), "--output", str(out)]) == 0
    rows = _csv(out)
    assert len(rows) == 500
    header = list(rows[0])
    k = 5
    expected = ["path"] + [f"{w}_{i}" for i in range(1, k + 1) for w in ("label", "prob")]
    assert header == [*expected, "true_label"]
    accuracy = np.mean([r["label_1"] == r["true_label"] for r in rows])
    evaluated = evaluate_run(use_run.out, test_data=str(use_run.test), device="cpu")
    assert accuracy == evaluated["accuracy"]  # exactly: the same images, the same pixels
    metrics = json.loads(out.with_suffix(".metrics.json").read_text())
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "ece", "confusion_matrix"):
        assert metrics[key] == evaluated[key], key
    probs = np.array([[float(r[f"prob_{i}"]) for i in range(1, 6)] for r in rows])
    assert (np.diff(probs, axis=1) <= 0).all() and (probs.sum(1) <= 1 + 1e-5).all()
    assert "balanced_accuracy" in capsys.readouterr().err  # printed, never in the rows


def test_load_run_from_anywhere_and_every_image_form(use_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # any directory
    model = cb.load_run(use_run.out)
    assert model.class_names == [str(i) for i in range(10)] and not model.model.training
    assert model.train_counts == json.loads((use_run.out / "subset.json").read_text())["counts"]
    files = sorted(use_run.test.glob("3/*.png"))[:7]
    arrays = load_image_folder(use_run.test).images  # (N, 8, 8, 3), as evaluate reads them
    batch = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    x = model.preprocess(files)
    assert x.shape == (7, 3, 8, 8) and x.dtype == torch.float32
    assert torch.equal(model.preprocess(batch), x)
    assert torch.equal(model.preprocess([Image.open(f) for f in files]), x)
    assert torch.equal(model.preprocess(files[0]), x[:1])
    grey = np.asarray(Image.open(files[0]))  # (8, 8) greyscale: converted as training did
    assert grey.ndim == 2 and torch.equal(model.preprocess(grey), x[:1])
    assert arrays.dtype == np.uint8
    p = model.predict(files, top_k=3, batch_size=2)
    assert p.indices.shape == (7, 3) and p.probabilities.shape == (7, 3)
    assert p.names[0] == [model.class_names[i] for i in p.indices[0].tolist()]
    logits = model.model(x)
    assert torch.equal(p.indices, logits.topk(3, dim=1).indices)
    assert torch.allclose(p.probabilities, logits.softmax(1).topk(3, dim=1).values, atol=1e-6)
    # T = 0 is bit-identical to no adjustment; T > 0 is cb.post_hoc_logit_adjustment
    assert torch.equal(model.logits(files, adjust_tau=0.0), model.logits(files))
    adjusted = cb.post_hoc_logit_adjustment(model.logits(files), model.train_counts, 1.0)
    assert torch.equal(model.logits(files, adjust_tau=1.0), adjusted)
    with pytest.raises(ValueError, match="expected top_k at most the run's 10 classes, got 11"):
        model.predict(files, top_k=11)


def test_predict_npz_and_jsonl(use_run, tmp_path):
    test = load_image_folder(use_run.test)
    npz = tmp_path / "t.npz"
    np.savez(npz, x=test.images[:40], y=test.labels[:40])
    unlabelled = tmp_path / "u.npz"
    np.savez(unlabelled, x=test.images[:5])
    out = tmp_path / "p.jsonl"
    args = ["predict", str(use_run.out), str(npz), "--output", str(out), "--top-k", "2"]
    assert cli.main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in rows[:2]] == [f"{npz}:0", f"{npz}:1"]
    assert set(rows[0]) == {"path", "label_1", "prob_1", "label_2", "prob_2", "true_label"}
    metrics = json.loads((tmp_path / "p.metrics.json").read_text())
    assert metrics["num_test_images"] == 40
    assert metrics["accuracy"] == np.mean([r["label_1"] == r["true_label"] for r in rows])
    out2 = tmp_path / "u.csv"
    assert cli.main(["predict", str(use_run.out), str(unlabelled), "--output", str(out2)]) == 0
    rows = _csv(out2)
    assert len(rows) == 5 and "true_label" not in rows[0]
    assert not (tmp_path / "u.metrics.json").exists()
    model = cb.load_run(use_run.out)
    assert [r["label_1"] for r in rows] == [n[0] for n in model.predict(test.images[:5]).names]


def test_load_run_by_checkpoint_name_and_refusals(use_run, tmp_path):
    import shutil

    newest = sorted((use_run.out / "checkpoints").glob("checkpoint-*.pt"))[-1]
    by_name = cb.load_run(use_run.out, checkpoint=newest.name)
    assert by_name.source == newest
    run = tmp_path / "run"
    shutil.copytree(use_run.out, run)
    stray = run / "checkpoints" / "mine.pt"
    shutil.copy(newest, stray)  # bytes of a real checkpoint, not written by the run
    with pytest.raises(ValueError, match="is not a checkpoint of the run"):
        cb.load_run(run, checkpoint="mine.pt")
    target = run / "checkpoints" / newest.name
    target.write_bytes(target.read_bytes()[:-10])  # truncated: refused before unpickling
    with pytest.raises(ValueError, match="is corrupt"):
        cb.load_run(run)
