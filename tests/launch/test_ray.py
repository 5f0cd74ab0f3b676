"""Ray for real: a head and a worker node (`ray start`, separate processes) on 127.0.0.1 in a
private network namespace; a sweep through --launcher ray equals the local launcher's,
and killing the worker node mid-sweep still finishes every run (resumed elsewhere)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from launch_helpers import HERE, process_env, run_results, sweep_command, sweep_toml

pytestmark = pytest.mark.slow


def _missing() -> str | None:
    if os.geteuid() != 0:
        return (
            "the Ray test runs the cluster in a private network namespace (unshare -n): needs root"
        )
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"missing {tool} (util-linux, iproute2)"
    if not (Path(sys.executable).parent / "ray").exists():
        return "ray is not installed next to this Python: pip install 'classbalanced[ray]'"
    return None


def test_ray_sweep_equals_local_and_survives_a_dead_node(tmp_path):
    reason = _missing()
    if reason is not None:
        print(f"skipping the Ray test: {reason}")
        pytest.skip(reason)
    config = tmp_path / "ray.toml"
    config.write_text(sweep_toml("ray", seeds=[0, 1]))
    out, reference, report = tmp_path / "ray", tmp_path / "local", tmp_path / "report.json"
    env = process_env()
    # the same grid on the local launcher meanwhile, one thread per run as in the Ray tasks
    local = sweep_command(config, reference, "--jobs", str(len(os.sched_getaffinity(0))))
    local = subprocess.Popen(local, env=env, stderr=subprocess.PIPE, text=True)
    scenario = [sys.executable, str(HERE / "ray_scenario.py"), str(config), str(out), str(report)]
    # a home of its own: an auth token a local Ray once left in ~/.ray makes `ray start`
    # require it, and Ray's clients then fail to connect
    ray_env = {**env, "HOME": str(tmp_path)}
    done = subprocess.run(
        ["unshare", "-n", *scenario], env=ray_env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert local.wait(timeout=300) == 0, local.stderr.read()[-3000:]
    facts = json.loads(report.read_text())
    assert facts["nodes"] == ["127.0.0.1", "127.0.0.1"]  # a head and a worker, loopback only
    assert facts["returncode"] == 0, facts["stderr"][-3000:]
    killed = facts["killed"]
    assert killed, facts["stderr"][-3000:]  # the worker node died while training a run
    attempts = (out / "runs" / f"{killed}.log").read_text().split("=== ")[1:]
    assert len(attempts) == 2 and "resuming" in attempts[1]  # retried elsewhere, resumed
    names = [e["name"] for e in json.loads((out / "plan.json").read_text())["runs"]]
    assert len(names) == 4
    for name in names:
        assert run_results(out / "runs" / name) == run_results(reference / "runs" / name), name
    left = [p.name for p in [*(out / "runs").glob("*.claim*"), *out.glob(".probe-*")]]
    assert not left, (left, facts["stderr"][-3000:])


@pytest.fixture
def local_ray_env():
    """The environment of a sweep that starts a Ray of its own: a Ray temp folder whose
    ray_current_cluster names a dead cluster (left by a killed `ray start`), and a home
    of its own (ray.init() writes an auth token to ~/.ray that later `ray start` clusters
    would require)."""
    if not (Path(sys.executable).parent / "ray").exists():
        pytest.skip("ray is not installed next to this Python: pip install 'classbalanced[ray]'")
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:9\n")  # nobody there
    try:
        yield process_env(RAY_TMPDIR=str(ray_tmp), HOME=str(ray_tmp))
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_without_an_address_the_sweep_starts_a_ray_of_its_own(tmp_path, local_ray_env):
    """Not the dead cluster ray_current_cluster names: ray.init() alone would try to join
    that one for minutes. A run it cannot hold is refused rather than waited for."""
    config = tmp_path / "one.toml"
    config.write_text(sweep_toml("one", seeds=[0]).replace('"softmax", "focal"', '"softmax"'))
    cmd = sweep_command(config, tmp_path / "out", "--launcher", "ray")
    big = [*cmd, "--cpus-per-run", "1000"]  # would wait for ever
    done = subprocess.run(big, env=local_ray_env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("classbalanced: error: this machine's Ray: no node has 1000 CPU(s)")
    # a sweep that trains on the Ray it starts: test_sigterm_stops_a_ray_sweep_as_ctrl_c_does


def test_sigterm_stops_a_ray_sweep_as_ctrl_c_does(tmp_path, local_ray_env):
    """ray.init puts its own SIGTERM handler (exit at once: the trainer was killed without
    a checkpoint); the sweep's cancels its tasks, whose trainers save a checkpoint."""
    config = tmp_path / "long.toml"
    config.write_text('[base]\ndataset = "digits"\nmodel = "simple_cnn"\nepochs = 300\n')
    cmd = sweep_command(config, tmp_path / "out", "--launcher", "ray")
    sweep = subprocess.Popen(cmd, env=local_ray_env, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "out/runs/digits-if1-softmax-b0.0-s0.log"
    end = time.monotonic() + 240
    while not (log.exists() and "epoch   2/300" in log.read_text()):
        assert time.monotonic() < end and sweep.poll() is None, "the run never reached epoch 2"
        time.sleep(0.1)
    sweep.send_signal(signal.SIGTERM)
    err = sweep.communicate(timeout=240)[1]
    assert sweep.returncode == 130, err[-3000:]
    assert "ray: 1 node(s) at a local Ray started for this sweep" in err  # not a dead one
    assert "interrupted at step" in log.read_text()  # the trainer saved a checkpoint
    assert not list((tmp_path / "out/runs").glob("*.claim*"))
