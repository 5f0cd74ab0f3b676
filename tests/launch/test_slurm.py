"""SLURM for real (a one-node cluster on 127.0.0.1, see slurm_cluster.sh): a sweep through
--launcher slurm, a requeued task that resumes exactly, a 2-process DDP run through submit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from launch_helpers import HERE, process_env, run_results, sweep_command, sweep_toml

from classbalanced.launch.claims import read_claim

pytestmark = pytest.mark.slow


def _slurm_missing() -> str | None:
    if os.geteuid() != 0:
        return "the SLURM tests start slurmctld / slurmd and need root"
    missing = [t for t in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(t) is None]
    if missing:
        return f"missing {', '.join(missing)}: apt-get install slurm-wlm munge"
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed: pip install 'classbalanced[slurm]'"
    return None


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """Start munged, slurmctld and slurmd (all on 127.0.0.1); yield the environment
    that points SLURM's commands at the cluster."""
    reason = _slurm_missing()
    if reason is not None:
        print(f"skipping the SLURM tests: {reason}")
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("slurm")
    script = HERE / "slurm_cluster.sh"
    done = subprocess.run(
        ["bash", str(script), "start", str(state)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    conf = done.stdout.strip().splitlines()[-1].split("=", 1)[1]
    text = Path(conf).read_text()
    assert "NodeAddr=127.0.0.1" in text and "(127.0.0.1)" in text
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    try:
        yield {"SLURM_CONF": conf, "state": state}
    finally:
        subprocess.run(["bash", str(script), "stop", str(state)], timeout=60)
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


NAMES = ["digits-if10-softmax-b0.0-s0", "digits-if10-focal-b0.0-g1.0-s0"]


def _env(cluster):
    return process_env(SLURM_CONF=cluster["SLURM_CONF"])


def _sweep(config: Path, out: Path, env, *extra):
    return subprocess.Popen(
        sweep_command(config, out, *extra), env=env, stderr=subprocess.PIPE, text=True
    )


def _wait_for(predicate, timeout: float, what: str, state=lambda: ""):
    """``predicate()`` once true; a timeout names ``what`` and what ``state()`` says."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {state()}")


def _job(job: str, env) -> str:
    done = subprocess.run(["scontrol", "show", "job", job], env=env, capture_output=True, text=True)
    return done.stdout


def test_sweep_through_slurm_requeue_resumes_exactly(slurm_cluster, tmp_path):
    config = tmp_path / "slurm.toml"
    # 20 epochs of ~0.15 s: the signal must reach the task before its run ends (with 3, the
    # run sometimes finished first under load, and nothing was requeued)
    config.write_text(sweep_toml("slurm", seeds=[0], epochs=20))
    env = _env(slurm_cluster)
    out, reference = tmp_path / "slurm", tmp_path / "local"
    sweep = _sweep(config, out, env, "--launcher", "slurm", "--slurm-time", "10")
    # the same grid on the local launcher meanwhile, with one thread per run as in SLURM
    local = _sweep(config, reference, env, "--jobs", str(len(os.sched_getaffinity(0))))
    log = out / "runs" / f"{NAMES[0]}.log"
    _wait_for(lambda: log.exists() and "epoch   1/20" in log.read_text(), 240, "epoch 1 of 20")
    owner = read_claim(out / "runs" / f"{NAMES[0]}.claim")["owner"]
    assert owner.startswith("slurm:")  # the claim is the SLURM task's
    job = owner.split(":", 1)[1]
    # what SLURM sends before a time limit (and what preemption looks like to submitit)
    subprocess.run(["scancel", "--signal=USR2", job], env=env, check=True)
    # SLURM holds a requeued job for about two minutes (Reason=BeginTime); an administrator
    # may release it at once, and so does the test
    _wait_for(
        lambda: "Reason=BeginTime" in _job(job, env),
        120,
        "the requeued task",
        lambda: _job(job, env),
    )
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env, check=True)
    assert sweep.wait(timeout=300) == 0, sweep.stderr.read()[-3000:]
    assert local.wait(timeout=300) == 0, local.stderr.read()[-3000:]
    text = log.read_text()
    assert text.count("=== ") == 2, text  # stopped once, requeued once ...
    assert "resuming" in text.split("=== ")[2]  # ... and the second attempt resumed
    assert text.count("\ntraining resnet8") == 2
    for name in NAMES:  # every run equals the uninterrupted local one
        assert run_results(out / "runs" / name) == run_results(reference / "runs" / name)
        assert not list((out / "runs").glob(f"{name}.claim*"))
    assert (out / "runs" / f"{NAMES[1]}.log").read_text().count("=== ") == 1


def test_sbatch_refusing_the_job_is_one_line(slurm_cluster, tmp_path, capsys):
    """A partition the cluster lacks: sbatch refuses; sweep and submit end in one line of
    ours (after sbatch's own lines), exit status 2, never a traceback."""
    from classbalanced.cli import main

    config = tmp_path / "one.toml"
    config.write_text(sweep_toml("slurm", seeds=[0]))
    sweep = ["sweep", "--config", str(config), "--out", str(tmp_path / "o"), "--no-report"]
    sweep += ["--launcher", "slurm", "--slurm-partition", "nosuch"]
    submit = ["submit", "--slurm-partition", "nosuch", "--logs", str(tmp_path / "logs")]
    submit += ["--", *_train(tmp_path / "t", 8)]
    for argv in (sweep, submit):
        capsys.readouterr()
        assert main(argv) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("classbalanced: error: sbatch refused the job: "), last
        assert "Invalid partition name specified" in last
    assert not (tmp_path / "logs").exists()  # no submission file or pickle left (issue #25)


def _train(out: Path, batch: int) -> list[str]:
    return [
        "train",
        *("--dataset", "digits", "--imbalance-factor", "10", "--model", "simple_cnn"),
        *("--loss", "softmax", "--beta", "0.99", "--epochs", "1", "--batch-size", str(batch)),
        *("--pad", "1", "--no-flip", "--device", "cpu", "--no-progress", "--eval-every", "1"),
        *("--out", str(out)),
    ]


def test_submit_runs_torchrun_with_two_processes(slurm_cluster, tmp_path):
    """2 ranks x 133 through SLURM == 1 process x 266 (DDP averages the gradients)."""
    from classbalanced.engine.checkpoint import latest_checkpoint, load_checkpoint

    env = _env(slurm_cluster)
    double, single = tmp_path / "double", tmp_path / "single"
    cmd = [sys.executable, "-m", "classbalanced", "submit", "--launcher", "slurm"]
    cmd += ["--nodes", "1", "--procs-per-node", "2", "--cpus-per-node", "2"]
    cmd += ["--logs", str(tmp_path / "logs"), "--", *_train(double, 266)]
    submitted = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    reference = [sys.executable, "-m", "classbalanced", *_train(single, 266)]
    subprocess.run(reference, env=env, check=True, capture_output=True, timeout=300)
    err = submitted.communicate(timeout=300)[1]
    assert submitted.returncode == 0, err[-3000:]
    assert "submitted SLURM job" in err
    logs = "".join(p.read_text() for p in (tmp_path / "logs").rglob("*.err"))
    assert " x2" in logs  # the trainer saw 2 processes
    a = load_checkpoint(latest_checkpoint(single / "checkpoints"))
    b = load_checkpoint(latest_checkpoint(double / "checkpoints"))
    assert a["global_step"] == b["global_step"] == 2
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)


def test_a_sweep_folder_the_nodes_cannot_see_is_reported(slurm_cluster, tmp_path):
    """The sweep folder on a tmpfs only the launcher sees (a private mount namespace): the
    launcher warns, and the task that cannot reach the folder is reported as such."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    config = tmp_path / "one.toml"
    config.write_text(
        sweep_toml("slurm", seeds=[0]).replace('loss = ["softmax", "focal"]', 'loss = ["softmax"]')
    )
    private = tmp_path / "private"
    private.mkdir()
    sweep = f"{sys.executable} -m classbalanced sweep --config {config} --out {private}/sweep"
    script = f"mount -t tmpfs none {private} && {sweep} --launcher slurm --no-report"
    done = subprocess.run(
        ["unshare", "-m", "bash", "-c", script],
        env=_env(slurm_cluster),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "is tmpfs storage of this machine" in done.stderr
    assert "the sweep folder must live on storage every node shares" in done.stderr
    assert not list(private.iterdir())  # the tmpfs is gone with its namespace


@pytest.mark.skipif(shutil.which("squeue") is None, reason="needs SLURM's squeue")
def test_a_failing_squeue_is_waited_out_then_one_line(tmp_path, monkeypatch):
    """squeue failing for real (a configuration it cannot read, as while the controller's
    host is being reconfigured) is logged once, waited out, then a one-line error; it
    used to be polled for ever."""
    from types import SimpleNamespace

    from classbalanced.launch.slurm import wait_for_jobs

    (tmp_path / "slurm.conf").write_text("")
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "slurm.conf"))
    result = tmp_path / "77_0_result.pkl"
    job = SimpleNamespace(job_id="77_0", paths=SimpleNamespace(result_pickle=result))
    lines: list[str] = []
    with pytest.raises(
        ConnectionError, match=r"squeue has failed for 0 s \(.+\); SLURM job\(s\) 77_0 may still"
    ):
        wait_for_jobs([job], poll_seconds=0.01, patience=0.2, log=lines.append)
    assert len(lines) == 1 and lines[0].startswith("squeue failed (")
    result.write_bytes(b"")  # a result written meanwhile ends the wait whatever squeue says
    wait_for_jobs([job], poll_seconds=0.01, patience=0.0)
