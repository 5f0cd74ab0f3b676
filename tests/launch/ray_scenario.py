"""The Ray test's cluster and sweep, run inside a private network namespace.

``unshare -n python tests/launch/ray_scenario.py CONFIG OUT REPORT`` (as root): brings
up the loopback interface (the only one in the namespace, so every Ray process binds
127.0.0.1), starts a head node and one more worker node with ``ray start`` as separate
processes, runs ``classbalanced sweep --launcher ray`` on CONFIG into OUT, kills the
worker node (its process and every process below it) while it trains a run, and writes REPORT (JSON):
the node addresses, the sweep's exit status and stderr, the killed run. The cluster is
:func:`loopback_cluster`, which tests/tune/ray_tune_scenario.py uses too.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(*args, env, **kwargs):
    ray = str(Path(sys.executable).parent / "ray")
    return subprocess.Popen([ray, *args], env=env, **kwargs)


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])


def _descendants(root: int) -> list[int]:
    """Every live process below ``root`` (Ray's processes may start their own sessions)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(_parent(int(entry)), []).append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_node(node: subprocess.Popen) -> None:
    """SIGKILL one `ray start --block` node: its process and everything it started."""
    for pid in [node.pid, *_descendants(node.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _claimed_by(out: Path, node: int) -> str | None:
    """A run whose claim holder (a Ray worker process) runs on the node started as ``node``."""
    below = set(_descendants(node))
    for claim in (out / "runs").glob("*.claim.*"):
        try:
            if json.loads(claim.read_text())["pid"] in below:
                return claim.name.split(".claim.")[0]
        except (OSError, ValueError, KeyError):
            continue
    return None


@contextlib.contextmanager
def loopback_cluster(
    *, worker_cpus: int, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen, list[str]]]:
    """Bring up the loopback interface, a head node (1 CPU) and a worker node
    (``worker_cpus``) with ``ray start --block``, each its own process, and wait until both
    are alive; yields the address, the worker's process and the live nodes' addresses.
    On leaving, both nodes are killed (only the processes started here)."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    head_args = ["start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false"]
    head = _ray(*head_args, "--block", *common, env=env, start_new_session=True)
    worker = None
    try:
        for _ in range(1800):  # until the head's GCS answers
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        worker_args = ["start", f"--address={address}", f"--num-cpus={worker_cpus}", "--block"]
        worker = _ray(*worker_args, *common, env=env, start_new_session=True)
        import ray  # optional

        ray.init(address=address, log_to_driver=False)
        for _ in range(600):
            if len([n for n in ray.nodes() if n["Alive"]]) == 2:
                break
            time.sleep(0.1)
        nodes = [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]]
        ray.shutdown()
        yield address, worker, nodes
    finally:
        for node in (worker, head):
            if node is not None:
                _kill_node(node)


def main(config: str, out: str, report_path: str) -> int:
    env = dict(os.environ, RAY_health_check_period_ms="500", RAY_health_check_failure_threshold="4")
    report: dict = {}
    try:
        with loopback_cluster(worker_cpus=2, env=env) as (address, worker, nodes):
            report.update(address=address, nodes=nodes)
            cmd = [sys.executable, "-m", "classbalanced", "sweep", "--config", config, "--out", out]
            cmd += ["--launcher", "ray", "--ray-address", address, "--no-report"]
            sweep = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
            killed = None
            for _ in range(3000):
                killed = _claimed_by(Path(out), worker.pid)
                if killed or sweep.poll() is not None:
                    break
                time.sleep(0.1)
            if killed:
                log = Path(out) / "runs" / f"{killed}.log"
                for _ in range(600):  # let it train a little: a checkpoint or two
                    if log.exists() and "epoch   1/" in log.read_text():
                        break
                    time.sleep(0.1)
                _kill_node(worker)
            report["killed"] = killed
            report["stderr"] = sweep.communicate(timeout=600)[1]
            report["returncode"] = sweep.returncode
    finally:
        Path(report_path).write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
