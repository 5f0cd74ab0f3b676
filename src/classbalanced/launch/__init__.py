"""Where runs execute: this machine, a Ray cluster or a SLURM cluster.

* :mod:`.claims`: atomic run claims with heartbeats on a shared sweep folder;
* :mod:`.runner`: one run, wherever it executes (claim, train, record);
* :mod:`.local`: ``jobs`` runs at a time on this machine (the default);
* :mod:`.ray_pool`: one Ray task per run (``pip install 'classbalanced[ray]'``);
* :mod:`.slurm`: one SLURM job-array task per run through submitit, and one
  multi-node DDP run (``pip install 'classbalanced[slurm]'``);
* :mod:`.sweep`: a sweep's plan through a launcher; ``--status``.

A launcher is an object with ``name``, ``owner(session, run_name)`` (the claim
owner of a run's task: a task the engine retries or requeues keeps its owner, so
it takes its own claim over at once) and ``run(tasks, log) -> outcomes``; optional
``prepare(out, log)`` (checks before anything is written) and ``probe`` (a file
name under the sweep folder each worker must see). The engines do the scheduling.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

__all__ = ["LaunchOptions", "LAUNCHERS", "make_launcher", "require", "check_launch_flags"]


@dataclass
class LaunchOptions:
    """What the ``sweep`` / ``submit`` flags say about where runs execute."""

    jobs: int = 1
    gpus_per_run: float = 0
    cpus_per_run: int = 1
    ray_address: str | None = None
    slurm_partition: str | None = None
    slurm_time: int = 60  # minutes
    slurm_array_parallelism: int = 256
    slurm_options: dict[str, str] = field(default_factory=dict)


def require(module: str, extra: str):
    """Import an optional engine, or fail with one line naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"the {extra} launcher needs the {module!r} package: "
            f"pip install 'classbalanced[{extra}]'"
        ) from None


def _local(options: LaunchOptions):
    from .local import LocalLauncher

    return LocalLauncher(options.jobs)


def _ray(options: LaunchOptions):
    from .ray_pool import RayLauncher

    return RayLauncher(options)


def _slurm(options: LaunchOptions):
    from .slurm import SlurmLauncher

    return SlurmLauncher(options)


#: launcher name -> factory taking :class:`LaunchOptions`
LAUNCHERS = {"local": _local, "ray": _ray, "slurm": _slurm}


def make_launcher(name: str, options: LaunchOptions):
    """The launcher called ``name`` (one of :data:`LAUNCHERS`)."""
    if name not in LAUNCHERS:
        raise ValueError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {name!r}")
    return LAUNCHERS[name](options)


#: the options each launcher uses (a flag for another launcher is refused, never ignored)
_APPLIES = {
    "local": {"jobs"},
    "ray": {"gpus_per_run", "cpus_per_run", "ray_address"},
    "slurm": {"gpus_per_run", "cpus_per_run", "slurm_partition", "slurm_time"}
    | {"slurm_array_parallelism", "slurm_option"},
}


def check_launch_flags(launcher: str, given: dict) -> None:
    """Refuse flags given for another launcher than ``launcher``.

    >>> check_launch_flags("local", {"ray_address": "head:6379"})
    Traceback (most recent call last):
    ValueError: --ray-address does not apply to --launcher local (it is for --launcher ray)
    """
    if launcher not in _APPLIES:
        raise ValueError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    for name in given:
        if name not in _APPLIES[launcher]:
            owners = " or ".join(k for k, v in _APPLIES.items() if name in v)
            flag = "--" + name.replace("_", "-")
            raise ValueError(
                f"{flag} does not apply to --launcher {launcher} (it is for --launcher {owners})"
            )
