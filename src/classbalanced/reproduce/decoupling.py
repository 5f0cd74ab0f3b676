"""The decoupled-classifier section of ``report.md``: stage-two runs beside Kang et al.

``classbalanced decouple`` writes ordinary run folders holding ``decouple.json``
(:mod:`classbalanced.decouple`). :func:`decoupling_lines` finds them under a folder,
adds each one's stage-one run as the ``joint`` row (the network's own classifier; left
out with a note when that folder no longer holds the checkpoint that was decoupled), and
prints top-1 accuracy % overall and on many / medium / few-shot classes beside the
numbers of Kang et al. (ICLR 2020), where those exist for the same data set, network and
stage-one epochs (:func:`~classbalanced.reproduce.published.published_decoupling`) and the
run follows the release's recipe for that data set in every setting that changes the
result (:func:`~classbalanced.reproduce.published.decoupling_recipe`: the benchmark's
training-list sizes, stage one's loss, beta, sampler, batch size, lr, schedule, weight
decay; stage two's epochs, lr, loss, sampler, batch-norm mode, epoch selection, tau bias
and the split tau was chosen on; an ImageNet-pretrained network where theirs was). Any
other run is listed as "your recipe", each departing setting named, with no published
number beside it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ..data.lists import BENCHMARKS
from ..engine.run_folder import DECOUPLE_FILE
from .published import (
    DECOUPLING_METHODS,
    decoupling_recipe,
    decoupling_tables,
    published_decoupling,
)
from .results import md_cell, read_json

__all__ = ["find_decouple_runs", "decoupling_rows", "decoupling_lines"]

#: how deep below the report folder run folders are looked for
MAX_DEPTH = 4
_GROUPS = ("all", "many", "medium", "few")
_METRIC = {
    "all": "accuracy",
    "many": "many_shot_accuracy",
    "medium": "medium_shot_accuracy",
    "few": "few_shot_accuracy",
}


def find_decouple_runs(folder: str | os.PathLike) -> list[Path]:
    """Run folders under ``folder`` (itself included, at most :data:`MAX_DEPTH` levels down,
    symbolic links not followed) that hold both ``decouple.json`` and ``metrics.json``."""
    root = Path(folder)
    found = []
    for path, dirs, files in os.walk(root):
        depth = len(Path(path).relative_to(root).parts)
        if depth >= MAX_DEPTH:
            dirs[:] = []
        dirs.sort()
        if DECOUPLE_FILE in files and "metrics.json" in files:
            found.append(Path(path))
    return found


def _damage(metrics: dict[str, Any]) -> str | None:
    """What is wrong with the accuracies of ``metrics`` (None: each a number or null)."""
    for key in _METRIC.values():
        value = metrics.get(key)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            return f"{key} is {value!r}, expected a finite number"
    return None


#: what a key missing from a run's records is shown as (a missing setting departs)
_MISSING = "not recorded"


def _same(got: Any, want: Any) -> bool:
    """A recorded setting equals the recipe's (numbers as floats: 0.2 == 0.2, 0 == 0.0)."""
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (got, want))
    if numbers:
        return math.isclose(float(got), float(want), rel_tol=1e-9, abs_tol=1e-12)
    return got == want


def _stage_two_value(settings: dict[str, Any], key: str) -> Any:
    """A stage-two setting from ``decouple.json``: the resolved top-level value (``lr``,
    ``epochs``, ...) where ``decouple`` wrote one, else its option, else :data:`_MISSING`."""
    options = settings.get("options")
    options = options if isinstance(options, dict) else {}
    return settings.get(key, options.get(key, _MISSING))


def _size_departures(dataset: str, metrics: dict, recipe: dict) -> list[str]:
    """The training list's size against the benchmark's (classes, images, largest and
    smallest class where the benchmark's list is known)."""
    counts = metrics.get("train_counts")
    if not isinstance(counts, list) or not all(isinstance(c, int) for c in counts) or not counts:
        return [f"stage one's training-set sizes {_MISSING}"]
    got = {"classes": len(counts), "train_images": sum(counts)}
    bench = BENCHMARKS.get(dataset)
    want = {k: recipe[k] for k in ("classes", "train_images") if k in recipe}
    if bench is not None:
        want = {"classes": bench.num_classes, "train_images": bench.num_train}
        want.update(largest=bench.max_per_class, smallest=bench.min_per_class)
        got.update(largest=max(counts), smallest=min(counts))
    return [
        f"stage one's training set {key} {got[key]} (the benchmark's: {value})"
        for key, value in want.items()
        if got[key] != value
    ]


def _departures(method: str, metrics: dict, config: dict, settings: dict) -> list[str]:
    """How a run departs from the recipe of Kang et al.'s numbers for its data set (empty:
    it follows it in every setting :func:`~.published.decoupling_recipe` lists): the
    benchmark's whole training list, stage one's settings (``config.json``) and, for a
    stage-two run, its method's settings (``decouple.json``; a setting it does not record
    departs). Network, stage-one epochs and pretraining pick the table (:func:`_published`)."""
    dataset = str(metrics.get("dataset"))
    recipe = decoupling_recipe(dataset) if isinstance(metrics.get("dataset"), str) else None
    if recipe is None:
        return []
    found = _size_departures(dataset, metrics, recipe)
    for key, want in recipe["stage_one"].items():
        got = config.get(key, metrics.get(key, _MISSING))
        if not _same(got, want):
            found.append(f"stage one's {key} {got} (the release's: {want})")
    for key, want in recipe["stage_two"].get(method, {}).items():
        got = _stage_two_value(settings, key)
        if not _same(got, want):
            found.append(f"stage two's {key} {got} (the release's: {want})")
    return found


def _row(
    name: str, method: str, metrics: dict[str, Any], stage_one: str, folder: Path, settings: dict
) -> dict[str, Any]:
    """One table row; ``folder`` holds the run's ``config.json`` (a decouple run's is a copy
    of its stage one's), ``settings`` its ``decouple.json`` (``{}`` for a joint row)."""
    config = read_json(folder / "config.json")
    config = config if isinstance(config, dict) else {}
    row: dict[str, Any] = {"name": name, "method": method, "stage_one": stage_one}
    row["pretrained"] = config.get("pretrained") is True
    row["departures"] = _departures(method, metrics, config, settings)
    row.update({k: metrics.get(k) for k in ("dataset", "model", "seed")})
    epochs = metrics.get("epochs")  # of stage one (a decouple run records its stage one's)
    row["epochs"] = epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None
    for group, key in _METRIC.items():
        value = metrics.get(key)
        row[group] = None if value is None else 100.0 * float(value)
    return row


def _stage_one(run: Path, settings: dict[str, Any], root: Path) -> Path | None:
    """The stage-one folder named in ``decouple.json``: as written, relative to the report
    folder, or beside the decouple run (folders moved together)."""
    written = settings.get("stage_one")
    if not isinstance(written, str):
        return None
    for candidate in (Path(written), root / written, run.parent / Path(written).name):
        if (candidate / "metrics.json").is_file():
            return candidate.resolve()
    return None


def _decoupled_checkpoint(stage_one: Path, settings: dict[str, Any]) -> bool:
    """Whether ``stage_one`` still lists the checkpoint that was decoupled (its SHA-256 in
    ``run.json``): not after a retrain into the same folder (unknown for older records)."""
    sha = settings.get("stage_one_checkpoint_sha256")
    manifest = read_json(stage_one / "run.json")
    files = manifest.get("files") if isinstance(manifest, dict) else None
    return sha is None or (isinstance(files, dict) and sha in files.values())


def _name(path: Path, root: Path) -> str:
    """``path`` relative to the report folder (its own name for the folder itself; the whole
    path for a folder outside it)."""
    if path == root:
        return path.name
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def decoupling_rows(folder: str | os.PathLike) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per decouple run and one ``joint`` row per distinct stage-one run, in
    :data:`DECOUPLING_METHODS` order, and the notes (stage-one runs not found,
    unreadable files)."""
    root = Path(folder).resolve()
    rows, notes, seen = [], [], set()
    for run in find_decouple_runs(root):
        name = _name(run, root)
        settings, metrics = read_json(run / DECOUPLE_FILE), read_json(run / "metrics.json")
        if not isinstance(settings, dict) or not isinstance(metrics, dict):
            notes.append(f"{name}: decouple.json or metrics.json unreadable, skipped")
            continue
        if _damage(metrics):
            notes.append(f"{name}: metrics.json is damaged ({_damage(metrics)}), skipped")
            continue
        first = _stage_one(run, settings, root)
        if first is not None and not _decoupled_checkpoint(first, settings):
            notes.append(
                f"{name}: stage-one run {_name(first, root)} changed since it was decoupled "
                "(trained again?): its joint row is left out"
            )
            first = None
        elif first is None:
            notes.append(f"{name}: stage-one run {settings.get('stage_one')!r} not found")
        group = str(first or settings.get("stage_one"))
        rows.append(_row(name, str(settings.get("method")), metrics, group, run, settings))
        if first is not None and first not in seen:
            seen.add(first)
            joint = read_json(first / "metrics.json")
            if isinstance(joint, dict) and not _damage(joint):
                rows.append(_row(_name(first, root), "joint", joint, group, first, {}))
            else:
                notes.append(f"{_name(first, root)}: metrics.json damaged, no joint row")
    order = {m: i for i, m in enumerate(DECOUPLING_METHODS)}
    rows.sort(
        key=lambda r: (
            str(r["dataset"]), str(r["model"]), r["stage_one"], order.get(r["method"], 99)
        )
    )  # fmt: skip
    return rows, notes


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _published(row: dict[str, Any]) -> tuple[dict[str, float | None] | None, list[str]]:
    """The published numbers of ``row``'s method on its data set, network and epochs (None
    for a later method, or a run whose epochs are not recorded), and how the run departs
    from the recipe of those numbers (then None: they are not shown beside it)."""
    if row["method"] not in DECOUPLING_METHODS or row["epochs"] is None:
        return None, []
    where = (str(row["dataset"]), str(row["model"]), row["method"], row["epochs"])
    if published_decoupling(*where) is None:
        return None, []
    departures = list(row["departures"])
    exact = published_decoupling(*where, pretrained=row["pretrained"])
    if exact is None:
        departures.append(
            "stage one ImageNet-pretrained (the published network was not)"
            if row["pretrained"]
            else "stage one not ImageNet-pretrained (the published network was)"
        )
    return (None, departures) if departures else (exact, [])


def _published_text(dataset: str, model: str, epochs: int) -> str:
    cells = []
    for method in DECOUPLING_METHODS:
        pub = published_decoupling(dataset, model, method, epochs)
        if pub is not None:
            cells.append(f"{method} " + " / ".join(_pct(pub[g]) for g in _GROUPS))
    return "; ".join(cells)


def _sources(rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The source line of each published table of the reported data sets, and a line for
    each of those tables no reported run matches (network and stage-one epochs)."""
    sources, others = [], []
    for dataset in sorted({str(r["dataset"]) for r in rows}):
        ran = {(str(r["model"]).lower(), r["epochs"]) for r in rows if str(r["dataset"]) == dataset}
        for t in decoupling_tables(dataset):
            sources.append(f"- {dataset}, {t['model']}, {t['epochs']} epochs: {t['source']}.")
            if (t["model"], t["epochs"]) not in ran:
                others.append(
                    f"Published for {dataset} with {t['model']}, {t['epochs']} epochs (train "
                    f"stage one with `--model {t['model']} --epochs {t['epochs']}` to compare): "
                    f"{_published_text(dataset, t['model'], t['epochs'])}."
                )
    return sources, others


def decoupling_lines(folder: str | os.PathLike) -> list[str]:
    """The markdown section (empty when ``folder`` holds no decouple run)."""
    rows, notes = decoupling_rows(folder)
    if not rows:
        return []
    sources, others = _sources(rows)
    lines = [
        "## Decoupled classifiers (Kang et al., ICLR 2020)",
        "",
        "Top-1 accuracy % on each run's evaluation split: all / many / medium / few-shot "
        'classes (> 100, 20-100, < 20 training images). Published: Kang et al., "Decoupling '
        'Representation and Classifier for Long-Tailed Recognition", ICLR 2020, shown where '
        "the data set, the network and stage one's epochs match and the run follows the "
        "release's recipe in every setting that changes the result (else: your recipe, its "
        "departing settings listed below; - where the source gives no figure); diff = ours - "
        "published (all classes).",
        "",
        "| run | method | data set | model | epochs | ours: all / many / medium / few "
        "| published | diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ours = " / ".join(_pct(r[g]) for g in _GROUPS)
        pub, departures = _published(r)
        if departures:
            notes.append(
                f"{r['name']}: your recipe, not the release's, so no published number beside "
                f"it: {'; '.join(departures)}"
            )
        pub_text = "-" if pub is None else " / ".join(_pct(pub[g]) for g in _GROUPS)
        pub_text = "your recipe" if departures else pub_text
        diff = "-" if pub is None or r["all"] is None else f"{r['all'] - pub['all']:+.1f}"
        epochs = "-" if r["epochs"] is None else r["epochs"]
        named = " | ".join(md_cell(r[k]) for k in ("name", "method", "dataset", "model"))
        lines.append(f"| {named} | {epochs} | {ours} | {pub_text} | {diff} |")
    lines.append("")
    for other in others:
        lines += [other, ""]
    if sources:
        lines += ["Where the published numbers were read:", "", *sources, ""]
    lines += [f"- {note}" for note in notes] + ([""] if notes else [])
    return lines
