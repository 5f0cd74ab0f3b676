"""The local launcher: ``jobs`` runs at a time on this machine (``--launcher local``).

Each run gets ``max(1, CPUs // jobs)`` threads and, when ``CUDA_VISIBLE_DEVICES``
lists several GPUs, the least busy of them (ties in round-robin order).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .runner import Outcome, RunTask, terminate_live_runs, train_run

__all__ = ["LocalLauncher", "threads_per_job"]


def threads_per_job(jobs: int, cpus: int | None = None) -> int:
    """CPU threads for each of ``jobs`` concurrent runs: ``max(1, cpus // jobs)``.

    >>> threads_per_job(2, cpus=16), threads_per_job(4, cpus=2)
    (8, 1)
    """
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, jobs))


class _Gpus:
    """The devices of CUDA_VISIBLE_DEVICES when it lists several; handed out least busy first."""

    def __init__(self, environ: dict[str, str]):
        listed = [d.strip() for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
        listed = [d for d in listed if d]
        self.gpus = listed if len(listed) >= 2 else []
        self.busy = {gpu: 0 for gpu in self.gpus}
        self.next = 0
        self.lock = threading.Lock()

    def take(self) -> str | None:
        if not self.gpus:
            return None
        with self.lock:
            n = len(self.gpus)
            order = sorted(range(n), key=lambda i: (self.busy[self.gpus[i]], (i - self.next) % n))
            gpu, self.next = self.gpus[order[0]], (order[0] + 1) % n
            self.busy[gpu] += 1
            return gpu

    def give(self, gpu: str | None) -> None:
        if gpu is not None:
            with self.lock:
                self.busy[gpu] -= 1


class LocalLauncher:
    """Runs tasks in ``jobs`` threads, each driving one trainer subprocess."""

    name = "local"

    def __init__(self, jobs: int = 1):
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise ValueError(f"--jobs must be an integer >= 1, got {jobs!r}")
        self.jobs = jobs

    def owner(self, session: str, task_name: str) -> str:
        return session

    def run(self, tasks: list[RunTask], log: Callable[[str], None]) -> list[Outcome]:
        gpus = _Gpus(dict(os.environ))
        threads = threads_per_job(self.jobs)
        stop = threading.Event()

        def one(task: RunTask) -> Outcome:
            if stop.is_set():
                return Outcome(task.name, "interrupted")
            gpu = gpus.take()
            try:
                task = dataclasses.replace(task, threads=threads, gpu=gpu)
                return train_run(task, stop=stop, log=log)
            finally:
                gpus.give(gpu)

        pool = ThreadPoolExecutor(max_workers=self.jobs)
        try:
            futures = [pool.submit(one, task) for task in tasks]
            return [future.result() for future in futures]
        except KeyboardInterrupt:
            stop.set()
            count = terminate_live_runs()
            log(f"interrupted: stopped {count} run(s) (they save a checkpoint; rerun to resume)")
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
