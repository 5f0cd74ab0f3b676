"""Where runs execute: this machine, a Ray cluster or a SLURM cluster.

* :mod:`.claims`: atomic run claims with heartbeats on a shared sweep folder;
* :mod:`.runner`: one run, wherever it executes (claim, train, record);
* :mod:`.local`: ``jobs`` runs at a time on this machine (the default);
* :mod:`.ray_pool`: one Ray task per run (``pip install 'classbalanced[ray]'``);
* :mod:`.slurm`: one SLURM job-array task per run through submitit, and one
  multi-node DDP run (``pip install 'classbalanced[slurm]'``);
* :mod:`.sweep`: a sweep's plan through a launcher; ``--status``;

A launcher is an object with ``name``, ``owner(session, run_name)`` (the claim
owner of a run's task: a task the engine retries or requeues keeps its owner, so
it takes its own claim over at once) and ``run(tasks, log) -> outcomes``; optional
``prepare(out, log)`` (checks before anything is written) and ``probe`` (a file
name under the sweep folder each worker must see). The engines do the scheduling.
Launchers are registered (:func:`register_launcher`, a :class:`~classbalanced.registry.Registry`
like the losses, models and data sets) with the flags they read; ``--launcher`` lists them.
This module imports the launchers; none of them imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..registry import Registry
from .local import LocalLauncher
from .ray_pool import RayLauncher
from .slurm import SlurmLauncher

__all__ = [
    "LAUNCHER_REGISTRY",
    "LaunchOptions",
    "available_launchers",
    "check_launch_flags",
    "make_launcher",
    "register_launcher",
]


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


#: launcher name -> factory taking :class:`LaunchOptions` (a
#: :class:`~classbalanced.registry.Registry`); ``info[name]["options"]`` are the
#: :class:`LaunchOptions` flags it reads (a flag for another launcher is refused, never ignored)
LAUNCHER_REGISTRY: Registry[Callable[[LaunchOptions], Any]] = Registry("launcher")


def register_launcher(
    name: str,
    factory: Callable[[LaunchOptions], Any] | None = None,
    *,
    options: Iterable[str] = (),
    description: str = "",
) -> Any:
    """Register ``factory(options) -> launcher`` as ``--launcher name`` (a call or a decorator).

    ``options`` names the ``sweep`` flags it reads (dest names, e.g. ``"ray_address"``);
    ``description`` is its line in ``--help``.
    """
    return LAUNCHER_REGISTRY.register(
        name, factory, options=frozenset(options), description=description
    )


def available_launchers() -> list[str]:
    """Valid ``--launcher`` names, in registration order.

    >>> available_launchers()
    ['local', 'ray', 'slurm']
    """
    return LAUNCHER_REGISTRY.names()


def _check_launcher(name: str) -> None:
    if name not in LAUNCHER_REGISTRY:
        raise ValueError(f"--launcher must be one of {', '.join(LAUNCHER_REGISTRY)}, got {name!r}")


def make_launcher(name: str, options: LaunchOptions):
    """The launcher called ``name`` (one of :func:`available_launchers`)."""
    _check_launcher(name)
    return LAUNCHER_REGISTRY[name](options)


def check_launch_flags(launcher: str, given: dict) -> None:
    """Refuse flags given for another launcher than ``launcher``.

    >>> check_launch_flags("local", {"ray_address": "head:6379"})
    Traceback (most recent call last):
    ValueError: --ray-address does not apply to --launcher local (it is for --launcher ray)
    """
    _check_launcher(launcher)
    applies = {k: info["options"] for k, info in LAUNCHER_REGISTRY.info.items()}
    for name in given:
        if name not in applies[launcher]:
            owners = " or ".join(k for k, v in applies.items() if name in v)
            flag = "--" + name.replace("_", "-")
            raise ValueError(
                f"{flag} does not apply to --launcher {launcher} (it is for --launcher {owners})"
            )


@register_launcher("local", options={"jobs"}, description="this machine, the default")
def _local(options: LaunchOptions):
    return LocalLauncher(options.jobs)


@register_launcher(
    "ray", options={"gpus_per_run", "cpus_per_run", "ray_address"}, description="a Ray cluster"
)
def _ray(options: LaunchOptions):
    return RayLauncher(options)


@register_launcher(
    "slurm",
    options={"gpus_per_run", "cpus_per_run", "slurm_partition", "slurm_time"}
    | {"slurm_array_parallelism", "slurm_option"},
    description="SLURM job arrays",
)
def _slurm(options: LaunchOptions):
    return SlurmLauncher(options)
