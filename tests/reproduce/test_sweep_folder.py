"""A sweep folder belongs to one sweep file; --extend; --dry-run tells the truth; --status."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from launch_helpers import process_env, sweep_command, sweep_toml
from reproduce_helpers import write_run

from classbalanced.cli import main
from classbalanced.launch.claims import release, try_claim
from classbalanced.launch.local import LocalLauncher
from classbalanced.launch.sweep import run_sweep, sweep_status
from classbalanced.reproduce.sweep import load_sweep, parse_sweep, plan_sweep, write_plan


def _file(tmp_path, name="tiny.toml", epochs=2, seeds=(0,)):
    path = tmp_path / name
    path.write_text(sweep_toml("tiny", list(seeds), epochs), encoding="utf-8")
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _quiet(_):
    pass


def test_a_changed_sweep_file_is_refused_and_nothing_changes(tmp_path, fake_launcher, capsys):
    fake_launcher()
    out = tmp_path / "out"
    run_sweep(_file(tmp_path), out=out, log=_quiet)
    before = _snapshot(out)
    changed = _file(tmp_path, "changed.toml", epochs=3)
    for dry_run in (True, False):
        with pytest.raises(ValueError, match=r"changes 2 of its runs: .*epochs 2 -> 3"):
            run_sweep(changed, out=out, dry_run=dry_run, log=_quiet)
    with pytest.raises(ValueError, match="changes"):  # --extend never changes a run either
        run_sweep(changed, out=out, extend=True, log=_quiet)
    assert main(["sweep", "--config", str(changed), "--out", str(out), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "belongs to the sweep file" in err[0] and "epochs 2 -> 3" in err[0]
    assert _snapshot(out) == before


@pytest.mark.parametrize("held", ["results.csv", "report.md", "runs/x/metrics.json", "sweep.toml"])
def test_a_folder_that_is_no_sweep_folder_is_refused(tmp_path, no_launch, held):
    """A user's file where the sweep would write, or a run folder of unknown origin, is
    refused before anything is written (dry run too)."""
    out = tmp_path / "mine"
    (out / held).parent.mkdir(parents=True, exist_ok=True)
    (out / held).write_text("precious\n")
    for dry_run in (True, False):
        with pytest.raises(ValueError, match=r"holds .* but no plan.json: it is not a sweep"):
            run_sweep(_file(tmp_path), out=out, dry_run=dry_run, log=_quiet)
    assert _snapshot(out) == {held: b"precious\n"}


def test_an_empty_folder_or_an_interrupted_start_is_a_sweep_folder(tmp_path, fake_launcher):
    fake_launcher()
    sweep = _file(tmp_path)
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)  # a start stopped before plan.json was written
    (out / "sweep.toml").write_text(sweep.read_text())
    assert run_sweep(sweep, out=out, log=_quiet).exit_code == 0
    assert (out / "plan.json").is_file() and not (out / "sweep-extend-0.toml").exists()


def test_added_runs_need_extend_and_are_merged(tmp_path, fake_launcher, capsys):
    launcher = fake_launcher()
    out = tmp_path / "out"
    first = _file(tmp_path)
    run_sweep(first, out=out, log=_quiet)
    assert len(launcher.calls) == 2
    before = _snapshot(out)
    grown = _file(tmp_path, "grown.toml", seeds=(0, 1))
    with pytest.raises(ValueError, match=r"adds 2 run\(s\) .*--extend"):
        run_sweep(grown, out=out, dry_run=True, log=_quiet)
    with pytest.raises(ValueError, match="--extend"):
        run_sweep(grown, out=out, log=_quiet)
    assert _snapshot(out) == before
    # the dry run with --extend says what the real run does
    run_sweep(grown, out=out, dry_run=True, extend=True, log=_quiet)
    printed = capsys.readouterr().out
    assert "2 finished, 0 to resume, 2 new; adds 2 run(s)" in printed
    result = run_sweep(grown, out=out, extend=True, log=_quiet)
    assert sorted(result.started) == [
        "digits-if10-focal-b0.0-g1.0-s1",
        "digits-if10-softmax-b0.0-s1",
    ]
    assert len(launcher.calls) == 4
    plan = json.loads((out / "plan.json").read_text())
    assert len(plan["runs"]) == 4 and plan["sources"] == [str(first), str(grown)]
    assert (out / "sweep.toml").read_bytes() == first.read_bytes()
    assert (out / "sweep-extend-1.toml").read_bytes() == grown.read_bytes()
    # the original file is still one of the folder's: accepted, nothing to do
    assert run_sweep(first, out=out, log=_quiet).skipped == [
        "digits-if10-softmax-b0.0-s0",
        "digits-if10-focal-b0.0-g1.0-s0",
    ]


def test_two_extends_at_once_both_keep_their_runs(tmp_path, fake_launcher):
    """Two sweeps read the folder's plan before either writes it (started at once): the
    second write must not drop the runs the first added, nor reuse its extend file."""
    fake_launcher()
    out = tmp_path / "out"
    first = _file(tmp_path)
    run_sweep(first, out=out, log=_quiet)
    one, two = (
        _file(tmp_path, "one.toml", seeds=(0, 1)),
        _file(tmp_path, "two.toml", seeds=(0, 2)),
    )
    plans = [plan_sweep(load_sweep(f), out, extend=True) for f in (one, two)]  # both read now
    written = [write_plan(p) for p in plans]
    assert written[1].added == ["digits-if10-softmax-b0.0-s2", "digits-if10-focal-b0.0-g1.0-s2"]
    plan = json.loads((out / "plan.json").read_text())
    assert sorted(e["name"][-2:] for e in plan["runs"]) == ["s0", "s0", "s1", "s1", "s2", "s2"]
    assert plan["sources"] == [str(first), str(one), str(two)]
    assert (out / "sweep-extend-1.toml").read_bytes() == one.read_bytes()
    assert (out / "sweep-extend-2.toml").read_bytes() == two.read_bytes()
    # a sweep without --extend that planned before another's plan existed is refused
    fresh = tmp_path / "fresh"
    late = plan_sweep(load_sweep(two), fresh)
    write_plan(plan_sweep(load_sweep(one), fresh))
    with pytest.raises(ValueError, match="--extend"):
        write_plan(late)


def test_an_added_run_whose_name_a_kept_run_holds_gets_its_own(tmp_path, fake_launcher):
    """The folder's lr 0.05 run is named without lr (it was the base); a file that keeps it
    and adds lr 0.1 (the default, also named without lr) adds a run, it changes none."""
    launcher = fake_launcher()
    out, base = tmp_path / "out", {"dataset": "digits", "epochs": 1}
    first = {"base": {**base, "lr": 0.05}, "grid": {"lr": [0.05, 0.2]}}
    run_sweep(parse_sweep(first), out=out, log=_quiet)
    grown = parse_sweep({"base": base, "grid": {"lr": [0.05, 0.2, 0.1]}})
    result = run_sweep(grown, out=out, extend=True, log=_quiet)
    names = ["digits-if1-softmax-b0.0-s0", "digits-if1-softmax-b0.0-lr_0.2-s0"]
    names.append("digits-if1-softmax-b0.0-lr_0.1-s0")
    assert [r.name for r in result.runs] == names
    assert [c["name"] for c in launcher.calls] == [*names[:2], names[2]]  # the new one alone
    lrs = [json.loads((out / "runs" / n / "config.json").read_text())["lr"] for n in names]
    assert lrs == [0.05, 0.2, 0.1]


def test_the_plan_keeps_its_names(tmp_path, fake_launcher):
    """A run whose config equals one of the plan's keeps the plan's name (folders made
    with another naming rule are never retrained)."""
    fake_launcher()
    out = tmp_path / "out"
    run_sweep(_file(tmp_path), out=out, log=_quiet)
    plan = json.loads((out / "plan.json").read_text())
    old = plan["runs"][0]["name"]
    plan["runs"][0]["name"] = "renamed"
    plan["runs"][0]["run_dir"] = "runs/renamed"
    (out / "plan.json").write_text(json.dumps(plan))
    (out / "runs" / old).rename(out / "runs" / "renamed")
    result = run_sweep(_file(tmp_path), out=out, log=_quiet)
    assert "renamed" in result.skipped and not result.started


def test_status_and_dry_run_show_claims_and_failures(tmp_path, fake_launcher, capsys):
    fake_launcher({"digits-if10-focal-b0.0-g1.0-s1": "classbalanced: error: boom"})
    out = tmp_path / "out"
    assert run_sweep(_file(tmp_path, seeds=(0, 1)), out=out, log=_quiet).exit_code == 1
    # a run that another launcher holds right now, one whose holder died, one not started
    for name in ("digits-if10-softmax-b0.0-s1", "digits-if10-focal-b0.0-g1.0-s0"):
        (out / "runs" / name / "metrics.json").unlink()
    try_claim(out / "runs" / "digits-if10-softmax-b0.0-s1.claim", "other")
    dead = try_claim(out / "runs" / "digits-if10-focal-b0.0-g1.0-s0.claim", "dead")
    os.utime(dead.path, (time.time() - 500, time.time() - 500))
    lines = sweep_status(out)
    assert lines[0].startswith("done     digits-if10-softmax-b0.0-s0: error 50.0%")
    assert lines[1].startswith("running  digits-if10-softmax-b0.0-s1: on ")
    assert "since" in lines[1] and f"(pid {os.getpid()})" in lines[1]
    assert lines[2].startswith("stalled  digits-if10-focal-b0.0-g1.0-s0:")
    assert lines[3] == "failed   digits-if10-focal-b0.0-g1.0-s1: classbalanced: error: boom"
    assert main(["sweep", "--status", str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == lines
    run_sweep(_file(tmp_path, seeds=(0, 1)), out=out, dry_run=True, log=_quiet)
    printed = capsys.readouterr().out.splitlines()
    assert printed[:4] == [
        "done    digits-if10-softmax-b0.0-s0",
        "running digits-if10-softmax-b0.0-s1",
        "stalled digits-if10-focal-b0.0-g1.0-s0",
        "new     digits-if10-focal-b0.0-g1.0-s1",
    ]


def test_a_run_another_launcher_holds_is_watched_not_handed_out(tmp_path, fake_launcher):
    """Another live launcher trains one run: this sweep trains the other, never hands the
    held one to its launcher (on SLURM an array task per poll, for hours), and counts it
    once the other launcher has finished it."""
    fake_launcher()

    class Recording(LocalLauncher):
        def run(self, tasks, log):
            given.append([t.name for t in tasks])
            return super().run(tasks, log)

    given: list[list[str]] = []
    out, sweep = tmp_path / "out", _file(tmp_path)
    held, other = "digits-if10-focal-b0.0-g1.0-s0", "digits-if10-softmax-b0.0-s0"
    write_plan(plan_sweep(load_sweep(sweep), out))
    claim = try_claim(out / "runs" / f"{held}.claim", "another launcher")

    def finish():  # the other launcher ends its run a moment later
        time.sleep(1.0)
        write_run(out / "runs" / held, {"epochs": 2, "loss": "focal"}, 30.0)
        release(claim)

    thread = threading.Thread(target=finish)
    thread.start()
    result = run_sweep(sweep, out=out, launcher=Recording(1), log=_quiet, poll_seconds=0.05)
    thread.join()
    assert given == [[other]]
    assert result.skipped == [held] and result.started == [other] and result.exit_code == 0


@pytest.mark.slow
def test_two_launchers_on_one_folder_train_every_run_once(tmp_path):
    """Two real `classbalanced sweep` processes started at once on one sweep folder."""
    sweep = _file(tmp_path, epochs=1, seeds=(0, 1))
    out = tmp_path / "shared"
    cmd, env = sweep_command(sweep, out), process_env()
    procs = [subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    names = [e["name"] for e in json.loads((out / "plan.json").read_text())["runs"]]
    assert len(names) == 4
    started_by = []
    for name in names:
        log = (out / "runs" / f"{name}.log").read_text()
        assert log.count("=== ") == 1, log  # one attempt ...
        assert log.count("\ntraining resnet8 on digits") == 1  # ... one training start
        assert json.loads((out / "runs" / name / "metrics.json").read_text())["epoch"] == 1
        started_by += [i for i, e in enumerate(errors) if f"starting {name}" in e]
    assert len(started_by) == 4
    assert set(started_by) == {0, 1}, errors  # both launchers did some of the work
    assert not list((out / "runs").glob("*.claim*"))
