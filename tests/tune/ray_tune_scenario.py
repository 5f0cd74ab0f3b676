"""The tune Ray test's cluster and study, run inside a private network namespace.

``unshare -n python tests/tune/ray_tune_scenario.py REPORT -- TUNE_ARGS...`` (as root): the
same two-node loopback cluster as the sweep launcher's Ray test (its helpers in
tests/launch/ray_scenario.py: a head and a worker started by ``ray start`` as separate
processes), then ``classbalanced tune TUNE_ARGS --launcher ray --ray-address ADDRESS``;
writes REPORT (JSON): the nodes, tune's exit status and output, the hosts of the trials.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "launch"))
from ray_scenario import _free_port, _kill_node, _ray


def main(report_path: str, tune_args: list[str]) -> int:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    head_args = ["start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false"]
    head = _ray(*head_args, "--block", *common, env=None, start_new_session=True)
    worker = None
    report: dict = {"address": address}
    try:
        for _ in range(1800):  # until the head's GCS answers
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        worker_args = ["start", f"--address={address}", "--num-cpus=1", "--block"]
        worker = _ray(*worker_args, *common, env=None, start_new_session=True)
        import ray

        ray.init(address=address, log_to_driver=False)
        for _ in range(600):
            if len([n for n in ray.nodes() if n["Alive"]]) == 2:
                break
            time.sleep(0.1)
        report["nodes"] = [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]]
        ray.shutdown()
        cmd = [sys.executable, "-m", "classbalanced", "tune", *tune_args]
        cmd += ["--launcher", "ray", "--ray-address", address, "--jobs", "2"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        report.update(returncode=done.returncode, stdout=done.stdout, stderr=done.stderr)
    finally:
        for node in (worker, head):  # only the processes this script started
            if node is not None:
                _kill_node(node)
        Path(report_path).write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[3:]))
