"""drive_trial against a real in-memory Optuna study: every epoch of history.json is reported
once, including those a trainer wrote before it ended (or before the driver first looked)."""

from __future__ import annotations

import json
import threading

from tune_helpers import optuna

from classbalanced.launch.runner import Outcome
from classbalanced.tune.trials import drive_trial


class _Finished:
    """A trial handle whose trainer has already ended with ``status``."""

    def __init__(self, status: str) -> None:
        self.status = status

    def done(self) -> bool:
        return True

    def stop(self) -> None:
        raise AssertionError("a finished trainer is never stopped")

    def outcome(self) -> Outcome:
        return Outcome("trial-0000", self.status)


def _run_dir(tmp_path, accuracies):
    history = [{"epoch": e + 1, "val_accuracy": a} for e, a in enumerate(accuracies)]
    (tmp_path / "history.json").write_text(json.dumps(history))
    (tmp_path / "metrics.json").write_text(json.dumps({"val_accuracy": accuracies[-1]}))
    return tmp_path


def _drive(tmp_path, trial, status):
    return drive_trial(
        trial, _Finished(status), tmp_path, "val_accuracy", 3, None, threading.Event(), print
    )


def test_a_trainer_that_ended_before_the_first_look_has_every_epoch_reported(tmp_path):
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    run_dir = _run_dir(tmp_path, [0.25, 0.5, 0.75])
    result = _drive(run_dir, trial, "skipped")  # skipped: the run was already complete
    assert (result.state, result.value) == ("complete", 0.75)
    reported = study._storage.get_trial(trial._trial_id).intermediate_values
    assert reported == {1: 0.25, 2: 0.5, 3: 0.75}


def test_epochs_reported_by_an_earlier_attempt_are_not_reported_again(tmp_path):
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    trial.report(0.125, 1)  # the attempt a killed tune drove reported epoch 1
    run_dir = _run_dir(tmp_path, [0.25, 0.5, 0.75])
    result = _drive(run_dir, trial, "finished")
    assert result.state == "complete"
    reported = study._storage.get_trial(trial._trial_id).intermediate_values
    assert reported == {1: 0.125, 2: 0.5, 3: 0.75}
