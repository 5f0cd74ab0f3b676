"""The sweep / submit flags: one-line errors, missing extras named, no flag silently ignored."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from classbalanced.cli import main

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "configs" / "sweeps" / "smoke.toml")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sweep"], "sweep needs --config FILE (or --status SWEEP_DIR)"),
        (
            ["sweep", "--config", SMOKE, "--ray-address", "h:1"],
            "--ray-address does not apply to --launcher local (it is for --launcher ray)",
        ),
        (
            ["sweep", "--config", SMOKE, "--launcher", "ray", "--jobs", "3"],
            "--jobs does not apply to --launcher ray (it is for --launcher local)",
        ),
        (
            ["sweep", "--config", SMOKE, "--launcher", "local", "--gpus-per-run", "1"],
            "--gpus-per-run does not apply to --launcher local (it is for --launcher ray or slurm)",
        ),
        (
            ["sweep", "--config", SMOKE, "--launcher", "slurm", "--slurm-time", "soon"],
            "--slurm-time must be MINUTES or [D-]HH:MM:SS, got 'soon'",
        ),
        (
            ["sweep", "--config", SMOKE, "--launcher", "slurm", "--slurm-option", "account"],
            "--slurm-option must be KEY=VALUE, got 'account'",
        ),
        (
            ["sweep", "--config", SMOKE, "--launcher", "slurm", "--gpus-per-run", "0.5"],
            "--gpus-per-run must be a whole number for SLURM, got 0.5",
        ),
        (
            ["sweep", "--config", SMOKE, "--launcher", "ray", "--gpus-per-run", "nan"],
            "--gpus-per-run must be >= 0 and --cpus-per-run >= 1, got nan and 1",
        ),
        (["submit", "--", "evaluate", "runs/x"], "submit runs `train ...` after --, got evaluate"),
        (["submit", "--nodes", "0", "--", "train"], "--nodes must be an integer >= 1, got 0"),
        (["sweep", "--status", "/nonexistent/sweep"], "no readable plan.json in /nonexistent"),
    ],
)
def test_one_line_errors(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("classbalanced: error: "), err
    assert message in err[0]
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("launcher, module", [("ray", "ray"), ("slurm", "submitit")])
def test_a_missing_extra_is_named(launcher, module, tmp_path):
    # the engine cannot be imported (as where it is not installed): one line, the extra to install
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from classbalanced.cli import main\n"
        f"sys.exit(main(['sweep', '--config', {SMOKE!r}, '--out', {str(tmp_path / 'o')!r}, "
        f"'--launcher', {launcher!r}]))"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"classbalanced: error: the {launcher} launcher needs the optional package {module!r}: "
        f"pip install 'classbalanced[{launcher}]'"
    )
    assert not (tmp_path / "o").exists()


def test_a_registered_launcher_is_a_cli_choice_with_its_own_flags(tmp_path, capsys, monkeypatch):
    from classbalanced.launch import LAUNCHER_REGISTRY, register_launcher

    seen = []

    @register_launcher("toy", options={"jobs", "ray_address"}, description="a test engine")
    def toy(options):
        seen.append((options.jobs, options.ray_address))
        return object()

    monkeypatch.chdir(tmp_path)
    try:
        argv = ["sweep", "--config", SMOKE, "--out", "o", "--launcher", "toy", "--dry-run"]
        assert main([*argv, "--jobs", "3", "--ray-address", "h:1"]) == 0
        assert seen == [(3, "h:1")]
        assert main([*argv, "--slurm-partition", "p"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith(
            "--slurm-partition does not apply to --launcher toy (it is for --launcher slurm)"
        )
        assert seen == [(3, "h:1")]  # refused before the launcher was made
    finally:
        LAUNCHER_REGISTRY.pop("toy")
    with pytest.raises(SystemExit, match="2"):  # no longer a choice
        main(["sweep", "--config", SMOKE, "--launcher", "toy"])


@pytest.mark.parametrize("command", ["sweep", "submit"])
def test_slurm_without_sbatch_is_one_line(command, tmp_path, capsys, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no SLURM commands on this machine
    monkeypatch.chdir(tmp_path)
    if command == "sweep":
        argv = ["sweep", "--config", SMOKE, "--out", "o", "--launcher", "slurm"]
    else:
        argv = ["submit", "--", "train", "--dataset", "digits"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "classbalanced: error: --launcher slurm needs SLURM's sbatch on PATH: run it where "
        "jobs are submitted to the cluster (a login node)"
    ]
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_ray_address_nothing_answers_at_is_one_line(how, tmp_path):
    """ray.init would retry for minutes: the launcher says so at once, before writing."""
    pytest.importorskip("ray")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    argv = ["sweep", "--config", SMOKE, "--out", str(tmp_path / "o"), "--launcher", "ray"]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    if how == "flag":
        argv += ["--ray-address", address]
    else:
        env["RAY_ADDRESS"] = address
    cmd = [sys.executable, "-m", "classbalanced", *argv]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"classbalanced: error: no Ray cluster answers at {address} (Connection refused): "
        "start one with `ray start --head`, or check --ray-address / $RAY_ADDRESS"
    )
    assert not (tmp_path / "o").exists()
