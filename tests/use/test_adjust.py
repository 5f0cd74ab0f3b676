"""Post-hoc logit adjustment in ``evaluate``: T = 0 changes nothing; ``auto`` picks T on a
validation set (never the test set) and, on a long-tailed model evaluated on the
balanced digits test set, picks T > 0 without lowering balanced accuracy."""

from __future__ import annotations

import json
import shutil

import torch

from classbalanced import cli
from classbalanced.engine.evaluate import evaluate_run
from classbalanced.use import choose_tau, evaluate_adjusted


def test_tau_zero_changes_nothing(use_run):
    plain = evaluate_run(use_run.out, device="cpu")
    zero = evaluate_run(use_run.out, device="cpu", adjust_tau=0.0)
    assert plain == zero


def test_auto_tau_on_validation_raises_balanced_accuracy(use_run, tmp_path, capsys):
    out = tmp_path / "e.json"
    args = ["evaluate", str(use_run.out), "--adjust-tau", "auto", "--val-data", str(use_run.val)]
    assert cli.main([*args, "--device", "cpu", "--output", str(out)]) == 0
    adjusted = json.loads(out.read_text())
    plain = evaluate_run(use_run.out, device="cpu")
    choice = adjusted["adjust_tau_choice"]
    assert choice["tau"] == adjusted["adjust_tau"] > 0
    assert choice["chosen_on"] == str(use_run.val)
    assert adjusted["balanced_accuracy"] >= plain["balanced_accuracy"]
    assert adjusted["few_shot_accuracy"] >= plain["few_shot_accuracy"]
    scores = choice["balanced_accuracy_by_tau"]
    assert len(scores) == 21 and scores[str(choice["tau"])] == max(scores.values())


def test_auto_tau_reads_the_runs_validation_split(use_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(use_run.out, run)
    subset = json.loads((run / "subset.json").read_text())
    used = set(subset["indices"])
    subset["val_indices"] = [i for i in range(1297) if i not in used][::2]
    (run / "subset.json").write_text(json.dumps(subset))
    metrics = evaluate_adjusted(run, "auto", device="cpu")
    assert metrics["adjust_tau_choice"]["chosen_on"].endswith("subset.json:val_indices")
    assert metrics["adjust_tau_choice"]["num_validation_images"] == len(subset["val_indices"])


def test_choose_tau_closed_form():
    # the adjustment moves the tail's logit up by tau * log(90 / 10) = 2.197 tau against the
    # head's: the tail images (margin 1 for the head) flip to the tail from tau = 0.46,
    # the head image (margin 3) to the tail from tau = 1.37
    logits = torch.tensor([[3.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1, 1])
    tau, scores = choose_tau(logits, labels, [90, 10], grid=(0.0, 0.5, 1.0, 1.5))
    assert scores == {"0.0": 0.5, "0.5": 1.0, "1.0": 1.0, "1.5": 0.5}
    assert tau in (0.5, 1.0)
