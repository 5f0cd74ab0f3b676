"""Running sweeps: skip finished runs, resume unfinished ones, threads, GPUs, failures."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from launch_helpers import process_env, sweep_command
from reproduce_helpers import FakeLauncher, FakeProc, quiet, write_run

from classbalanced.cli import main
from classbalanced.launch.local import threads_per_job
from classbalanced.launch.sweep import run_sweep
from classbalanced.reproduce.sweep import expand_sweep, parse_sweep, plan_sweep, write_plan

SPEC = {
    "sweep": {"name": "tiny"},
    "base": {"dataset": "digits", "imbalance_factor": 10, "model": "resnet8", "epochs": 2},
    "grid": [
        {"loss": ["softmax"], "beta": [0.0], "seed": [0, 1]},
        {"loss": ["focal"], "beta": [0.999], "gamma": [1.0], "seed": [0, 1]},
    ],
}
NAMES = [
    "digits-if10-softmax-b0.0-s0",
    "digits-if10-softmax-b0.0-s1",
    "digits-if10-focal-b0.999-g1.0-s0",
    "digits-if10-focal-b0.999-g1.0-s1",
]


def _spec():
    return parse_sweep(json.loads(json.dumps(SPEC)))


def _sweep_folder(out):
    """The sweep folder of SPEC before any run (its plan.json), where runs are then put."""
    write_plan(plan_sweep(_spec(), out))
    return out


def _config(name):
    run = next(r for r in expand_sweep(_spec()) if r.name == name)
    return run.config.to_dict()


def _results(out):
    with open(out / "results.csv", newline="") as handle:
        return {row["name"]: row for row in csv.DictReader(handle)}


def test_finished_runs_are_skipped(tmp_path, no_launch):
    _sweep_folder(tmp_path)
    for name in NAMES:
        write_run(tmp_path / "runs" / name, _config(name), 40.0)
    result = run_sweep(_spec(), out=tmp_path, jobs=2, log=quiet)
    assert result.exit_code == 0
    assert result.skipped == NAMES and not result.started and not result.resumed
    rows = _results(tmp_path)
    assert [rows[n]["status"] for n in NAMES] == ["finished"] * 4
    assert (tmp_path / "report.md").is_file()


def test_unfinished_runs_are_resumed_and_new_ones_started(tmp_path, fake_launcher):
    launcher = fake_launcher()
    _sweep_folder(tmp_path)
    write_run(tmp_path / "runs" / NAMES[0], _config(NAMES[0]), 40.0)  # finished
    half = tmp_path / "runs" / NAMES[1]
    write_run(half, _config(NAMES[1]), 60.0, epoch=1)  # evaluated at epoch 1 of 2
    bare = tmp_path / "runs" / NAMES[2]
    bare.mkdir(parents=True)
    (bare / "config.json").write_text(json.dumps(_config(NAMES[2])))  # started, no metrics
    result = run_sweep(_spec(), out=tmp_path, jobs=1, log=quiet)
    launched = {c["name"]: c for c in launcher.calls}
    assert sorted(launched) == sorted(NAMES[1:])
    assert "--resume" in launched[NAMES[1]]["cmd"]
    assert "--resume" in launched[NAMES[2]]["cmd"]
    assert "--resume" not in launched[NAMES[3]]["cmd"]
    assert result.skipped == [NAMES[0]]
    assert sorted(result.resumed) == sorted(NAMES[1:3]) and result.started == [NAMES[3]]
    cmd = launched[NAMES[3]]["cmd"]
    assert cmd[:4] == [sys.executable, "-m", "classbalanced", "train"]
    values = launched[NAMES[3]]["values"]
    assert values["out"] == str(tmp_path / "runs" / NAMES[3])
    assert (values["loss"], values["beta"], values["seed"], values["progress"]) == (
        "focal",
        0.999,
        1,
        False,
    )
    assert [r["status"] for r in _results(tmp_path).values()] == ["finished"] * 4


def test_threads_and_gpus_per_job(tmp_path, fake_launcher, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    launcher = fake_launcher()
    run_sweep(_spec(), out=tmp_path, jobs=2, log=quiet)
    cpus = len(os.sched_getaffinity(0))
    assert len(launcher.calls) == 4
    for call in launcher.calls:
        assert call["env"]["OMP_NUM_THREADS"] == str(max(1, cpus // 2))
    gpus = [c["env"]["CUDA_VISIBLE_DEVICES"] for c in launcher.calls]
    # the order of the calls and each device's share depend on thread timing (a thread
    # whose run ends first takes the idle device again); the first two takes are 3 then 5
    assert len(gpus) == 4 and set(gpus) == {"3", "5"}


def test_devices_go_least_busy_first():
    from classbalanced.launch.local import _Gpus

    gpus = _Gpus({"CUDA_VISIBLE_DEVICES": "3, 5,7"})
    first = [gpus.take(), gpus.take()]
    assert first == ["3", "5"]  # two runs at once: two devices
    gpus.give("3")
    assert gpus.take() == "7"  # idle 3 and 7: the next in turn
    assert gpus.take() == "3"  # the only idle one
    assert gpus.take() == "5" and gpus.busy == {"3": 1, "5": 2, "7": 1}
    assert _Gpus({"CUDA_VISIBLE_DEVICES": "1"}).take() is None  # one device: left alone


def test_one_gpu_is_left_alone(tmp_path, fake_launcher, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    launcher = fake_launcher()
    run_sweep(_spec(), out=tmp_path, jobs=3, log=quiet)
    assert {c["env"]["CUDA_VISIBLE_DEVICES"] for c in launcher.calls} == {"1"}
    assert threads_per_job(3, cpus=2) == 1


def test_failed_run_is_reported_and_the_sweep_goes_on(tmp_path, fake_launcher, capsys):
    launcher = fake_launcher({NAMES[1]: "classbalanced: error: something broke"})
    messages = []
    result = run_sweep(_spec(), out=tmp_path, jobs=1, log=messages.append)
    assert len(launcher.calls) == 4  # the runs after the failure still ran
    assert result.exit_code == 1
    assert result.failed == {NAMES[1]: "classbalanced: error: something broke"}
    assert any(NAMES[1] in m and "something broke" in m for m in messages)
    rows = _results(tmp_path)
    assert rows[NAMES[1]]["status"] == "failed" and rows[NAMES[0]]["status"] == "finished"
    # through the CLI hook: exit status 1
    toml = tmp_path / "tiny.toml"
    toml.write_text(
        '[base]\ndataset = "digits"\nepochs = 2\n[[grid]]\nseed = [0, 1]\n', encoding="utf-8"
    )
    launcher = fake_launcher({"digits-if1-softmax-b0.0-s1": "Traceback: boom"})
    assert main(["sweep", "--config", str(toml), "--out", str(tmp_path / "cli")]) == 1
    assert "Traceback: boom" in capsys.readouterr().err


def test_a_run_failing_after_its_final_metrics_is_finished_with_a_warning(tmp_path, monkeypatch):
    """The trainer exits non-zero once its final metrics are written (e.g. a disk full while
    saving the last plot): the sweep said FAILED while results.csv said finished and a
    rerun skipped it; now finished everywhere, with the exit said as a warning."""
    from classbalanced.launch import runner

    finish = FakeLauncher()

    def launch(cmd, *, env, log_path):
        finish(cmd, env=env, log_path=log_path)
        log_path.write_text("final\nOSError: [Errno 28] No space left on device\n")
        return FakeProc(1)

    monkeypatch.setattr(runner, "launch_run", launch)
    messages: list[str] = []
    result = run_sweep(_spec(), out=tmp_path, jobs=1, log=messages.append)
    assert result.exit_code == 0 and result.failed == {} and len(result.started) == 4
    assert {row["status"] for row in _results(tmp_path).values()} == {"finished"}
    warnings = [m for m in messages if m.startswith("warning: ")]
    assert len(warnings) == 4
    assert all("exited with status 1: OSError: [Errno 28]" in w for w in warnings)
    assert not list((tmp_path / "runs").glob("*.failed"))


def test_real_failing_subprocess(tmp_path):
    """A run that fails inside `classbalanced train` (missing data file), for real."""
    spec = parse_sweep(
        {
            "base": {
                "dataset": "npz",
                "train_data": str(tmp_path / "missing.npz"),
                "test_data": str(tmp_path / "missing.npz"),
                "epochs": 1,
            }
        }
    )
    result = run_sweep(spec, out=tmp_path / "out", log=quiet, report=False)
    assert result.exit_code == 1
    ((name, line),) = result.failed.items()
    assert name == "npz-if1-softmax-b0.0-s0"
    assert "missing.npz" in line
    log = (tmp_path / "out" / "runs" / f"{name}.log").read_text()
    assert log.strip().splitlines()[-1].strip() == line
    assert _results(tmp_path / "out")[name]["status"] == "failed"


def test_dry_run_starts_nothing(tmp_path, no_launch, capsys):
    _sweep_folder(tmp_path)
    write_run(tmp_path / "runs" / NAMES[0], _config(NAMES[0]), 40.0)
    (tmp_path / "runs" / NAMES[1]).mkdir()
    (tmp_path / "runs" / NAMES[1] / "config.json").write_text("{}")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = run_sweep(_spec(), out=tmp_path, jobs=2, dry_run=True, log=quiet)
    out = capsys.readouterr().out.splitlines()
    assert out[:4] == [
        f"done    {NAMES[0]}",
        f"resume  {NAMES[1]}",
        f"new     {NAMES[2]}",
        f"new     {NAMES[3]}",
    ]
    assert "1 finished, 1 to resume, 2 new" in out[4]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert result.exit_code == 0


@pytest.mark.parametrize("stale_after", [0, -1.0, float("nan"), float("inf")])
def test_bad_stale_after_is_refused_before_anything_is_written(tmp_path, stale_after):
    # NaN judged every claim dead: two launchers took each other's runs
    with pytest.raises(ValueError, match="--stale-after must be a positive number"):
        run_sweep(_spec(), out=tmp_path / "out", stale_after=stale_after, log=quiet)
    assert not (tmp_path / "out").exists()


def test_bad_jobs(tmp_path):
    with pytest.raises(ValueError, match="--jobs"):
        run_sweep(_spec(), out=tmp_path, jobs=0, log=quiet)


@pytest.mark.slow
def test_sigterm_stops_the_sweep_as_ctrl_c_does(tmp_path):
    """`timeout`, a scheduler or `docker stop` send SIGTERM to the sweep: its run saves a
    checkpoint, is not failed, and leaves no claim (a rerun resumes it at once instead of
    waiting --stale-after seconds for a claim nobody refreshes)."""
    toml = tmp_path / "long.toml"
    toml.write_text(
        '[base]\ndataset = "digits"\nmodel = "simple_cnn"\nepochs = 300\neval_every = 1\n'
    )
    out, name = tmp_path / "out", "digits-if1-softmax-b0.0-s0"
    sweep = subprocess.Popen(
        sweep_command(toml, out), env=process_env(), stderr=subprocess.PIPE, text=True
    )
    log = out / "runs" / f"{name}.log"
    end = time.monotonic() + 240
    while not (log.exists() and "epoch   1/300" in log.read_text()):
        assert time.monotonic() < end and sweep.poll() is None, "the run never reached epoch 1"
        time.sleep(0.1)
    sweep.send_signal(signal.SIGTERM)
    err = sweep.communicate(timeout=120)[1]
    assert sweep.returncode == 130, err
    assert "interrupted at step" in log.read_text()  # the trainer saved a checkpoint
    assert (
        not list((out / "runs").glob("*.claim*")) and not (out / "runs" / f"{name}.failed").exists()
    )
