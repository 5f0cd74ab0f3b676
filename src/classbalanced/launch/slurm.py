"""SLURM through submitit: one job-array task per run (``--launcher slurm``), and one
multi-node DDP training run (``classbalanced submit``).

Needs ``pip install 'classbalanced[slurm]'`` (submitit) on the submitting machine
and the same Python environment on the nodes. The sweep folder must live on
storage every node shares: each task first checks that it sees a probe file the
launcher wrote (and fails with that message otherwise).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
from pathlib import Path

from .._optional import require
from ..reproduce.results import last_line
from .runner import Outcome

__all__ = ["parse_slurm_time", "parse_slurm_options"]


def parse_slurm_time(text: str | int) -> int:
    """Minutes from ``MINUTES``, ``HH:MM:SS``, ``MM:SS`` or ``D-HH:MM:SS``.

    >>> parse_slurm_time("90"), parse_slurm_time("02:30:00"), parse_slurm_time("1-00:00:00")
    (90, 150, 1440)
    """
    if isinstance(text, int) and not isinstance(text, bool) and text > 0:
        return text
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(text).strip())
    if not match:
        raise ValueError(f"--slurm-time must be MINUTES or [D-]HH:MM:SS, got {text!r}")
    days, *rest = match.groups()
    fields = [int(v) for v in rest if v is not None]
    if days is not None:  # D-HH[:MM[:SS]]
        fields += [0] * (3 - len(fields))
        hours, minutes, seconds = fields
        hours += int(days) * 24
    else:  # MM, MM:SS or HH:MM:SS
        fields = [0] * (3 - len(fields)) + fields if len(fields) == 3 else [0, *fields, 0][:3]
        hours, minutes, seconds = fields
    minutes = hours * 60 + minutes + (seconds > 0)
    if minutes < 1:
        raise ValueError(f"--slurm-time must be at least one minute, got {text!r}")
    return minutes


def parse_slurm_options(items: list[str]) -> dict[str, str]:
    """``["account=lab", "qos=high"]`` -> ``{"account": "lab", "qos": "high"}``.

    >>> parse_slurm_options(["account=lab", "--qos=high"])
    {'account': 'lab', 'qos': 'high'}
    """
    options = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not key or not value:
            raise ValueError(f"--slurm-option must be KEY=VALUE, got {item!r}")
        options[key] = value
    return options


SQUEUE_PATIENCE = 900.0  # seconds of failing squeue calls before the wait gives up


def _squeue_ids() -> set[str] | str:
    """Job ids SLURM still holds (array tasks one per line), or squeue's error line."""
    try:
        done = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return " ".join(str(exc).split())
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else f"squeue exited with status {done.returncode}"
    return {line.strip() for line in done.stdout.splitlines() if line.strip()}


def wait_for_jobs(
    jobs, *, poll_seconds: float = 2.0, patience: float = SQUEUE_PATIENCE, log=None
) -> None:
    """Until every job has a result file or has left SLURM's queue (twice in a row).

    squeue failing (the controller restarting) is waited out for ``patience`` seconds in
    a row, then a one-line ``ConnectionError``: the jobs may still run, and a rerun of
    the sweep takes up their results.
    """
    pending = {job.job_id: job for job in jobs}
    absent: set[str] = set()
    failing_since = None  # monotonic time of the first of the failing squeue calls in a row
    while pending:
        held = _squeue_ids()
        for job_id, job in list(pending.items()):
            if job.paths.result_pickle.exists():
                pending.pop(job_id)
            elif not isinstance(held, str) and job_id not in held:
                if job_id in absent:
                    pending.pop(job_id)
                absent.add(job_id)
            else:
                absent.discard(job_id)
        if not isinstance(held, str):
            failing_since = None
        elif pending:
            failing_since = _squeue_failing(held, failing_since, patience, pending, log)
        if pending:
            time.sleep(poll_seconds)


def _squeue_failing(error: str, since, patience: float, pending, log):
    """When squeue first failed: said once, and past ``patience`` seconds an error."""
    if since is None:
        if log is not None:
            log(f"squeue failed ({error}); waiting for SLURM's controller")
        return time.monotonic()
    if time.monotonic() - since > patience:
        raise ConnectionError(
            f"squeue has failed for {patience:.0f} s ({error}); SLURM job(s) "
            f"{', '.join(sorted(pending)[:3])} may still run: rerun the sweep later"
        )
    return since


def _need_sbatch() -> None:
    if shutil.which("sbatch") is None:
        raise FileNotFoundError(
            "--launcher slurm needs SLURM's sbatch on PATH: run it where jobs are submitted "
            "to the cluster (a login node)"
        )


def _sbatch(submit, *args):
    """``submit(*args)`` (submitit's submit / map_array); sbatch refusing the job (a missing
    partition, a time over the limit, a bad option, no controller) is one line."""
    from submitit.core.utils import FailedJobError, FailedSubmissionError  # optional

    try:
        return submit(*args)
    except (FailedJobError, FailedSubmissionError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[-1] if lines else type(exc).__name__
        raise ValueError(
            f"sbatch refused the job: {reason} (check --slurm-partition, --slurm-time and "
            "--slurm-option)"
        ) from None


@contextlib.contextmanager
def _removed_if_refused(folder):
    """On a refused submission, remove what submitit wrote for it under ``folder`` (its
    ``.submission_file_*.sh``, the pickled task, folders it made): nothing is left behind."""
    existed = folder.exists()
    before = set(folder.rglob("*")) if existed else set()
    try:
        yield
    except ValueError:
        made = set(folder.rglob("*")) - before if folder.exists() else set()
        for path in sorted(made, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
        if not existed:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _job_failure(job) -> str:
    log = job.paths.stderr
    if not log.exists() and not job.paths.stdout.exists():
        return (
            f"SLURM task {job.job_id} ended without a result or a log in {log.parent}: the "
            "sweep folder must live on storage every node shares (NFS, Lustre, ...)"
        )
    return f"SLURM task {job.job_id} ended without a result: {last_line(log)}"


class SlurmLauncher:
    """One SLURM job-array task per run, through submitit (``--launcher slurm``)."""

    name = "slurm"

    def __init__(self, options):
        # the flags first: their one line is the same with or without submitit installed
        gpus = options.gpus_per_run
        if gpus != int(gpus) or gpus < 0:
            raise ValueError(f"--gpus-per-run must be a whole number for SLURM, got {gpus}")
        if options.cpus_per_run < 1 or options.slurm_array_parallelism < 1:
            raise ValueError("--cpus-per-run and --slurm-array-parallelism must be >= 1")
        self.submitit = require("submitit", "slurm", "the slurm launcher")
        self.options = options
        self.probe = None

    def owner(self, session: str, task_name: str) -> str:
        return "slurm"  # replaced by the SLURM task's own id on the node

    def prepare(self, out, log) -> None:
        _need_sbatch()
        warn_if_local(out, "SLURM", log)

    def _executor(self, out):
        options = self.options
        executor = self.submitit.SlurmExecutor(folder=out / "slurm" / "%j", max_num_timeout=10)
        params = {
            "job_name": "classbalanced-sweep",
            "time": options.slurm_time,
            "cpus_per_task": options.cpus_per_run,
            "array_parallelism": options.slurm_array_parallelism,
            "additional_parameters": dict(options.slurm_options),
        }
        if options.slurm_partition:
            params["partition"] = options.slurm_partition
        if options.gpus_per_run:
            params["gpus_per_node"] = int(options.gpus_per_run)
        executor.update_parameters(**params)
        return executor

    def run(self, tasks, log):
        from ._slurm_task import SweepTask  # optional: it imports submitit

        if not tasks:
            return []
        executor = self._executor(Path(tasks[0].out))
        jobs = _sbatch(executor.map_array, SweepTask(), tasks)
        log(f"submitted SLURM array {jobs[0].job_id.split('_')[0]} ({len(jobs)} task(s))")
        wait_for_jobs(jobs, log=log)
        outcomes = []
        for task, job in zip(tasks, jobs, strict=True):
            if not job.paths.result_pickle.exists():  # never ask submitit: it would wait on sacct
                outcomes.append(Outcome(task.name, "failed", line=_job_failure(job)))
                continue
            try:
                outcomes.append(Outcome(**job.result()))
            except Exception as exc:  # the task raised: report it, the sweep goes on
                line = " ".join(str(exc).split())[:300]
                outcomes.append(Outcome(task.name, "failed", line=f"SLURM task failed: {line}"))
        return outcomes


def warn_if_local(out, engine: str, log) -> None:
    """Say so when the sweep folder is obviously local to this machine (tmpfs, /tmp)."""
    out = Path(out).absolute()
    kind = _filesystem(out)
    if kind in ("tmpfs", "ramfs") or out.parts[1:2] in (("tmp",), ("dev",)):
        log(
            f"warning: the sweep folder {out} is {kind or 'local'} storage of this machine; "
            f"{engine} workers on other nodes will not see it: put it on storage every node "
            "shares (fine for a one-node cluster)"
        )


def _filesystem(path) -> str | None:
    """The file system type of the mount that holds ``path`` (Linux), else None."""
    try:
        mounts = [line.split() for line in open("/proc/self/mounts", encoding="utf-8")]
    except OSError:
        return None
    best, kind = "", None
    for fields in mounts:
        mount = fields[1]
        inside = str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")
        if len(fields) > 2 and inside and len(mount) >= len(best):
            best, kind = mount, fields[2]
    return kind


def submit_training(
    command: list[str],
    *,
    nodes: int = 1,
    gpus_per_node: int = 0,
    procs_per_node: int | None = None,
    cpus_per_node: int = 1,
    partition: str | None = None,
    time_minutes: int = 60,
    options: dict[str, str] | None = None,
    logs: str | None = None,
    wait: bool = True,
    log=print,
) -> int:
    """Submit ``classbalanced train ...`` as one SLURM job of ``nodes`` nodes, each running
    torchrun with ``procs_per_node`` processes (default: its GPUs, at least 1).

    Returns 0 once submitted (``wait=False``), else the exit status of the training.
    """
    if not command or command[0] != "train":
        raise ValueError(f"submit runs `train ...` after --, got {' '.join(command) or 'nothing'}")
    for flag, value in (("--nodes", nodes), ("--cpus-per-node", cpus_per_node)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{flag} must be an integer >= 1, got {value!r}")
    if gpus_per_node < 0:
        raise ValueError(f"--gpus-per-node must be >= 0, got {gpus_per_node}")
    procs = procs_per_node or max(1, gpus_per_node)
    submitit = require("submitit", "slurm", "the slurm launcher")
    _need_sbatch()
    from ._slurm_task import DistributedTrain  # optional: it imports submitit

    folder = Path(logs or "runs/slurm").absolute()
    executor = submitit.SlurmExecutor(folder=folder / "%j", max_num_timeout=10)
    params = {
        "job_name": "classbalanced-train",
        "nodes": nodes,
        "ntasks_per_node": 1,
        "cpus_per_task": cpus_per_node,
        "time": time_minutes,
        "additional_parameters": dict(options or {}),
    }
    if partition:
        params["partition"] = partition
    if gpus_per_node:
        params["gpus_per_node"] = gpus_per_node
    executor.update_parameters(**params)
    with _removed_if_refused(folder):
        job = _sbatch(executor.submit, DistributedTrain(), list(command), procs)
    log(
        f"submitted SLURM job {job.job_id}: {nodes} node(s) x {procs} process(es); logs in {folder}"
    )
    if not wait:
        return 0
    wait_for_jobs([job], log=log)
    if not job.paths.result_pickle.exists():
        log(_job_failure(job))
        return 1
    try:
        rc = job.result()
    except Exception as exc:
        log(f"SLURM job {job.job_id} failed: {' '.join(str(exc).split())[:300]}")
        return 1
    log(f"SLURM job {job.job_id} finished with exit status {rc}")
    return 1 if rc else 0
