"""Ray: one task per run on a Ray cluster (``--launcher ray``; ``pip install 'classbalanced[ray]'``).

Each run is a Ray task that declares ``--cpus-per-run`` CPUs and ``--gpus-per-run``
GPUs; Ray places it. The cluster is ``--ray-address``, else ``$RAY_ADDRESS``, else a
local Ray started for the sweep. A node that dies mid-sweep costs only the runs it
held: Ray retries those tasks on other nodes (the trainer on the dead node dies
with its worker), and a retried task takes its own claim over at once and resumes
the run from its last checkpoint.

Every node must see the sweep folder at the same path: each task first checks a
probe file the launcher wrote there.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import socket
import threading
import uuid
from pathlib import Path

from .._optional import require
from .runner import Outcome, RunTask, train_run
from .slurm import warn_if_local

__all__ = ["RayLauncher"]

#: times Ray retries a task whose worker or node died
MAX_RETRIES = 3
#: seconds the cancelled tasks of a stopped sweep get to save their checkpoints
STOP_SECONDS = 150


def _ray_train(task: RunTask) -> dict:
    """The body of a Ray task (importable on every node)."""
    return train_run(task, log=lambda line: print(line, flush=True)).to_dict()


def _check_reachable(ray, address: str) -> None:
    """One line at once when nothing answers at a Ray address (``ray.init`` would retry
    for minutes): ``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``."""
    target = address
    if address == "auto":  # the cluster `ray start` last started on this machine
        resolve = getattr(ray._private.services, "canonicalize_bootstrap_address", None)
        resolved = resolve(address) if resolve is not None else None
        if resolved is None:
            return
        target = resolved
    host, sep, port = target.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(
            f"--ray-address must be HOST:PORT, ray://HOST:PORT or auto, got {address!r}"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise ConnectionError(
            f"no Ray cluster answers at {target} ({exc.strerror or exc}): start one with "
            "`ray start --head`, or check --ray-address / $RAY_ADDRESS"
        ) from None


class RayLauncher:
    """Runs each task as a Ray task on the cluster named by the options."""

    name = "ray"

    def __init__(self, options):
        # the flags first: their one line is the same with or without Ray installed
        if not 0 <= options.gpus_per_run < math.inf or options.cpus_per_run < 1:
            raise ValueError(
                f"--gpus-per-run must be >= 0 and --cpus-per-run >= 1, got "
                f"{options.gpus_per_run} and {options.cpus_per_run}"
            )
        self.ray = require("ray", "ray", "the ray launcher")
        self.options = options
        self.address = options.ray_address or os.environ.get("RAY_ADDRESS") or None
        self.probe = f".probe-{uuid.uuid4().hex[:12]}"

    def owner(self, session: str, task_name: str) -> str:
        return f"ray:{session}:{task_name}"  # a retried task keeps its owner

    def prepare(self, out: Path, log) -> None:
        if self.address is not None:
            _check_reachable(self.ray, self.address)
            warn_if_local(out, "Ray", log)
        out.mkdir(parents=True, exist_ok=True)
        self._probe_path = out / self.probe
        self._probe_path.write_text("every node of the cluster must see this file\n")

    def connect(self, log) -> None:
        """Join (or start) the cluster, once; checks that a run fits on a node."""
        ray = self.ray
        if ray.is_initialized():
            return
        handler = signal.getsignal(signal.SIGTERM)
        # "local": a Ray of its own, never one a stale /tmp/ray/ray_current_cluster names
        ray.init(address=self.address or "local", log_to_driver=False, include_dashboard=False)
        if callable(handler) and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)  # the sweep's (stop as Ctrl-C), not Ray's
        where = self.address or "a local Ray started for this sweep"
        log(f"ray: {len(ray.nodes())} node(s) at {where}")
        self._check_fits(log)

    def _check_fits(self, log) -> None:
        """A task no node can hold waits for ever: refused on the Ray started here, a
        warning on a cluster (an autoscaler may add such a node)."""
        cpus, gpus = self.options.cpus_per_run, self.options.gpus_per_run
        nodes = [n.get("Resources", {}) for n in self.ray.nodes() if n.get("Alive")]
        if any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in nodes):
            return
        largest = ", ".join(f"{r.get('CPU', 0):g} CPU / {r.get('GPU', 0):g} GPU" for r in nodes)
        need = f"no node has {cpus} CPU(s) and {gpus:g} GPU(s) for a run (nodes: {largest})"
        if self.address is None:
            raise ValueError(f"this machine's Ray: {need}; lower --cpus-per-run / --gpus-per-run")
        log(f"warning: the Ray cluster: {need}; the runs wait until such a node joins")

    def submit(self, task: RunTask, log):
        """Start one task (connecting first); its Ray reference, for :meth:`result`."""
        self.connect(log)
        options = self.options
        remote = self.ray.remote(
            num_cpus=options.cpus_per_run,
            num_gpus=options.gpus_per_run,
            max_retries=MAX_RETRIES,
            retry_exceptions=False,
        )(_ray_train)
        return remote.remote(dataclasses.replace(task, threads=options.cpus_per_run))

    def run(self, tasks: list[RunTask], log) -> list[Outcome]:
        ray = self.ray
        if not tasks:
            return []
        refs = {self.submit(t, log): t for t in tasks}
        outcomes: dict[str, Outcome] = {}
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    outcomes[refs[ref].name] = self.result(ref, refs[ref], log)
        except KeyboardInterrupt:  # Ctrl-C / SIGTERM: every run saves a checkpoint first
            for ref in pending:
                ray.cancel(ref)
            ray.wait(pending, num_returns=len(pending), timeout=STOP_SECONDS)
            raise
        return [outcomes[t.name] for t in tasks]

    def result(self, ref, task: RunTask, log) -> Outcome:
        """The outcome of a finished task (a task whose retries ran out: a failed run)."""
        try:
            outcome = Outcome(**self.ray.get(ref))
        except Exception as exc:  # retries exhausted: a failed run, the sweep goes on
            line = " ".join(str(exc).split())[:300]
            outcome = Outcome(task.name, "failed", line=f"ray task failed: {line}")
        if outcome.status in ("finished", "failed"):
            log(f"ray: {outcome.status} {task.name} on {outcome.host}")
        return outcome

    def close(self) -> None:
        """Remove the probe file and disconnect (a local Ray started here stops)."""
        probe = getattr(self, "_probe_path", None)
        if probe is not None:
            probe.unlink(missing_ok=True)
        if self.ray.is_initialized():
            self.ray.shutdown()
