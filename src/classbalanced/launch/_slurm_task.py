"""What a SLURM array task runs (imported on the node; needs submitit).

A :class:`SweepTask` trains one run (:func:`~classbalanced.launch.runner.train_run`).
Its claim owner is the SLURM task (``slurm:JOB_TASK``), which a requeue keeps, so
the requeued task takes its own claim over at once and resumes the run. On
submitit's checkpoint signal (``USR2`` before the time limit, or a preemption
notice) it stops the trainer with SIGTERM (the trainer saves a checkpoint) and
asks submitit to requeue the same task.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import submitit

from .runner import RunTask, live_run, terminate_live_runs, train_run

__all__ = ["SweepTask", "slurm_owner"]


def slurm_owner() -> str:
    """``slurm:ARRAYJOB_TASK`` (or ``slurm:JOB``) of the running SLURM task."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID", "?")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"slurm:{job}_{task}" if task is not None else f"slurm:{job}"


class SweepTask(submitit.helpers.Checkpointable):
    """Train one run of a sweep inside a SLURM task; requeued on timeout or preemption."""

    def __call__(self, task: RunTask) -> dict:
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        task = dataclasses.replace(
            task, owner=slurm_owner(), threads=int(cpus) if cpus else task.threads
        )
        return train_run(task, log=lambda line: print(line, flush=True)).to_dict()

    def checkpoint(self, task: RunTask) -> submitit.helpers.DelayedSubmission:
        terminate_live_runs()  # the trainer saves a checkpoint and exits
        return submitit.helpers.DelayedSubmission(self, task)


def _first_host() -> str:
    nodes = os.environ.get("SLURM_JOB_NODELIST", "")
    done = subprocess.run(
        ["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True
    )
    return done.stdout.split()[0]


def torchrun_command(train_args: list[str], procs_per_node: int) -> list[str]:
    """torchrun for this node of the allocation: static rendezvous on the first node,
    the port derived from the job id (loopback when the job has one node)."""
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", os.environ.get("SLURM_NNODES", "1")))
    master = "127.0.0.1" if nodes == 1 else _first_host()
    port = 20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={nodes}",
        f"--nproc_per_node={procs_per_node}",
        f"--node_rank={os.environ.get('SLURM_NODEID', '0')}",
        f"--master_addr={master}",
        f"--master_port={port}",
        "-m",
        "classbalanced",
        *train_args,
    ]


class DistributedTrain(submitit.helpers.Checkpointable):
    """One torchrun per node of a SLURM job; requeued with ``--resume`` on timeout or
    preemption (the ranks agree to stop and save a checkpoint on SIGTERM)."""

    def __call__(self, train_args: list[str], procs_per_node: int) -> int:
        proc = subprocess.Popen(torchrun_command(train_args, procs_per_node))
        with live_run(proc):
            return proc.wait()

    def checkpoint(self, train_args: list[str], procs_per_node: int):
        terminate_live_runs()
        args = train_args if "--resume" in train_args else [*train_args, "--resume"]
        return submitit.helpers.DelayedSubmission(self, args, procs_per_node)
