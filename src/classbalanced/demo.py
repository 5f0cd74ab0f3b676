"""The built-in offline demo: long-tailed digits, softmax against class-balanced focal loss.

scikit-learn's bundled 8x8 digits (no download) are split into a balanced test
set (50 per class) and a training set made long-tailed with imbalance factor
``DEMO_IMBALANCE``. The same small ResNet is trained twice with the same seed:
once with plain softmax cross-entropy, once with the class-balanced focal loss.
A table of mean ± std over seeds and PNG plots end up in the demo folder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from ._console import count
from .config import TrainConfig
from .engine.run_files import read_history
from .engine.trainer import train
from .files import atomic_write_json, atomic_write_text

__all__ = ["run_demo", "DEMO_RUNS", "demo_config"]

DEMO_IMBALANCE = 20.0
DEMO_EPOCHS = 60
#: (run name, loss, beta, gamma)
DEMO_RUNS = (
    ("softmax", "softmax", 0.0, 1.0),
    ("cb_focal", "focal", 0.999, 1.0),
)


def demo_config(
    out: Path, loss: str, beta: float, gamma: float, *, epochs: int, seed: int, progress: bool
) -> TrainConfig:
    """The demo's training config: the paper's recipe scaled to 8x8 digits."""
    return TrainConfig(
        dataset="digits",
        imbalance_factor=DEMO_IMBALANCE,
        model="resnet14",
        loss=loss,
        beta=beta,
        gamma=gamma,
        epochs=epochs,
        batch_size=64,
        pad=1,  # 8x8 images: a 1-pixel shift is the analogue of CIFAR's 4 pixels
        flip=False,  # digits are not mirror-symmetric
        eval_every=max(1, epochs // 10),
        seed=seed,
        device="cpu",
        out=str(out),
        progress=progress,
    )


def _mean_std(values: list[float | None]) -> tuple[float, float] | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    mean = sum(present) / len(present)
    var = sum((v - mean) ** 2 for v in present) / max(len(present) - 1, 1)
    return mean, var**0.5


def _table(results: dict[str, list[dict]]) -> str:
    rows = [
        ("overall accuracy", "accuracy"),
        ("many-shot (>100)", "many_shot_accuracy"),
        ("medium-shot (20-100)", "medium_shot_accuracy"),
        ("few-shot (<20)", "few_shot_accuracy"),
        ("error %", "error_percent"),
    ]
    names = list(results)
    seeds = len(next(iter(results.values())))
    header = [f"{name} (mean ± std, {seeds} seeds)" for name in names]
    lines = ["| metric | " + " | ".join(header) + " |", "|---|" + "---|" * len(names)]
    for label, key in rows:
        cells = []
        for name in names:
            stats = _mean_std([r.get(key) for r in results[name]])
            if stats is None:
                cells.append("-")
            elif key == "error_percent":
                cells.append(f"{stats[0]:.2f} ± {stats[1]:.2f}")
            else:
                cells.append(f"{100 * stats[0]:.1f}% ± {100 * stats[1]:.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _check_out(out: Path) -> None:
    """Refuse an ``out`` that is a file, or a folder holding anything but a finished demo
    (``summary.md``) or the run folders of an interrupted one: the demo's plots, results and
    summary would replace a user's files of those names."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if (out / "summary.md").is_file():
        return
    runs = {f"{name}-s" for name, *_ in DEMO_RUNS}
    foreign = sorted(
        p.name
        for p in out.iterdir()
        if not (p.is_dir() and p.name.rstrip("0123456789") in runs and p.name[-1].isdigit())
    )
    if foreign:
        raise ValueError(
            f"--out {out} is not empty and holds no demo (found {', '.join(foreign[:3])}"
            f"{', ...' if len(foreign) > 3 else ''}): expected a new or empty folder"
        )


def _demo_runs(
    out: Path, epochs: int, seed: int, seeds: int, *, progress: bool, overwrite: bool
) -> list[tuple[str, int, TrainConfig]]:
    """``(name, seed, config)`` of every demo run, every config checked before any trains."""
    runs = []
    for name, loss, beta, gamma in DEMO_RUNS:
        for s in range(seed, seed + seeds):
            cfg = demo_config(
                out / f"{name}-s{s}", loss, beta, gamma, epochs=epochs, seed=s, progress=progress
            )
            runs.append((name, s, dataclasses.replace(cfg, overwrite=overwrite)))
    for *_, cfg in runs:
        cfg.resolved()
    return runs


def run_demo(
    out: str | Path = "runs/demo",
    *,
    epochs: int | None = None,
    seed: int = 0,
    seeds: int = 3,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, list[dict]]:
    """Train every demo run for ``seeds`` seeds into ``out/<name>-s<seed>``, print the
    comparison (mean ± std over seeds), write plots."""
    from . import plots  # plotting

    out = Path(out)
    epochs = DEMO_EPOCHS if epochs is None else epochs
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer, got {seeds!r}")
    summary = out / "summary.md"
    _check_out(out)
    if summary.exists() and not overwrite:
        raise ValueError(
            f"{out} already holds a demo: pass --overwrite to run it again, or choose another --out"
        )
    runs = _demo_runs(out, epochs, seed, seeds, progress=progress, overwrite=overwrite)
    results: dict[str, list[dict]] = {}
    for name, s, cfg in runs:
        log(f"--- {name}, seed {s}: loss={cfg.loss} beta={cfg.beta} gamma={cfg.gamma}")
        results.setdefault(name, []).append(train(cfg, log=log))
    counts = results[DEMO_RUNS[0][0]][0]["train_counts"]
    table = _table(results)
    log("\n" + table)
    plots.plot_class_distribution(
        out / "class_distribution.png", counts, title=f"long-tailed digits (IF {DEMO_IMBALANCE:g})"
    )
    plots.plot_effective_number(out / "effective_number.png", max_samples=max(counts))
    per_class = {
        name: [
            sum(
                0.0 if r["per_class_accuracy"][c] is None else r["per_class_accuracy"][c]
                for r in runs
            )
            / len(runs)
            for c in range(len(counts))
        ]
        for name, runs in results.items()
    }
    plots.plot_per_class_accuracy(out / "per_class_accuracy.png", per_class, counts=counts)
    curves = {}
    for name in results:
        hist = read_history(out / f"{name}-s{seed}")
        curves[f"{name} (seed {seed})"] = (
            [h["epoch"] for h in hist],
            [h["error_percent"] for h in hist],
        )
    if all(len(c[0]) >= 2 for c in curves.values()):
        plots.plot_error_curves(out / "error_curves.png", curves)
    atomic_write_text(
        summary,
        f"# classbalanced demo (digits, IF {DEMO_IMBALANCE:g}, {count(epochs, 'epoch')}, seeds {seed}-{seed + seeds - 1})\n\n{table}\n",
    )
    atomic_write_json(out / "results.json", results)
    log(f"\nplots and runs written to {out}/")
    return results
