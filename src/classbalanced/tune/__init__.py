"""``classbalanced tune``: choose beta, gamma and the loss on a validation split with Optuna.

The search runs in a folder ``DIR``:

* ``DIR/study.journal``: the Optuna study (:mod:`.study`): re-running the same command
  resumes it, and several ``tune`` processes on one folder share its trials;
* ``DIR/trials/trial-NNNN``: each trial an ordinary run folder (:mod:`.trials`), trained
  with ``evaluate_test = false``: the objective reads the validation split only;
* trial 0 is the baseline: the base config's loss with ``beta = 0`` (enqueued, outside the
  search ranges), so the best trial is never worse on validation than not re-weighting;
* a seeded TPE sampler (seeded per trial number: the same trials ask the same values),
  a pruner on the per-epoch validation metric;
* at the end: the best trial evaluated once on the test set (``best.json``), with
  ``refit`` a final run on the full training set with the best values
  (``trials/refit-trial-NNNN``), and
  ``trials.csv``, ``report.md`` and the plots (:mod:`.results`).

On Ray (``launcher = "ray"``) this process still asks Optuna for each trial and tells it
the result; the trials run as Ray tasks (the sweep's Ray launcher) and are pruned by
cancelling their task.
"""

from __future__ import annotations

import json
import threading
import uuid
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import TrainConfig, load_config_file
from ..engine.evaluate_run import evaluate_run
from ..engine.validation import VAL_METRICS
from ..files import atomic_write_json
from ..launch import LaunchOptions, make_launcher
from ..launch.claims import STALE_AFTER, release, try_claim
from ..launch.runner import RunTask
from ..reproduce.results import read_json
from .results import status_lines, write_outputs
from .space import Dist, check_space, parse_search, suggest
from .study import PRUNERS, check_folder, folder_lock, open_study, optuna_module, reseed
from .trials import (
    TRIALS,
    LocalExecutor,
    RayExecutor,
    drive_trial,
    trial_name,
    trial_values,
    write_trial_config,
)

__all__ = ["TUNE_LAUNCHERS", "TuneOptions", "run_tune", "tune_status"]

#: where trials run
TUNE_LAUNCHERS = ("local", "ray")
#: base-config keys a study sets itself
_DROPPED = ("out", "resume", "overwrite", "force", "progress", "evaluate_test")


@dataclass
class TuneOptions:
    """What ``classbalanced tune`` was asked (see ``classbalanced tune --help``)."""

    out: str
    trials: int
    search: list[str]
    config: str | None = None
    metric: str = "val_balanced_accuracy"
    val_fraction: float | None = None
    launcher: str = "local"
    jobs: int = 1
    seed: int = 0
    pruner: str = "median"
    refit: bool = False
    extend: bool = False
    stale_after: float = STALE_AFTER
    launch: LaunchOptions = field(default_factory=LaunchOptions)


def _check(options: TuneOptions) -> None:
    for name in ("trials", "jobs"):
        value = getattr(options, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"--{name} must be an integer >= 1, got {value!r}")
    if options.metric not in VAL_METRICS:
        raise ValueError(
            f"--metric {options.metric} is not written by the trials (they evaluate the "
            f"validation split only): expected one of {', '.join(VAL_METRICS)}"
        )
    if options.pruner not in PRUNERS:
        raise ValueError(f"--pruner must be one of {', '.join(PRUNERS)}, got {options.pruner!r}")
    if options.launcher not in TUNE_LAUNCHERS:
        raise ValueError(
            f"--launcher must be one of {', '.join(TUNE_LAUNCHERS)}, got {options.launcher!r}"
        )


def base_config(options: TuneOptions) -> tuple[dict[str, Any], TrainConfig]:
    """The base config's keys (the file's, with ``--val-fraction``) and its resolved config;
    refused without a validation set."""
    values = load_config_file(options.config) if options.config else {}
    values = {k: v for k, v in values.items() if k not in _DROPPED}
    if options.val_fraction is not None:
        values["val_fraction"] = options.val_fraction
    source = options.config or "the base config"
    cfg = TrainConfig.from_dict(values, source=source).resolved()
    if cfg.val_fraction is None and cfg.val_data is None and cfg.val_list is None:
        raise ValueError(
            "tune chooses on a validation set: expected --val-fraction F (or val_fraction, "
            f"val_data or val_list in {source}), got none"
        )
    return values, cfg


class _Study:
    """One tune process's work on a study (its threads pick, run and tell trials)."""

    def __init__(self, options: TuneOptions, base: dict, cfg: TrainConfig, space, log) -> None:
        self.options, self.base, self.cfg, self.space, self.log = options, base, cfg, space, log
        self.out = Path(options.out).absolute()
        self.maximize = options.metric != "val_loss"
        direction = "maximize" if self.maximize else "minimize"
        self.study = open_study(self.out, direction, options.pruner, cfg.epochs)
        self.session = f"tune-{uuid.uuid4().hex[:12]}"
        self.mine: set[int] = set()
        self.stop = threading.Event()
        self.optuna = optuna_module()

    def baseline_values(self) -> dict[str, Any]:
        """Trial 0: the base config's values of the searched keys, with ``beta = 0``."""
        values = {k: getattr(self.cfg, k) for k in self.space if k != "beta"}
        return {"beta": 0.0, **values}

    def pick(self):
        """Under the folder's lock: a trial a dead process left running, else a new one
        (while the study has fewer than ``trials``), with its claim; or ``None``."""
        running = self.optuna.trial.TrialState.RUNNING
        waiting = self.optuna.trial.TrialState.WAITING
        trials = self.study.get_trials(deepcopy=False)
        owner = self.session
        for t in trials:
            if t.state == running and t.number not in self.mine:
                claim = try_claim(
                    self._claim_base(t.number), owner, stale_after=self.options.stale_after
                )
                if claim is not None:
                    self.log(f"resuming {trial_name(t.number)} (its tune process is gone)")
                    self.mine.add(t.number)
                    # Optuna has no public way back to a running trial: its storage id
                    trial = self.optuna.trial.Trial(self.study, t._trial_id)
                    return trial, t.user_attrs.get("values", {}), claim
        counted = [t for t in trials if t.state != waiting]
        if len(counted) >= self.options.trials:
            return None
        if not trials:
            self.study.enqueue_trial({}, user_attrs={"baseline": True})
        startup = max(1, min(10, self.options.trials // 3))
        reseed(self.study, self.options.seed, len(counted), startup)
        trial = self.study.ask()
        baseline = trial.user_attrs.get("baseline", False)
        values = (
            self.baseline_values()
            if baseline
            else {"beta": self.cfg.beta, **suggest(trial, self.space)}
        )
        trial.set_user_attr("values", values)
        claim = try_claim(
            self._claim_base(trial.number), owner, stale_after=self.options.stale_after
        )
        self.mine.add(trial.number)
        write_trial_config(self.out, trial_name(trial.number), trial_values(self.base, values))
        return trial, values, claim

    def _claim_base(self, number: int) -> Path:
        (self.out / TRIALS).mkdir(parents=True, exist_ok=True)
        return self.out / TRIALS / f"{trial_name(number)}.trial"

    def run_one(self, executor, trial, values: dict, claim) -> None:
        name = trial_name(trial.number)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            epochs = TrainConfig.from_dict(trial_values(self.base, values)).resolved().epochs
        task = RunTask(
            out=str(self.out), name=name, epochs=epochs, owner=executor.owner(self.session, name),
            stale_after=self.options.stale_after, folder=TRIALS,
        )  # fmt: skip
        try:
            handle = executor.start(task, self.log)
            result = drive_trial(
                trial, handle, self.out / TRIALS / name, self.options.metric, epochs, claim,
                self.stop, self.log,
            )  # fmt: skip
            self._tell(trial, result)
        finally:
            release(claim)
            self.mine.discard(trial.number)

    def _tell(self, trial, result) -> None:
        state = self.optuna.trial.TrialState
        name, metric = trial_name(trial.number), self.options.metric
        if result.state == "complete":
            self.study.tell(trial.number, result.value)
            self.log(f"{name}: {metric} {result.value:.4f}")
        elif result.state == "pruned":
            trial.set_user_attr("pruned_epoch", result.pruned_epoch)
            self.study.tell(trial.number, state=state.PRUNED)
        elif result.state == "failed":
            trial.set_user_attr("failure", result.line[:300])
            self.study.tell(trial.number, state=state.FAIL)
            self.log(f"{name}: failed: {result.line}")
        # interrupted: left running; the next tune on this folder resumes it

    def work(self, executor) -> None:
        while not self.stop.is_set():
            with folder_lock(self.out, self.log):
                picked = self.pick()
            if picked is None:
                return
            self.run_one(executor, *picked)


def _executor(options: TuneOptions, out: Path, log):
    if options.launcher == "ray":
        return RayExecutor(make_launcher("ray", options.launch), out, log)
    return LocalExecutor(options.jobs)


def run_tune(options: TuneOptions, *, log: Callable[[str], Any] = print) -> dict[str, Any] | None:
    """Run (or resume, or join) the study of ``options.out``; returns ``best.json``'s content
    once no trial is left running (``None`` before)."""
    _check(options)
    optuna_module()
    base, cfg = base_config(options)
    space = parse_search(options.search)
    check_space(space, base)
    out = Path(options.out).absolute()
    record = {
        "base": base,
        "search": {k: d.text() for k, d in space.items()},
        "metric": options.metric,
    }
    with folder_lock(out, log):
        check_folder(out, record, extend=options.extend)
    work = _Study(options, base, cfg, space, log)
    executor = _executor(options, out, log)
    try:
        with ThreadPoolExecutor(max_workers=options.jobs) as pool:
            futures = [pool.submit(work.work, executor) for _ in range(options.jobs)]
            try:
                for future in futures:
                    future.result()
            except KeyboardInterrupt:
                work.stop.set()
                raise
        best = _finish(work, executor, space)
    finally:
        executor.close()
    return best


def _searched_params(space: dict[str, Dist]) -> list[str]:
    return [f"one_minus_{k}" if d.kind == "logit1m" else k for k, d in space.items()]


def _finish(work: _Study, executor, space) -> dict[str, Any] | None:
    """Once no trial runs: the best trial on the test set (once), ``refit``, the outputs."""
    optuna, out, options = work.optuna, work.out, work.options
    keys = list(dict.fromkeys(["beta", *space]))
    with folder_lock(out, work.log):
        trials = work.study.get_trials(deepcopy=False)
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        params = _searched_params(space)
        write_outputs(out, work.study, keys, params, options.metric, work.maximize, None)
        best = None
        if not running and complete:  # the test set: now, once, for the best trial
            best = _best(work, complete, executor)
            write_outputs(out, work.study, keys, params, options.metric, work.maximize, best)
    if running:
        work.log(f"{len(running)} trial(s) still run in another tune process: it writes best.json")
    elif not complete:
        work.log(f"no trial completed: see {out / 'trials.csv'} and the logs in {out / TRIALS}")
    return best


def _best(work: _Study, complete, executor) -> dict[str, Any]:
    pick = max if work.maximize else min
    top = pick(complete, key=lambda t: (t.value, -t.number))
    name = trial_name(top.number)
    old = read_json(work.out / "best.json")
    best = {
        "number": top.number,
        "name": name,
        "run": str(work.out / TRIALS / name),
        "metric": work.options.metric,
        "value": top.value,
        "values": top.user_attrs.get("values", {}),
    }
    baseline = [t for t in complete if t.user_attrs.get("baseline")]
    if baseline:
        best["baseline"] = {"number": baseline[0].number, "value": baseline[0].value}
    if isinstance(old, dict) and old.get("number") == top.number and old.get("test"):
        best["test"] = old["test"]  # evaluated once
    else:
        work.log(
            f"best: {name} ({work.options.metric} {top.value:.4f}); evaluating it on the test set"
        )
        metrics = evaluate_run(work.out / TRIALS / name, log=work.log)
        best["test"] = {k: v for k, v in metrics.items() if not isinstance(v, list)}
    if work.options.refit:
        best["refit"] = _refit(work, best, executor)
    atomic_write_json(work.out / "best.json", best)
    return best


def _refit(work: _Study, best: dict, executor) -> dict[str, Any]:
    """A run on the full training set (no validation split) with the best trial's values,
    evaluated on the test set: ``DIR/trials/refit-trial-NNNN``."""
    name = f"refit-{best['name']}"
    values = {k: v for k, v in {**work.base, **best["values"]}.items() if k != "val_fraction"}
    write_trial_config(work.out, name, {**values, "evaluate_test": True})
    epochs = TrainConfig.from_dict(values).resolved().epochs
    task = RunTask(out=str(work.out), name=name, epochs=epochs, owner=work.session, folder=TRIALS)
    if isinstance(executor, LocalExecutor):  # one run: every core
        executor = LocalExecutor(1)
    work.log(f"refit: {name} on the full training set")
    outcome = executor.start(task, work.log).outcome()
    metrics = read_json(work.out / TRIALS / name / "metrics.json")
    if not isinstance(metrics, dict) or metrics.get("epoch") != epochs:
        raise RuntimeError(f"the refit run {name} failed: {outcome.line}")
    keep = ("accuracy", "error_percent", "mean_class_accuracy", "many_shot_accuracy",
            "medium_shot_accuracy", "few_shot_accuracy", "num_test_images",
            "num_unreadable_test_images")  # fmt: skip
    return {"run": str(work.out / TRIALS / name), **{k: metrics.get(k) for k in keep}}


def tune_status(out: str, *, stale_after: float = STALE_AFTER) -> list[str]:
    """One line per trial of the tune folder ``out`` (``tune --status``)."""
    folder = Path(out)
    try:
        record = json.loads((folder / "tune.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise FileNotFoundError(f"no readable tune.json in {out}: is it a tune folder?") from None
    optuna = optuna_module()
    from optuna.storages.journal import JournalFileBackend  # optional: the tune extra

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(folder / "study.journal")))
    study = optuna.load_study(study_name="tune", storage=storage)
    keys = list(dict.fromkeys(["beta", *record.get("search", {})]))
    lines = status_lines(folder, study, keys, stale_after)
    return lines or ["no trials yet"]
