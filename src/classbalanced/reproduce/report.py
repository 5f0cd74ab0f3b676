"""``report.md``: a sweep's results next to the paper's Table 2 (CIFAR) or Table 3.

Reads ``results.csv`` of a sweep folder (see :mod:`.sweep`). For each column
(dataset x imbalance factor, plus any other key the sweep varied) the rows are
Softmax, Sigmoid, Focal gamma = 0.5 / 1 / 2 (all unweighted, beta = 0), the
class-balanced loss that is best on the grid (lowest mean error among the paper's
softmax, sigmoid and focal losses; beta > 0, or any run at IF 1 where every beta gives
weight 1) and the class-balanced loss at the
paper's setting for that column. Each cell: mean ± sample std over seeds (n
seeds), the published error, and the difference (ours - published; positive is
worse than the paper). Only finished runs count, and their error is that of the
LAST evaluation (``metrics.json``), never the best epoch. Cells without a
finished run show "-", and so do the published cells of a column whose runs are not the
paper's setting (another ``sampler`` or ``reweight_schedule``: the paper's runs draw
shuffled batches with constant class-balanced weights). Under each column's table, the
metrics that matter on imbalanced data (balanced accuracy, macro-F1, ECE), each the mean
over the cell's runs (no published number: the paper reports error only).

Figures (``figures/``): a beta x gamma heat map of the class-balanced focal loss
per column (:func:`classbalanced.plots.plot_heatmap`) and the test error against
epoch of each row's runs (:func:`classbalanced.plots.plot_error_curves`).

Runs on iNaturalist 2017 / 2018 or ImageNet are compared with Table 3 instead
(ResNet-50, 90 epochs): per data set, Softmax and the paper's class-balanced focal
loss (beta 0.999, gamma 0.5), top-1 and top-5 error beside the published ones (for the
whole official training set, imbalance factor 1, only); runs of other imbalance factors,
networks, epochs or other varied keys get rows of their own (never averaged). The
CIFAR protocol's 200-epoch warning never applies to them; runs shorter than 90
epochs are flagged instead.

The module is over 600 lines because its parts (cells, Table 2 and Table 3, figures,
writing) all serve the one report and share :class:`Cell` and the grouping of runs.
"""

from __future__ import annotations

import functools
import math
import os
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import config_from_sources, recorded_value
from ..engine.run_files import read_history
from ..files import atomic_write_text
from .decoupling import MAX_DEPTH, decoupling_lines
from .published import (
    BASELINE_METHODS,
    FOCAL_GAMMAS,
    normalize_dataset,
    paper_cb_setting,
    published_error,
    published_large,
)
from .results import (
    RESULT_METRICS,
    load_results,
    lock_shared,
    md_cell,
    read_json,
    write_results_csv,
)

__all__ = [
    "load_results",
    "build_report",
    "write_report",
    "mean_std",
    "PAPER_EPOCHS",
    "RECIPE_KEYS",
    "recipe_departures",
]

#: the first line of every report.md written here (another file there is not replaced)
REPORT_TITLE = "# Reproduction report: "
PAPER_EPOCHS = 200
#: Table 3's schedule (ResNet-50 on iNaturalist / ImageNet)
LARGE_EPOCHS = 90
_NOT_COLUMN = {
    "name",
    "run_dir",
    "loss",
    "beta",
    "gamma",
    "seed",
    "status",
    "epoch",
    *RESULT_METRICS,
}
_DATASET_ORDER = ("cifar10", "cifar100", "cifar20")
#: the paper's runs (Tables 2 and 3): shuffled batches, constant class-balanced weights
_PAPER_METHOD = {"sampler": "shuffle", "reweight_schedule": "constant"}


def _off_paper(values: dict[str, Any]) -> list[str]:
    """The settings of a column (``key value``) that the paper's runs did not use
    (an older results.csv without the key: the default, the paper's)."""
    return [f"{k} {values[k]}" for k, v in _PAPER_METHOD.items() if values.get(k) not in (None, v)]


#: the settings of a run's config.json that Tables 2 and 3 fix (beside the loss, beta and
#: gamma each row selects and the data set and imbalance factor of each column)
RECIPE_KEYS = (
    "model", "epochs", "batch_size", "lr", "momentum", "nesterov", "weight_decay",
    "no_decay_bias_and_norm", "lr_schedule", "warmup_epochs", "decay_epochs", "decay_factors",
    "image_size", "sampler", "reweight_schedule",
)  # fmt: skip


@functools.lru_cache(maxsize=16)
def _paper_recipe(dataset: str, balanced: bool) -> tuple[tuple[str, Any], ...]:
    """The paper's recipe for ``dataset``, read from the preset that reproduces it (each
    value written once, there): Table 2's CIFAR presets, Table 3's ``{dataset}_softmax``."""
    if dataset.startswith("cifar"):
        base = "cifar10" if dataset == "cifar10" else "cifar100"  # cifar20: CIFAR-100's images
        preset = f"{base}_balanced" if balanced else f"{base}_lt_cb"
        keys = [k for k in RECIPE_KEYS if k != "image_size"]  # the images' own 32 x 32
    else:
        preset, keys = f"{dataset}_softmax", list(RECIPE_KEYS)
    cfg = config_from_sources(preset).resolved()
    return tuple((k, getattr(cfg, k)) for k in keys)


def _same(got: Any, want: Any) -> bool:
    if isinstance(got, list | tuple) and isinstance(want, list | tuple):
        return len(got) == len(want) and all(_same(a, b) for a, b in zip(got, want, strict=True))
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (got, want))
    return _close(float(got), float(want)) if numbers else got == want


def recipe_departures(sweep_dir: Path, row: dict[str, Any]) -> list[str]:
    """The settings (``key value``) of ``row``'s run that depart from the recipe of the
    paper's table for its data set (empty: it follows it); a run whose config.json cannot
    be read departs in all of them."""
    dataset = normalize_dataset(str(row["dataset"]))
    if not dataset.startswith("cifar") and published_large(dataset, "softmax") is None:
        return []  # no table to compare with
    config = read_json(sweep_dir / str(row["run_dir"]) / "config.json") if row["run_dir"] else None
    if not isinstance(config, dict):
        return ["config.json not recorded"]
    recipe = _paper_recipe(dataset, _close(row["imbalance_factor"], 1.0))
    found = []
    for key, want in recipe:
        got = recorded_value(config, key)
        if not _same(got, want):
            found.append(f"{key} {got}")
    return found


def _column_departures(sweep_dir: Path, runs: list[dict[str, Any]]) -> list[str]:
    """Every departing setting of a column's runs, each named once, in recipe order."""
    found: list[str] = []
    for run in runs:
        found += [d for d in recipe_departures(sweep_dir, run) if d not in found]
    return found


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1; None for a single value).

    >>> mean_std([30.0, 32.0, 34.0])
    (32.0, 2.0)
    """
    if not values:
        raise ValueError("mean_std needs at least one value")
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


# ---------------------------------------------------------------------------
# grouping
# ---------------------------------------------------------------------------


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _setting_label(loss: str, beta: float, gamma: float | None) -> str:
    text = f"{loss}, β={beta:g}"
    if loss == "focal" and gamma is not None:
        text += f", γ={gamma:g}"
    return text


@dataclass
class Cell:
    """One method in one column: the finished runs it averages over."""

    label: str
    runs: list[dict[str, Any]]
    published: float | None
    setting: str = ""

    @property
    def errors(self) -> list[float]:
        return [r["error_percent"] for r in self.runs]

    def stats(self) -> tuple[float, float | None] | None:
        return mean_std(self.errors) if self.runs else None

    def text(self) -> str:
        stats = self.stats()
        if stats is None:
            return "-"
        mean, std = stats
        n = len(self.runs)
        if std is None:
            return f"{mean:.2f} ({n} seed)"
        return f"{mean:.2f} ± {std:.2f} ({n} seeds)"

    def published_text(self) -> str:
        return "-" if self.published is None else f"{self.published:.2f}"

    def diff(self) -> float | None:
        stats = self.stats()
        if stats is None or self.published is None:
            return None
        return stats[0] - self.published

    def diff_text(self) -> str:
        diff = self.diff()
        return "-" if diff is None else f"{diff:+.2f}"


def _group(runs: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """Runs by setting (loss, beta, gamma for focal)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for run in runs:
        gamma = run["gamma"] if run["loss"] == "focal" else None
        groups.setdefault((run["loss"], run["beta"], gamma), []).append(run)
    return groups


def _select(runs, loss: str, beta: float, gamma: float | None = None) -> list[dict[str, Any]]:
    return [
        r
        for r in runs
        if r["loss"] == loss
        and _close(r["beta"], beta)
        and (loss != "focal" or gamma is None or _close(r["gamma"], gamma))
    ]


def _column_cells(
    dataset: str, factor: float, runs: list[dict[str, Any]], gammas: list[float], paper: bool
) -> list[Cell]:
    """The cells of one column; ``paper``: its runs are the paper's setting (else no
    published numbers)."""

    def pub(method: str, gamma: float | None = None) -> float | None:
        return published_error(dataset, factor, method, gamma=gamma) if paper else None

    cells = [
        Cell("Softmax", _select(runs, "softmax", 0.0), pub("softmax"), "softmax, β=0"),
        Cell("Sigmoid", _select(runs, "sigmoid", 0.0), pub("sigmoid"), "sigmoid, β=0"),
    ]
    for g in gammas:
        cells.append(
            Cell(
                f"Focal γ={g:g}",
                _select(runs, "focal", 0.0, g),
                pub("focal", g),
                f"focal, β=0, γ={g:g}",
            )
        )
    # best of the grid: beta > 0 (at IF 1 every beta gives weight 1, so all runs count)
    # (the paper's losses only: its best is that of softmax, sigmoid and focal)
    candidates = [
        r for r in runs if r["loss"] in BASELINE_METHODS and (r["beta"] > 0 or _close(factor, 1))
    ]
    best_key, best_runs = None, []
    for key, group in _group(candidates).items():
        mean = statistics.fmean(r["error_percent"] for r in group)
        if best_key is None or mean < statistics.fmean(r["error_percent"] for r in best_runs):
            best_key, best_runs = key, group
    cells.append(
        Cell(
            "Class-balanced (best of grid)",
            best_runs,
            pub("class_balanced"),
            _setting_label(*best_key) if best_key else "",
        )
    )
    chosen = paper_cb_setting(dataset, factor)
    if chosen is None:
        cells.append(Cell("Class-balanced (paper's setting)", [], None, "no published setting"))
    else:
        beta = 0.0 if chosen["beta"] is None else chosen["beta"]
        cells.append(
            Cell(
                "Class-balanced (paper's setting)",
                _select(runs, chosen["loss"], beta, chosen["gamma"]),
                pub("class_balanced"),
                _setting_label(chosen["loss"], beta, chosen["gamma"]),
            )
        )
    return cells


def _column_keys(rows: list[dict[str, Any]]) -> list[str]:
    keys = [k for k in rows[0] if k not in _NOT_COLUMN]
    first = ["dataset", "imbalance_factor"]
    return first + [k for k in keys if k not in first]


def _column_sort(keys: list[str], column: tuple) -> tuple:
    values = dict(zip(keys, column, strict=True))
    dataset = str(values["dataset"])
    order = _DATASET_ORDER.index(dataset) if dataset in _DATASET_ORDER else len(_DATASET_ORDER)
    factor = values["imbalance_factor"] or 0.0
    rest = tuple(str(values[k]) for k in keys[2:])
    return (order, dataset, -factor, rest)


def _column_title(keys: list[str], column: tuple, shown: list[str]) -> str:
    values = dict(zip(keys, column, strict=True))
    title = f"{values['dataset']}, IF {values['imbalance_factor']:g}"
    for key in shown:
        title += f", {key} {values[key]}"
    return md_cell(title)


def _slug(keys: list[str], column: tuple, shown: list[str]) -> str:
    values = dict(zip(keys, column, strict=True))
    parts = [str(values["dataset"]), f"if{values['imbalance_factor']:g}"]
    parts += [f"{key}-{values[key]}" for key in shown]
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", "-".join(parts))


# ---------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------


def _heatmap(path: Path, runs: list[dict[str, Any]], title: str) -> Path | None:
    from .. import plots  # plotting

    focal = [r for r in runs if r["loss"] == "focal"]
    if not any(r["beta"] > 0 for r in focal):
        return None
    betas = sorted({r["beta"] for r in focal})
    gammas = sorted({r["gamma"] for r in focal})
    grid = [[math.nan] * len(gammas) for _ in betas]
    for (_, beta, gamma), group in _group(focal).items():
        grid[betas.index(beta)][gammas.index(gamma)] = statistics.fmean(
            r["error_percent"] for r in group
        )
    return plots.plot_heatmap(
        path,
        grid,
        row_labels=[f"{b:g}" for b in betas],
        col_labels=[f"{g:g}" for g in gammas],
        row_title="beta",
        col_title="gamma",
        title=f"{title}: focal loss, last-epoch error %",
    )


def _history(sweep_dir: Path, run: dict[str, Any]) -> tuple[list[float], list[float]] | None:
    if not run.get("run_dir"):
        return None
    try:
        history = read_history(sweep_dir / run["run_dir"])
        epochs = [float(h["epoch"]) for h in history]
        errors = [float(h["error_percent"]) for h in history]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not all(math.isfinite(v) for v in epochs + errors):  # a diverged run: no curve
        return None
    return (epochs, errors) if epochs else None


def _curves(sweep_dir: Path, path: Path, cells: list[Cell]) -> Path | None:
    from .. import plots  # plotting

    lines = {}
    for cell in cells:
        curves = [c for c in (_history(sweep_dir, r) for r in cell.runs) if c is not None]
        if not curves:
            continue
        epochs = curves[0][0]
        same = [errors for e, errors in curves if e == epochs]
        mean = [statistics.fmean(values) for values in zip(*same, strict=True)]
        label = cell.label
        if cell.label.startswith("Class-balanced"):
            label += f" [{cell.setting}]"
        lines[f"{label} ({len(same)} seed{'s' if len(same) > 1 else ''})"] = (epochs, mean)
    if not lines:
        return None
    return plots.plot_error_curves(path, lines, figsize=(8.0, 5.0))


# ---------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------


def _is_large(row: dict[str, Any]) -> bool:
    """A run of Table 3's data sets (iNaturalist, ImageNet)."""
    return published_large(str(row["dataset"]), "softmax") is not None


def build_report(
    sweep_dir: str | os.PathLike, rows: list[dict[str, Any]], *, figures: bool = True
) -> str:
    """The markdown text of the report for ``rows`` (from :func:`load_results`);
    figures are written under ``sweep_dir/figures`` when ``figures``.

    CIFAR runs are compared with Table 2, iNaturalist / ImageNet runs with Table 3.
    """
    sweep_dir = Path(sweep_dir)
    lines = [f"{REPORT_TITLE}{sweep_dir.name}", ""]
    if not rows:
        return "\n".join(lines + ["results.csv holds no runs.", ""])
    large = [r for r in rows if _is_large(r)]
    small = [r for r in rows if not _is_large(r)]
    text = _table2_report(sweep_dir, small, lines, figures) if small else "\n".join(lines)
    if large:
        text = text.rstrip("\n") + "\n\n" + "\n".join(_table3_lines(sweep_dir, large)) + "\n"
    if _not_counted_lines(rows):
        text = text.rstrip("\n") + "\n\n" + "\n".join(_not_counted_lines(rows))
    return text


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(value)


def _real(value: Any) -> bool:
    """A finite number (not a bool, string or None: a hand-edited metrics.json)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _counted(row: dict[str, Any]) -> bool:
    """A run the tables count: finished, with a finite error (NaN compares to nothing)."""
    return row["status"] == "finished" and _finite(row["error_percent"])


def _not_counted(row: dict[str, Any]) -> str:
    """Why ``row`` is not counted (its status, or the error a finished run holds)."""
    if row["status"] != "finished":
        return str(row["status"])
    error = row["error_percent"]
    return f"finished, but its error_percent is {'missing' if error is None else error}"


def _table3_cell(runs: list[dict[str, Any]], key: str, published: float | None) -> list[str]:
    values = [r[key] for r in runs if _finite(r.get(key))]
    if not values:
        return ["-", "-" if published is None else f"{published:.2f}", "-"]
    mean, std = mean_std(values)
    n = f"{len(values)} seed{'s' if len(values) > 1 else ''}"
    ours = f"{mean:.2f} ({n})" if std is None else f"{mean:.2f} ± {std:.2f} ({n})"
    if published is None:
        return [ours, "-", "-"]
    return [ours, f"{published:.2f}", f"{mean - published:+.2f}"]


def _key_text(key: str, value: Any) -> str:
    """``IF 10`` for the imbalance factor, ``key value`` for any other key."""
    if key == "imbalance_factor" and isinstance(value, float):
        return f"IF {value:g}"
    return f"{key} {value}"


def _natural(text: str) -> tuple:
    """Sort key: numbers by value (90 before 200), then any other text."""
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def _table3_lines(sweep_dir: Path, rows: list[dict[str, Any]]) -> list[str]:
    """Table 3 of the paper (ResNet-50, 90 epochs): top-1 and top-5 error per data set."""
    finished = [r for r in rows if _counted(r)]
    epochs = sorted({r["epochs"] for r in (finished or rows) if r["epochs"] is not None})
    models = sorted({str(r.get("model")) for r in rows if r.get("model")})
    lines = [
        "## Table 3: ResNet-50, 90 epochs (top-1 / top-5 validation error %)",
        "",
        f"**Epochs run: {', '.join(str(e) for e in epochs) or '-'}** (the paper trains "
        f"{LARGE_EPOCHS} epochs). Model(s): {', '.join(models) or '-'} (paper: ResNet-50, 224 px).",
        "",
    ]
    if any(e < LARGE_EPOCHS for e in epochs):
        lines += [
            f"> **Warning: runs shorter than {LARGE_EPOCHS} epochs are not Table 3's protocol;** "
            "the diff columns only show the distance.",
            "",
        ]
    lines += [
        "Errors are those of the LAST evaluation of each run, mean ± sample std over seeds; "
        "published: Table 3 of Cui et al., CVPR 2019; diff = ours - published.",
        "",
        "| data set | method | setting | top-1: ours | published | diff | top-5: ours "
        "| published | diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    cb = paper_cb_setting("inat2018", None)
    if cb is None:  # published.json's Table 3 has it
        raise ValueError("published.json lacks the class-balanced setting of Table 3")
    methods = (
        ("Softmax", "softmax", 0.0, None, "softmax, β=0"),
        ("Class-balanced (paper's setting)", cb["loss"], cb["beta"], cb["gamma"], ""),
    )
    # one group per data set and every other key that varies (imbalance factor, network,
    # epochs, the sweep's own columns), as Table 2's columns: never averaged together
    keys = [k for k in _column_keys(rows) if k != "dataset"]

    def group(row: dict[str, Any]) -> tuple:
        return (normalize_dataset(str(row["dataset"])), *(row[k] for k in keys))

    groups = sorted({group(r) for r in rows}, key=lambda g: [_natural(str(v)) for v in g])
    shown = [k for i, k in enumerate(keys, 1) if len({g[i] for g in groups}) > 1]
    yours: list[str] = []  # groups left without published numbers: their departing settings
    for values in groups:
        runs = [r for r in finished if group(r) == values]
        dataset, named = values[0], dict(zip(keys, values[1:], strict=True))
        where = ", ".join([dataset, *(_key_text(k, named[k]) for k in shown)])
        # Table 3 is for the official training sets (IF 1 keeps them whole, others
        # sub-sample) and the paper's sampling and weighting
        off = _off_paper(named)
        departs = [d for d in _column_departures(sweep_dir, runs) if d not in off]
        whole = _close(named["imbalance_factor"], 1.0) and not off and not departs
        if departs and not off and _close(named["imbalance_factor"], 1.0):
            yours.append(f"- {where}: your recipe, not Table 3's: {', '.join(departs)}.")
        where = md_cell(where + (f" ({', '.join(off)}: not the paper's setting)" if off else ""))
        for label, loss, beta, gamma, setting in methods:
            chosen = _select(runs, loss, beta, gamma)
            method = "softmax" if loss == "softmax" and beta == 0 else "class_balanced"
            published = (published_large(dataset, method) if whole else None) or {}
            setting = setting or _setting_label(loss, beta, gamma)
            cells = _table3_cell(chosen, "error_percent", published.get("top1"))
            cells += _table3_cell(chosen, "top5_error_percent", published.get("top5"))
            lines.append(f"| {where} | {label} | {setting} | " + " | ".join(cells) + " |")
    lines.append("")
    if yours:
        lines += [
            "Published numbers left out (each setting named departs from the preset that",
            "reproduces Table 3):",
            "",
            *yours,
            "",
        ]
    return lines


def _table2_preamble(rows: list[dict[str, Any]], finished: list[dict[str, Any]]) -> list[str]:
    """Epochs (and the warning for short runs), run counts, model and how to read the tables."""
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    epochs = sorted({r["epochs"] for r in (finished or rows) if r["epochs"] is not None})
    models = sorted({str(r.get("model")) for r in rows if r.get("model")})
    epochs_text = ", ".join(str(e) for e in epochs) or "-"
    lines = [f"**Epochs run: {epochs_text}** (the paper trains for {PAPER_EPOCHS} epochs).", ""]
    datasets = sorted({str(r["dataset"]) for r in rows})
    unpublished = [d for d in datasets if published_error(d, 100, "softmax") is None]
    if unpublished:  # digits, npz, folders, ImageNet-LT, Places-LT, lists: no Table 2 column
        lines += [
            f"No published numbers for {', '.join(unpublished)} (Table 2 has CIFAR only).",
            "",
        ]
    if len(unpublished) < len(datasets) and any(e < PAPER_EPOCHS for e in epochs):
        lines += [
            f"> **Warning: runs shorter than {PAPER_EPOCHS} epochs are NOT the paper's protocol.** "
            "Their errors are not comparable with the published numbers; the diff column "
            "only shows the distance, not a reproduction.",
            "",
        ]
    return lines + [
        f"- Runs: {len(rows)} ("
        + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
        + "); only finished runs (with a finite error) are counted.",
        f"- Model(s): {', '.join(models) or '-'} (paper: ResNet-32 on CIFAR).",
        "- Errors are test error % at the LAST evaluation of each run (metrics.json), never the "
        "best epoch; cells give mean ± sample std over seeds (n seeds).",
        "- published: Table 2 of Cui et al., CVPR 2019; diff = ours - published (positive: "
        "worse than the paper). '-' marks a missing run or a cell the paper does not have.",
        "- Class-balanced (best of grid) picks the setting with the lowest mean error on the "
        "test set, as the paper's table does; (paper's setting) uses the paper's loss, beta "
        "and gamma for that column.",
        "",
    ]


def _column_section(sweep_dir: Path, column, cells, runs, title, slug, figures, off) -> list[str]:
    """One column's table, the later work at that setting, and its figures (``off``: its
    settings the paper's runs did not use)."""
    lines = [f"## {title}", ""]
    if off:
        lines += [
            f"> Published numbers left out: these runs are not the paper's setting "
            f"({', '.join(off)}): your recipe. The paper's runs follow its recipe in every "
            "one of these settings (its preset's values), with shuffled batches and constant "
            "class-balanced weights.",
            "",
        ]
    lines.append("| method | setting | ours: mean ± std (n seeds) | published | diff |")
    lines.append("|---|---|---|---|---|")
    for cell in cells:
        lines.append(
            f"| {cell.label} | {cell.setting or '-'} | {cell.text()} | "
            f"{cell.published_text()} | {cell.diff_text()} |"
        )
    lines.append("")
    lines += _imbalance_lines(cells)
    dataset, factor = column
    later = [
        (label, published_error(dataset, factor, method))
        for label, method in (
            ("CE-DRW", "ce_drw"),
            ("LDAM-DRW", "ldam_drw"),
            ("logit-adjusted", "logit_adjusted"),
        )
    ]
    later = [(label, value) for label, value in later if value is not None]
    if later:
        text = ", ".join(f"{label} {value:.2f}" for label, value in later)
        lines += [f"Later work at this setting (published, not run here): {text}.", ""]
    if figures and runs:
        heat = _heatmap(sweep_dir / "figures" / f"{slug}-focal-heatmap.png", runs, title)
        if heat is not None:
            lines += [f"![beta x gamma, focal loss]({heat.relative_to(sweep_dir)})", ""]
        curve = _curves(sweep_dir, sweep_dir / "figures" / f"{slug}-error-curves.png", cells)
        if curve is not None:
            lines += [f"![test error against epoch]({curve.relative_to(sweep_dir)})", ""]
    return lines


#: the metrics that matter on imbalanced data, per cell: (column title, results.csv key)
_IMBALANCE_METRICS = (
    ("balanced accuracy", "balanced_accuracy"),
    ("macro-F1", "macro_f1"),
    ("ECE", "ece"),
)


def _imbalance_lines(cells: list[Cell]) -> list[str]:
    """The cells' means of :data:`_IMBALANCE_METRICS` over their runs (``-`` where a run
    lacks one: runs written before these metrics); nothing without a finished run."""
    shown = [cell for cell in cells if cell.runs]
    if not shown:
        return []
    titles = " | ".join(title for title, _ in _IMBALANCE_METRICS)
    lines = [
        "On imbalanced data, mean over each method's seeds:",
        "",
        f"| method | {titles} |",
        "|---|" + "---|" * len(_IMBALANCE_METRICS),
    ]
    for cell in shown:
        values: list[list[Any]] = [
            [run.get(key) for run in cell.runs] for _, key in _IMBALANCE_METRICS
        ]
        means = [f"{statistics.fmean(v):.4f}" if all(map(_real, v)) else "-" for v in values]
        lines.append(f"| {cell.label} | " + " | ".join(means) + " |")
    return [*lines, ""]


def _table2_report(
    sweep_dir: Path, rows: list[dict[str, Any]], lines: list[str], figures: bool
) -> str:
    """The Table 2 part of :func:`build_report` (CIFAR runs)."""
    finished = [r for r in rows if _counted(r)]
    lines += _table2_preamble(rows, finished)
    keys = _column_keys(rows)
    columns = sorted({tuple(r[k] for k in keys) for r in rows}, key=lambda c: _column_sort(keys, c))
    shown = [k for k in keys[2:] if len({c[keys.index(k)] for c in columns}) > 1]
    focal_gammas = {r["gamma"] for r in finished if r["loss"] == "focal" and r["beta"] == 0}
    gammas = sorted(set(FOCAL_GAMMAS) | focal_gammas)
    tables = []
    for column in columns:
        runs = [r for r in finished if tuple(r[k] for k in keys) == column]
        values = dict(zip(keys, column, strict=True))
        off = _off_paper(values)
        off += [d for d in _column_departures(sweep_dir, runs) if d not in off]
        where = (str(values["dataset"]), values["imbalance_factor"])
        tables.append((column, _column_cells(*where, runs, gammas, not off), runs, off))

    # the summary in the paper's layout
    titles = [_column_title(keys, c, shown) for c, *_ in tables]
    lines += ["## Summary (mean last-epoch error %, paper layout)", ""]
    lines.append("| method | " + " | ".join(titles) + " |")
    lines.append("|---|" + "---|" * len(titles))
    for i, cell in enumerate(tables[0][1]):
        lines.append(
            f"| {cell.label} | " + " | ".join(cells[i].text() for _, cells, *_ in tables) + " |"
        )
    lines.append("")

    for (column, cells, runs, off), title in zip(tables, titles, strict=True):
        values = dict(zip(keys, column, strict=True))
        where = (str(values["dataset"]), values["imbalance_factor"])
        slug = _slug(keys, column, shown)
        lines += _column_section(sweep_dir, where, cells, runs, title, slug, figures, off)

    return "\n".join(lines)


def _not_counted_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The section naming the runs no table counts (failed, missing, unfinished, NaN)."""
    unfinished = [r for r in rows if not _counted(r)]
    if not unfinished:
        return []
    lines = ["## Runs not counted", ""]
    lines += [f"- {r['name']}: {_not_counted(r)}" for r in unfinished[:50]]
    if len(unfinished) > 50:
        lines.append(f"- ... and {len(unfinished) - 50} more")
    return [*lines, ""]


def write_report(
    sweep_dir: str | os.PathLike, *, refresh: bool = False, figures: bool = True
) -> Path:
    """Write ``report.md`` (and ``figures/``) in a sweep folder from its ``results.csv``.

    ``refresh``: first rebuild results.csv from plan.json and the run folders (for a
    sweep that was interrupted or is still running). Runs of ``classbalanced decouple``
    found under the folder get their own section
    (:func:`~classbalanced.reproduce.decoupling.decoupling_lines`); a folder holding only
    such runs (no plan.json, no results.csv) gets a report of that section alone.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep folder not found: {sweep_dir}")
    path = sweep_dir / "report.md"
    _check_replaceable(path)  # before results.csv or a figure is written
    decoupled = decoupling_lines(sweep_dir)
    is_sweep = (sweep_dir / "plan.json").is_file() or (sweep_dir / "results.csv").is_file()
    if not decoupled and not is_sweep and not refresh:
        raise FileNotFoundError(
            f"no results.csv at {sweep_dir / 'results.csv'} (run the sweep first) and no "
            f"decouple run (decouple.json + metrics.json) up to {MAX_DEPTH} levels below "
            f"{sweep_dir}: expected a sweep folder or a folder of decouple runs"
        )
    with lock_shared(sweep_dir, "report"):  # results.csv, figures and report.md together
        if decoupled and not is_sweep:
            text = "\n".join([f"{REPORT_TITLE}{sweep_dir.name}", "", *decoupled])
        else:
            if refresh:
                write_results_csv(sweep_dir, lock=False)
            rows = load_results(sweep_dir / "results.csv")
            text = build_report(sweep_dir, rows, figures=figures)
            if decoupled:
                text = text.rstrip("\n") + "\n\n" + "\n".join(decoupled)
        atomic_write_text(path, text)
    return path


def _check_replaceable(path: Path) -> None:
    """``report.md`` may be written: absent, or a report this module wrote."""
    if path.is_dir():
        raise ValueError(f"{path} is a folder: expected a file path (move it away)")
    if path.is_file() and not _written_here(path):
        raise ValueError(
            f"{path} exists and is not a report of classbalanced (it does not start with "
            f"'{REPORT_TITLE}'): move it away to write the report"
        )


def _written_here(path: Path) -> bool:
    """Whether ``path`` starts like a report this module writes (replaced on a rerun)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(len(REPORT_TITLE)) == REPORT_TITLE
    except (OSError, UnicodeDecodeError):
        return False
