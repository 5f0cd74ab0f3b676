"""A real one-node SLURM cluster (slurm_cluster.sh) for the launcher tests, once per session."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


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


@pytest.fixture(scope="session")
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
