"""The tune Ray test's cluster and study, run inside a private network namespace.

``unshare -n python tests/tune/ray_tune_scenario.py REPORT -- TUNE_ARGS...`` (as root): the
same two-node loopback cluster as the sweep launcher's Ray test (``loopback_cluster`` of
tests/launch/ray_scenario.py: a head and a worker started by ``ray start`` as separate
processes), then ``classbalanced tune TUNE_ARGS --launcher ray --ray-address ADDRESS``;
writes REPORT (JSON): the nodes, tune's exit status and output, the hosts of the trials.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "launch"))
from ray_scenario import loopback_cluster


def main(report_path: str, tune_args: list[str]) -> int:
    report: dict = {}
    try:
        with loopback_cluster(worker_cpus=1) as (address, _, nodes):
            report.update(address=address, nodes=nodes)
            cmd = [sys.executable, "-m", "classbalanced", "tune", *tune_args]
            cmd += ["--launcher", "ray", "--ray-address", address, "--jobs", "2"]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            report.update(returncode=done.returncode, stdout=done.stdout, stderr=done.stderr)
    finally:
        Path(report_path).write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[3:]))
