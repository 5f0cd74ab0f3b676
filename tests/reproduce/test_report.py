"""report.md: mean ± std over seeds of the LAST-epoch error, published numbers, diffs."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import tomllib
from reproduce_helpers import quiet

from classbalanced import presets
from classbalanced.cli import main
from classbalanced.config import config_from_sources
from classbalanced.launch.sweep import run_sweep
from classbalanced.reproduce.report import build_report, write_report
from classbalanced.reproduce.results import load_results
from classbalanced.reproduce.sweep import parse_sweep

# final errors per run, chosen by hand; seeds 0, 1, 2
SOFTMAX = [30.0, 31.0, 35.0]
FOCAL_G1 = [33.0, 34.0, 38.0]
CB_0999 = [27.0, 28.0, 29.0]
CB_09999 = [25.0, 26.0, 24.5]


def _spec(epochs: int = 200):
    return parse_sweep(
        {
            "sweep": {"name": "math"},
            "base": {"dataset": "cifar10", "imbalance_factor": 100, "epochs": epochs},
            "grid": [
                {"loss": ["softmax", "sigmoid"], "beta": [0.0], "seed": [0, 1, 2]},
                {
                    "loss": ["focal"],
                    "beta": [0.0, 0.999, 0.9999],
                    "gamma": [1.0],
                    "seed": [0, 1, 2],
                },
            ],
        }
    )


def _errors():
    errors = {}
    for seed in range(3):
        errors[f"cifar10-if100-softmax-b0.0-s{seed}"] = SOFTMAX[seed]
        errors[f"cifar10-if100-focal-b0.0-g1.0-s{seed}"] = FOCAL_G1[seed]
        errors[f"cifar10-if100-focal-b0.999-g1.0-s{seed}"] = CB_0999[seed]
        errors[f"cifar10-if100-focal-b0.9999-g1.0-s{seed}"] = CB_09999[seed]
        errors[f"cifar10-if100-sigmoid-b0.0-s{seed}"] = "classbalanced: error: no"
    return errors


def _stats(values):
    """Mean and sample std, computed by hand."""
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return mean, std


def _row(report: str, label: str) -> list[str]:
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == label and len(cells) == 5:
            return cells
    raise AssertionError(f"no row {label!r} in the report")


def test_report_math(tmp_path, fake_launcher):
    fake_launcher(_errors())
    result = run_sweep(_spec(), out=tmp_path, log=quiet)
    assert result.exit_code == 1  # the sigmoid runs failed
    report = (tmp_path / "report.md").read_text()

    mean, std = _stats(SOFTMAX)
    assert (round(mean, 2), round(std, 2)) == (32.0, 2.65)
    assert _row(report, "Softmax") == [
        "Softmax",
        "softmax, β=0",
        f"{mean:.2f} ± {std:.2f} (3 seeds)",
        "29.64",
        f"{mean - 29.64:+.2f}",
    ]
    mean, std = _stats(FOCAL_G1)
    assert _row(report, "Focal γ=1")[2:] == [
        f"{mean:.2f} ± {std:.2f} (3 seeds)",
        "29.62",
        f"{mean - 29.62:+.2f}",
    ]
    assert _row(report, "Focal γ=0.5")[2:] == ["-", "29.77", "-"]
    assert _row(report, "Sigmoid")[2:] == ["-", "29.55", "-"]  # failed runs count as missing
    # best of grid: beta 0.9999 (mean 25.17) beats 0.999 (mean 28); published best 25.43
    mean, std = _stats(CB_09999)
    best = _row(report, "Class-balanced (best of grid)")
    assert best == [
        "Class-balanced (best of grid)",
        "focal, β=0.9999, γ=1",
        f"{mean:.2f} ± {std:.2f} (3 seeds)",
        "25.43",
        f"{mean - 25.43:+.2f}",
    ]
    assert best[4] == "-0.26"
    # the paper's setting for CIFAR-10 IF 100 is focal, beta 0.9999, gamma 1: the same runs
    assert _row(report, "Class-balanced (paper's setting)")[1:] == best[1:]
    # balanced accuracy, macro-F1 and ECE: means over the cell's seeds (write_run's
    # 0.9 - e/100, 0.8 - e/100, e/1000); a cell without a finished run has no row
    mean = sum(SOFTMAX) / 3
    expected = f"| Softmax | {0.9 - mean / 100:.4f} | {0.8 - mean / 100:.4f} | {mean / 1000:.4f} |"
    assert expected in report.splitlines()
    assert not any(
        line.startswith("| Sigmoid | ") and line.count("|") == 5 for line in report.splitlines()
    )
    assert "**Epochs run: 200**" in report
    assert "NOT the paper's protocol" not in report
    assert "LDAM-DRW 22.97" in report
    figures = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert figures == ["cifar10-if100-error-curves.png", "cifar10-if100-focal-heatmap.png"]
    rows = load_results(tmp_path / "results.csv")
    assert len(rows) == 15 and sum(r["status"] == "failed" for r in rows) == 3


def test_unfinished_runs_are_not_counted_and_short_runs_are_flagged(tmp_path, fake_launcher):
    errors = _errors()
    fake_launcher(errors)
    run_sweep(_spec(epochs=4), out=tmp_path, log=quiet)
    # an unfinished run (last evaluation at epoch 2 of 4) must not count
    csv_path = tmp_path / "results.csv"
    text = (
        csv_path.read_text()
        .replace(",4,30.0,", ",4,99.0,")
        .replace(",4,finished", ",2,incomplete", 1)
    )
    first = [line for line in text.splitlines() if "softmax-b0.0-s0" in line][0]
    assert first.endswith(",2,incomplete") and ",99.0," in first
    csv_path.write_text(text)
    path = write_report(tmp_path)
    report = path.read_text()
    mean, std = _stats(SOFTMAX[1:])
    assert _row(report, "Softmax")[2] == f"{mean:.2f} ± {std:.2f} (2 seeds)"
    assert "**Epochs run: 4**" in report
    assert "runs shorter than 200 epochs are NOT the paper's protocol" in report
    assert "cifar10-if100-softmax-b0.0-s0: incomplete" in report


def test_single_seed_and_unpublished_dataset(tmp_path, fake_launcher):
    spec = parse_sweep(
        {
            "base": {"dataset": "digits", "imbalance_factor": 10, "epochs": 2},
            "grid": {"loss": ["softmax"]},
        }
    )
    fake_launcher({"digits-if10-softmax-b0.0-s0": 61.25})
    run_sweep(spec, out=tmp_path, log=quiet)
    report = (tmp_path / "report.md").read_text()
    assert _row(report, "Softmax")[2:] == ["61.25 (1 seed)", "-", "-"]
    assert _row(report, "Class-balanced (paper's setting)")[2:] == ["-", "-", "-"]
    # nothing to compare with: no 200-epoch warning about the published numbers, a note
    assert "NOT the paper's protocol" not in report
    assert "No published numbers for digits (Table 2 has CIFAR only)." in report


def test_report_cli_and_refresh(tmp_path, fake_launcher, capsys):
    fake_launcher(_errors())
    run_sweep(_spec(), out=tmp_path, log=quiet, report=False)
    assert not (tmp_path / "report.md").exists()
    (tmp_path / "results.csv").unlink()
    assert main(["report", str(tmp_path)]) == 2
    assert "no results.csv" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--refresh", "--no-figures"]) == 0
    report = (tmp_path / "report.md").read_text()
    assert re.search(
        r"\| Softmax \| softmax, β=0 \| 32\.00 ± 2\.65 \(3 seeds\) \| 29\.64 \| \+2\.36 \|", report
    )
    assert not (tmp_path / "figures").exists()
    with pytest.raises(FileNotFoundError, match="sweep folder not found"):
        write_report(tmp_path / "nope")


def test_large_scale_runs_are_reported_against_table3(tmp_path, fake_launcher):
    spec = parse_sweep(
        {
            "sweep": {"name": "inat"},
            "base": _preset_values("inat2018_softmax"),  # Table 3's recipe
            "grid": [
                {"loss": ["softmax"], "beta": [0.0], "seed": [0, 1]},
                {"loss": ["focal"], "beta": [0.999], "gamma": [0.5], "seed": [0, 1]},
            ],
        }
    )
    fake_launcher(
        {
            "inat2018-if1-softmax-b0.0-s0": 44.0,
            "inat2018-if1-softmax-b0.0-s1": 46.0,
            "inat2018-if1-focal-b0.999-g0.5-s0": 40.0,
            "inat2018-if1-focal-b0.999-g0.5-s1": 41.0,
        }
    )
    run_sweep(spec, out=tmp_path, log=quiet)
    report = (tmp_path / "report.md").read_text()
    assert "Table 3: ResNet-50, 90 epochs" in report
    assert "Table 2" not in report and "NOT the paper's protocol" not in report
    assert "Warning" not in report  # 90 epochs is Table 3's protocol
    lines = [line for line in report.splitlines() if line.startswith("| inat2018 |")]
    softmax, cb = ([c.strip() for c in line.split("|")[1:-1]] for line in lines)
    # top-1: mean ± std of 44, 46 against 42.86; top-5 (the fake writes error / 4)
    assert softmax[1:] == [
        "Softmax",
        "softmax, β=0",
        "45.00 ± 1.41 (2 seeds)",
        "42.86",
        "+2.14",
        "11.25 ± 0.35 (2 seeds)",
        "21.31",
        "-10.06",
    ]
    assert cb[1:6] == [
        "Class-balanced (paper's setting)",
        "focal, β=0.999, γ=0.5",
        "40.50 ± 0.71 (2 seeds)",
        "38.88",
        "+1.62",
    ]


def _csv_row(**values):
    """One row as load_results gives it (a finished run; the keys of results.csv)."""
    row = dict.fromkeys(("name", "run_dir", "top5_error_percent", "accuracy"))
    row.update(dataset="cifar10", imbalance_factor=100.0, model="resnet32", loss="softmax")
    row.update(beta=0.0, gamma=None, seed=0, epochs=200, epoch=200, status="finished")
    row.update(dict.fromkeys(("many_shot_accuracy", "medium_shot_accuracy")))
    row.update(few_shot_accuracy=None, error_percent=30.0)
    row.update(values)
    row["name"] = row["name"] or f"{row['model']}-{row['epochs']}-s{row['seed']}"
    return row


def test_table3_does_not_average_other_networks_or_schedules_together(tmp_path):
    """A ResNet-152 and a 10-epoch run used to join the ResNet-50 ones in one '3 seeds' cell."""
    base = {"dataset": "inat2018", "imbalance_factor": 1.0, "top5_error_percent": 20.0}
    rows = [
        _csv_row(**base, model="resnet50", epochs=90, epoch=90, seed=0, error_percent=44.0),
        _csv_row(**base, model="resnet50", epochs=90, epoch=90, seed=1, error_percent=46.0),
        _csv_row(**base, model="resnet152", epochs=90, epoch=90, seed=0, error_percent=30.0),
        _csv_row(**base, model="resnet50", epochs=10, epoch=10, seed=0, error_percent=70.0),
    ]
    report = build_report(tmp_path, rows, figures=False)
    softmax = {}
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 9 and cells[1] == "Softmax":
            softmax[cells[0]] = cells[3]
    mean, std = _stats([44.0, 46.0])
    assert softmax == {
        "inat2018, model resnet50, epochs 90": f"{mean:.2f} ± {std:.2f} (2 seeds)",
        "inat2018, model resnet152, epochs 90": "30.00 (1 seed)",
        "inat2018, model resnet50, epochs 10": "70.00 (1 seed)",
    }


def test_a_run_with_a_nan_error_is_not_counted_and_is_named(tmp_path):
    """(A NaN error in results.csv ended the report in a traceback of statistics.stdev, and
    a NaN group, listed first, stayed the 'best of grid': nothing compares below NaN.)"""
    nan = float("nan")
    rows = [
        _csv_row(loss="focal", beta=0.999, gamma=1.0, seed=0, error_percent=nan, name="bad"),
        _csv_row(loss="focal", beta=0.999, gamma=1.0, seed=1, error_percent=20.0),
        _csv_row(loss="focal", beta=0.9999, gamma=1.0, seed=0, error_percent=25.0),
        _csv_row(loss="softmax", seed=0, error_percent=31.0),
        _csv_row(loss="softmax", seed=1, error_percent=33.0),
    ]
    report = build_report(tmp_path, rows, figures=False)
    assert "nan" not in _row(report, "Class-balanced (best of grid)")[2]
    assert _row(report, "Class-balanced (best of grid)")[1:3] == [
        "focal, β=0.999, γ=1",
        "20.00 (1 seed)",
    ]
    assert _row(report, "Softmax")[2] == f"32.00 ± {_stats([31.0, 33.0])[1]:.2f} (2 seeds)"
    assert "- bad: finished, but its error_percent is nan" in report
    large = {"dataset": "inat2018", "imbalance_factor": 1.0, "epochs": 90, "epoch": 90}
    rows = [
        _csv_row(**large, seed=0, error_percent=nan, top5_error_percent=nan),
        _csv_row(**large, seed=1, error_percent=40.0, top5_error_percent=nan),
        _csv_row(**large, seed=2, error_percent=42.0, top5_error_percent=20.0),
    ]
    line = next(x for x in build_report(tmp_path, rows).splitlines() if "| Softmax |" in x)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3] == f"41.00 ± {_stats([40.0, 42.0])[1]:.2f} (2 seeds)"
    assert cells[6] == "20.00 (1 seed)"


def _table_rows(report: str) -> list[list[str]]:
    """The rows of every markdown table, split on unescaped pipes."""
    return [
        [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
        for line in report.splitlines()
        if line.startswith("|")
    ]


def test_a_pipe_or_line_break_in_a_value_does_not_break_the_tables(tmp_path):
    """(A varied value holding '|' added a column to the summary table and each row.)"""
    rows = [
        _csv_row(data_dir="/data/a|b", seed=0, error_percent=31.0),
        _csv_row(data_dir="/data/c\nd", seed=0, error_percent=33.0),
        _csv_row(dataset="inat2018", data_dir="/x|y", epochs=90, epoch=90),
        _csv_row(dataset="inat2018", data_dir="/z", epochs=90, epoch=90),
    ]
    report = build_report(tmp_path, rows, figures=False)
    tables = _table_rows(report)
    header = next(t for t in tables if t[0] == "method" and t[1].startswith("cifar10"))
    assert header[1:] == [
        r"cifar10, IF 100, data_dir /data/a\|b",
        "cifar10, IF 100, data_dir /data/c d",
    ]
    widths = {len(t) for t in tables if t[0] in ("method", "Softmax")}
    # the summary's (method + 2 columns), each column's own table (5) and its table of
    # balanced accuracy, macro-F1 and ECE (method + 3)
    assert widths == {3, 4, 5}
    large = [t for t in tables if t[0].startswith("inat2018")]
    assert [t[0] for t in large if t[1] == "Softmax"] == [
        r"inat2018, data_dir /x\|y",
        "inat2018, data_dir /z",
    ]
    assert {len(t) for t in large} == {9}


def _preset_values(name: str) -> dict:
    """A preset's settings (its recipe), less those a sweep's grid sets itself."""
    values = tomllib.loads(presets.find_config(name).read_text(encoding="utf-8"))
    return {k: v for k, v in values.items() if k not in ("loss", "beta", "gamma")}


def _recipe_run(root: Path, name: str, preset: str, **changed) -> str:
    """A run folder holding the config.json a run of ``preset`` (changed by ``changed``)
    saves; returns its run_dir relative to ``root``."""
    cfg = config_from_sources(preset, overrides=changed).resolved()
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "config.json").write_text(json.dumps(cfg.to_dict()))
    return name


def test_table3_compares_only_the_full_training_set(tmp_path):
    """Table 3 is for the official iNaturalist / ImageNet training sets (IF 1 keeps them
    whole) and shuffled batches: a sub-sampled set (IF 10) was averaged with them and
    compared with it too, and so was a run with the class-balanced sampler."""
    base = {"dataset": "inat2018", "model": "resnet50", "epochs": 90, "epoch": 90}
    base.update(sampler="shuffle", reweight_schedule="constant", top5_error_percent=20.0)
    rows = [
        _csv_row(**base, imbalance_factor=1.0, error_percent=44.0),
        _csv_row(**{**base, "top5_error_percent": 30.0}, imbalance_factor=10.0, error_percent=60.0),
        _csv_row(**{**base, "sampler": "class_balanced"}, imbalance_factor=1.0, error_percent=40.0),
    ]
    for i, row in enumerate(rows):
        changed = {"imbalance_factor": row["imbalance_factor"], "sampler": row["sampler"]}
        row["run_dir"] = _recipe_run(tmp_path, f"r{i}", "inat2018_softmax", **changed)
    softmax = {}
    for line in build_report(tmp_path, rows, figures=False).splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 9 and cells[1] == "Softmax":
            softmax[cells[0]] = cells[3:]
    assert softmax == {
        "inat2018, IF 1, sampler shuffle": [
            "44.00 (1 seed)", "42.86", "+1.14", "20.00 (1 seed)", "21.31", "-1.31",
        ],
        "inat2018, IF 1, sampler class_balanced (sampler class_balanced: not the paper's "
        "setting)": ["40.00 (1 seed)", "-", "-", "20.00 (1 seed)", "-", "-"],
        "inat2018, IF 10, sampler shuffle": ["60.00 (1 seed)", "-", "-", "30.00 (1 seed)", "-", "-"],
    }  # fmt: skip


def _published_cells(report: str, label: str) -> dict[str, str]:
    """Section title -> the published cell of row ``label`` in that column's table."""
    found = {}
    for section in report.split("\n## ")[1:]:
        rows = [r for r in _table_rows(section) if r[0] == label and len(r) == 5]
        if rows:
            found[section.splitlines()[0]] = rows[0][3]
    return found


def test_table2_numbers_only_beside_the_papers_sampling_and_weighting(tmp_path, fake_launcher):
    """Table 2's runs draw shuffled batches with constant class-balanced weights: a run with
    the class-balanced sampler (or deferred re-weighting) was shown beside them as 'Softmax'
    and diffed, whether the sweep varied the setting or fixed it for all its runs."""
    fake_launcher(default=20.0)
    grid = {"loss": ["softmax"], "sampler": ["shuffle", "class_balanced"]}
    spec = {"base": {"dataset": "cifar10", "imbalance_factor": 100}, "grid": grid}
    run_sweep(parse_sweep(spec), out=tmp_path / "varied", log=quiet)
    report = (tmp_path / "varied" / "report.md").read_text(encoding="utf-8")
    assert _published_cells(report, "Softmax") == {
        "cifar10, IF 100, sampler shuffle": "29.64",
        "cifar10, IF 100, sampler class_balanced": "-",
    }
    assert "are not the paper's setting (sampler class_balanced)" in report
    spec["base"]["sampler"], spec["grid"] = "class_balanced", {"loss": ["softmax"]}
    run_sweep(parse_sweep(spec), out=tmp_path / "fixed", log=quiet)
    report = (tmp_path / "fixed" / "report.md").read_text(encoding="utf-8")
    assert _published_cells(report, "Softmax") == {"cifar10, IF 100": "-"}
    assert load_results(tmp_path / "fixed" / "results.csv")[0]["sampler"] == "class_balanced"


def test_runs_of_table3_not_counted_are_named_too(tmp_path):
    """(Only the CIFAR part listed its failed / missing runs: a Table 3 sweep's cells went
    '-' without a word on which runs were missing.)"""
    base = {"dataset": "inat2018", "imbalance_factor": 1.0, "epochs": 90}
    rows = [
        _csv_row(**base, name="inat-s0", epoch=90),
        _csv_row(**base, name="inat-s1", status="failed", error_percent=None, epoch=None),
        _csv_row(name="cifar-s0", status="missing", error_percent=None, epoch=None),
    ]
    report = build_report(tmp_path, rows, figures=False)
    section = report[report.index("## Runs not counted") :]
    assert "- inat-s1: failed" in section and "- cifar-s0: missing" in section
    assert report.count("## Runs not counted") == 1 and "inat-s0" not in section


def test_a_refused_report_writes_nothing(tmp_path, fake_launcher, capsys):
    """A user's report.md (or a folder of that name) is refused before anything is written:
    the figures and, with --refresh, results.csv used to be written first."""
    fake_launcher(_errors())
    run_sweep(_spec(), out=tmp_path, log=quiet, report=False)
    csv_text = (tmp_path / "results.csv").read_text(encoding="utf-8")
    (tmp_path / "results.csv").write_text(csv_text.replace("finished", "incomplete"))
    before = (tmp_path / "results.csv").read_bytes()
    (tmp_path / "report.md").write_text("# my notes\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"report.md exists and is not a report of classbalanced"):
        write_report(tmp_path, refresh=True)
    assert (tmp_path / "report.md").read_text(encoding="utf-8") == "# my notes\n"
    assert not (tmp_path / "figures").exists()
    assert (tmp_path / "results.csv").read_bytes() == before
    (tmp_path / "report.md").unlink()
    (tmp_path / "report.md").mkdir()
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "report.md is a folder: expected a file path" in err and ".tmp" not in err
    assert not (tmp_path / "figures").exists()


def test_best_of_grid_is_chosen_among_the_papers_losses(tmp_path):
    """The published 'class-balanced (best)' is the best of softmax / sigmoid / focal with
    beta > 0: an LDAM run with beta > 0 in the sweep was taken as the class-balanced best."""
    rows = [
        _csv_row(loss="softmax", error_percent=30.0),
        _csv_row(loss="focal", beta=0.9999, gamma=1.0, error_percent=26.0),
        _csv_row(loss="ldam", beta=0.9999, error_percent=20.0),
    ]
    best = _row(build_report(tmp_path, rows, figures=False), "Class-balanced (best of grid)")
    assert best[1:3] == ["focal, β=0.9999, γ=1", "26.00 (1 seed)"]


RECIPE_CHANGES = {  # one departing value per setting a Table 2 / 3 recipe fixes
    "model": "resnet20", "epochs": 100, "batch_size": 256, "lr": 0.2, "momentum": 0.8,
    "nesterov": None, "weight_decay": 5e-4, "no_decay_bias_and_norm": None,
    "lr_schedule": None, "warmup_epochs": 0, "decay_epochs": None, "decay_factors": None,
    "image_size": 320, "sampler": "class_balanced", "reweight_schedule": None,
}  # fmt: skip


@pytest.mark.parametrize(
    ("preset", "dataset", "factor", "published"),
    [("cifar10_lt_cb", "cifar10", 100.0, "29.64"), ("inat2018_softmax", "inat2018", 1.0, "42.86")],
)
def test_each_departure_from_the_table_s_recipe_removes_the_published_number(
    tmp_path, preset, dataset, factor, published
):
    """A run of the preset's recipe is compared with Table 2 / 3; the same run with one
    setting changed is not, and the report names that setting."""
    from classbalanced.reproduce.report import RECIPE_KEYS, recipe_departures

    cfg = config_from_sources(preset).resolved()

    def report_for(changed: dict, key: str | None = None) -> str:
        run_dir = _recipe_run(tmp_path, "run", preset, **changed)
        row = _csv_row(dataset=dataset, imbalance_factor=factor, run_dir=run_dir, epochs=cfg.epochs)
        row.update(loss="softmax", beta=0.0, model=cfg.model, epoch=cfg.epochs)
        resolved = config_from_sources(preset, overrides=changed).resolved()
        differ = [k for k in keys if getattr(resolved, k) != getattr(cfg, k)]
        assert (key is None and not differ) or key in differ  # the change took
        assert recipe_departures(tmp_path, row) == [f"{k} {getattr(resolved, k)}" for k in differ]
        return build_report(tmp_path, [row], figures=False)

    def softmax_published(report: str) -> str:
        for line in report.splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if "Softmax" in cells and len(cells) > cells.index("Softmax") + 3:  # not the summary
                return cells[cells.index("Softmax") + 3]
        raise AssertionError("no Softmax row")

    keys = [k for k in RECIPE_KEYS if not (dataset == "cifar10" and k == "image_size")]
    assert softmax_published(report_for({})) == published
    for key in keys:
        value = RECIPE_CHANGES[key]
        if value is None:  # a flag or a list: its other value
            value = {
                "nesterov": not cfg.nesterov,
                "no_decay_bias_and_norm": not cfg.no_decay_bias_and_norm,
                "lr_schedule": "cosine",
                "decay_epochs": [e - 1 for e in cfg.decay_epochs],
                "decay_factors": [f / 2 for f in cfg.decay_factors],
                "reweight_schedule": "drw",
            }[key]
        changed = {key: value}
        if key == "lr_schedule":
            changed.update(decay_epochs=[], decay_factors=[])
        if key == "reweight_schedule":
            changed.update(beta=0.999)
        if key == "batch_size":  # the lr kept (the CIFAR preset scales it with the batch)
            changed.update(lr=cfg.lr)
        if key == "epochs":  # longer, the schedule kept
            changed.update(
                epochs=cfg.epochs + 10,
                decay_epochs=cfg.decay_epochs,
                warmup_epochs=cfg.warmup_epochs,
            )
        report = report_for(changed, key)
        assert softmax_published(report) == "-", key
        assert (
            f"{key} {getattr(config_from_sources(preset, overrides=changed).resolved(), key)}"
            in report
        )
