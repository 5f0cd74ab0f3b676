"""``classbalanced tune`` on the built-in digits made long-tailed (IF 20): time and result.

Run from the repository root::

    .venv/bin/python benchmarks/tune_digits.py                       # 12 trials, --jobs 2
    .venv/bin/python benchmarks/tune_digits.py --trials 12 --jobs 2 --out runs/tune_digits
    .venv/bin/python benchmarks/tune_digits.py --more 4              # then --trials 16: +4
    .venv/bin/python benchmarks/tune_digits.py --checks-only --determinism 3 --concurrent 8

The study: a ResNet-8 on scikit-learn's 8x8 digits at imbalance factor 20, 10 epochs per
trial, a validation split of 20 % of the long-tailed training set, and the search
``beta=logit1m(0.9, 0.9999)``, ``gamma=uniform(0, 2)``, ``loss=choice(softmax, sigmoid,
focal)`` on ``val_balanced_accuracy`` (trial 0: softmax with beta = 0, the baseline). The
table gives the wall time, the trials by state, the baseline's and the best trial's
validation balanced accuracy, and the best trial's test accuracy (evaluated once).

``--more N`` re-runs the study with ``--trials`` + N and checks that exactly N trials were
added; ``--determinism K`` runs two fresh studies of K trials with ``--jobs 1`` and checks
that their trials.csv are equal; ``--concurrent N`` runs two ``tune`` processes with
``--trials N`` on one fresh folder and checks that the study has N distinct trials, each
trained once.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE = """dataset = "digits"
imbalance_factor = 20
model = "resnet8"
epochs = 10
eval_every = 2
batch_size = 32
lr = 0.1
pad = 1
flip = false
device = "cpu"
keep_checkpoints = 1
"""
SEARCH = [
    "beta=logit1m(0.9, 0.9999)",
    "gamma=uniform(0, 2)",
    "loss=choice(softmax, sigmoid, focal)",
]


def _command(config: Path, out: Path, trials: int, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "classbalanced", "tune", "--config", str(config)]
    cmd += ["--out", str(out), "--trials", str(trials)]
    return [*cmd, "--val-fraction", "0.2", "--search", *SEARCH, *extra]


def _tune(config: Path, out: Path, trials: int, jobs: int, *extra: str) -> float:
    start = time.monotonic()
    subprocess.run(_command(config, out, trials, "--jobs", str(jobs), *extra), check=True)
    return time.monotonic() - start


def _rows(out: Path) -> list[dict]:
    with open(out / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _summary(out: Path, seconds: float) -> list[tuple[str, str]]:
    rows, best = _rows(out), json.loads((out / "best.json").read_text())
    states = {}
    for row in rows:
        states[row["state"]] = states.get(row["state"], 0) + 1
    return [
        ("trials", ", ".join(f"{n} {s}" for s, n in sorted(states.items()))),
        ("wall time", f"{seconds / 60:.1f} min"),
        ("baseline val balanced acc (softmax, beta 0)", f"{best['baseline']['value']:.4f}"),
        ("best val balanced acc", f"{best['value']:.4f} (trial {best['number']})"),
        (
            "best values",
            ", ".join(
                f"{k} {v:.5g}" if isinstance(v, float) else f"{k} {v}"
                for k, v in best["values"].items()
            ),
        ),
        (
            "best test accuracy / balanced",
            f"{best['test']['accuracy']:.4f} / {best['test']['mean_class_accuracy']:.4f}",
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, help="the study folder (default: a temporary one)")
    parser.add_argument("--more", type=int, default=0, help="re-run with --trials + MORE")
    parser.add_argument("--determinism", type=int, default=0, help="two --jobs 1 studies of K")
    parser.add_argument("--concurrent", type=int, default=0, help="two processes, N trials")
    parser.add_argument("--checks-only", action="store_true", help="run only the checks asked")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tune_digits-"))
    config = work / "base.toml"
    config.write_text(BASE)
    out = args.out or work / "study"
    table = []
    if not args.checks_only:
        table = _summary(out, _tune(config, out, args.trials, args.jobs))
    if args.more:
        before = len(_rows(out))
        _tune(config, out, args.trials + args.more, args.jobs)
        table.append((f"--trials {args.trials + args.more} added", str(len(_rows(out)) - before)))
    if args.determinism:
        a, b = work / "det-a", work / "det-b"
        for folder in (a, b):
            _tune(config, folder, args.determinism, 1)
        same = (a / "trials.csv").read_text() == (b / "trials.csv").read_text()
        table.append((f"--jobs 1 x2, {args.determinism} trials: trials.csv equal", str(same)))
    if args.concurrent:
        folder = work / "concurrent"
        cmd = _command(config, folder, args.concurrent)
        procs = [subprocess.Popen(cmd) for _ in range(2)]
        assert all(p.wait() == 0 for p in procs)
        numbers = [int(r["number"]) for r in _rows(folder)]
        table.append(("two processes: distinct trials", f"{len(set(numbers))} of {len(numbers)}"))
    width = max(len(k) for k, _ in table)
    print(f"\nclassbalanced tune on digits IF 20 ({out})")
    for key, value in table:
        print(f"  {key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
