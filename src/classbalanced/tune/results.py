"""What a study leaves in its folder: ``trials.csv``, ``report.md``, the plots, and the lines
of ``tune --status``.

* ``trials.csv``: one header line, one row per trial whatever its state (complete, pruned,
  failed, running, waiting): number, run name, state, value, the epoch it was pruned at,
  whether it is the baseline, and the trial's values of the searched keys;
* plots: the optimisation history (each trial's value and the best so far), the metric
  against ``1 - beta`` on a log axis coloured by gamma, and the parameter importances
  (Optuna's fANOVA evaluator);
* ``report.md``: the best trial against the baseline, the trials, the plots.
"""

from __future__ import annotations

import csv
import io
import math
import time
import warnings
from pathlib import Path
from typing import Any

from ..files import atomic_write_text
from ..launch.claims import claim_age, claim_alive, read_claim
from .trials import TRIALS, trial_name

__all__ = ["PLOTS", "status_lines", "trial_rows", "write_outputs"]

#: plot file -> what it shows
PLOTS = {
    "optimization_history.png": "each trial's value and the best so far",
    "metric_vs_beta.png": "the metric against 1 - beta (log axis), coloured by gamma",
    "param_importances.png": "parameter importances (fANOVA)",
}


#: Optuna's trial states as trials.csv writes them
_STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}


def trial_rows(study, keys: list[str]) -> list[dict[str, Any]]:
    """One dict per trial, in trial-number order (the rows of ``trials.csv``)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        values = t.user_attrs.get("values", {})
        row = {
            "number": t.number,
            "name": trial_name(t.number),
            "state": _STATES.get(t.state.name, t.state.name.lower()),
            "value": t.value,
            "pruned_epoch": t.user_attrs.get("pruned_epoch"),
            "baseline": bool(t.user_attrs.get("baseline", False)),
        }
        row.update({k: values.get(k) for k in keys})
        row["failure"] = t.user_attrs.get("failure", "")
        rows.append(row)
    return rows


def _csv(rows: list[dict], keys: list[str]) -> str:
    header = ["number", "name", "state", "value", "pruned_epoch", "baseline", *keys, "failure"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in header})
    return buffer.getvalue()


def _plot_history(path: Path, rows: list[dict], metric: str, maximize: bool) -> None:
    import matplotlib.pyplot as plt  # heavy: plotting

    done = [r for r in rows if r["state"] == "complete"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["number"] for r in done], [r["value"] for r in done], "o", label=metric)
    best, running = [], -math.inf if maximize else math.inf
    for r in done:
        running = max(running, r["value"]) if maximize else min(running, r["value"])
        best.append(running)
    ax.step([r["number"] for r in done], best, where="post", label="best so far")
    ax.set(xlabel="trial", ylabel=metric, title="optimisation history")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_beta(path: Path, rows: list[dict], metric: str) -> None:
    import matplotlib.pyplot as plt  # heavy: plotting

    done = [r for r in rows if r["state"] == "complete" and r.get("beta") is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    x = [max(1.0 - float(r["beta"]), 1e-12) for r in done]
    gamma = [float(r.get("gamma") or 0.0) for r in done]
    points = ax.scatter(x, [r["value"] for r in done], c=gamma, cmap="viridis")
    fig.colorbar(points, ax=ax, label="gamma")
    ax.set_xscale("log")
    ax.set(xlabel="1 - beta (beta = 0: 1)", ylabel=metric, title=f"{metric} against 1 - beta")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _importances(study, params: list[str]) -> dict[str, float]:
    """fANOVA importances of the searched parameters ({} with too few trials)."""
    import optuna  # optional: the tune extra (the caller has checked it)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
            return optuna.importance.get_param_importances(
                study, evaluator=evaluator, params=params
            )
    except (RuntimeError, ValueError, ZeroDivisionError):  # fewer than 2 usable trials
        return {}


def _plot_importances(path: Path, importances: dict[str, float]) -> None:
    import matplotlib.pyplot as plt  # heavy: plotting

    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.5 * max(1, len(importances))))
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    ax.set(xlabel="importance (fANOVA)", title="parameter importances")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _report(rows, keys, metric, best: dict | None, importances, written) -> str:
    lines = ["# classbalanced tune", ""]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    lines.append(
        f"{len(rows)} trials ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))}); "
        f"objective: {metric} of the validation split, last epoch."
    )
    lines.append("")
    if best is not None:
        lines.append(
            f"Best: trial {best['number']} ({metric} {best['value']:.4f}) with "
            + ", ".join(f"{k} = {_fmt(v)}" for k, v in best["values"].items())
        )
        base = best.get("baseline")
        if base is not None:
            lines.append(
                f"Baseline (trial {base['number']}, beta = 0): {metric} {base['value']:.4f}"
            )
        test = best.get("test")
        if test:
            lines.append(
                f"Test set (evaluated once, for the best trial): accuracy {test['accuracy']:.4f}, "
                f"balanced accuracy {test['mean_class_accuracy']:.4f}"
            )
        refit = best.get("refit")
        if refit:
            lines.append(
                f"Refit on the full training set: test accuracy {refit['accuracy']:.4f}, "
                f"balanced accuracy {refit['mean_class_accuracy']:.4f} ({refit['run']})"
            )
        lines.append("")
    header = ["trial", "state", metric, *keys, "pruned at"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["name"], r["state"], _fmt(r["value"]), *[_fmt(r[k]) for k in keys]]
        lines.append("| " + " | ".join([*cells, _fmt(r["pruned_epoch"])]) + " |")
    if importances:
        lines += ["", "Parameter importances (fANOVA): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in importances.items())]  # fmt: skip
    lines.append("")
    lines += [f"![{PLOTS[name]}]({name})" for name in written]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, study, keys, params, metric, maximize, best) -> list[str]:
    """``trials.csv``, the plots and ``report.md``; returns the plots written."""
    rows = trial_rows(study, keys)
    atomic_write_text(out / "trials.csv", _csv(rows, keys))
    written = []
    if any(r["state"] == "complete" for r in rows):
        _plot_history(out / "optimization_history.png", rows, metric, maximize)
        written.append("optimization_history.png")
        if "beta" in keys:
            _plot_beta(out / "metric_vs_beta.png", rows, metric)
            written.append("metric_vs_beta.png")
    importances = _importances(study, params) if params else {}
    if importances:
        _plot_importances(out / "param_importances.png", importances)
        written.append("param_importances.png")
    atomic_write_text(out / "report.md", _report(rows, keys, metric, best, importances, written))
    return written


def status_lines(out: Path, study, keys: list[str], stale_after: float) -> list[str]:
    """One line per trial, as ``sweep --status`` prints runs."""
    lines = []
    for r in trial_rows(study, keys):
        values = ", ".join(f"{k} {_fmt(r[k])}" for k in keys if r[k] is not None)
        name = r["name"] + (" (baseline)" if r["baseline"] else "")
        if r["state"] == "complete":
            lines.append(f"complete {name}: value {r['value']:.6g}; {values}")
        elif r["state"] == "pruned":
            lines.append(f"pruned   {name}: at epoch {r['pruned_epoch']}; {values}")
        elif r["state"] == "failed":
            lines.append(f"failed   {name}: {r['failure'] or '?'}; {values}")
        elif r["state"] == "running":
            claim = read_claim(out / TRIALS / f"{r['name']}.trial")
            if claim is None:
                lines.append(f"stalled  {name}: no live tune holds it (re-run tune to resume it)")
                continue
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(claim.get("started", 0)))
            where = f"{claim.get('host', '?')} (pid {claim.get('pid', '?')}) since {since}"
            state = "running " if claim_alive(claim, stale_after) else "stalled "
            lines.append(f"{state} {name}: on {where}, heartbeat {claim_age(claim):.0f} s ago")
        else:
            lines.append(f"{r['state']:8} {name}")
    return lines
