"""Process-group setup from ``torchrun``'s environment, the way torchvision's references do it.

Without ``torchrun`` (no ``WORLD_SIZE`` / ``RANK`` in the environment) everything
runs in one process: rank 0 of a world of 1, and the collectives are no-ops.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "DistContext",
    "setup_distributed",
    "choose_backend",
    "all_reduce_sum",
    "cleanup_distributed",
    "resolve_device",
]


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # the process group was made by setup_distributed (not the caller)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int) -> torch.device:
    """The device ``name`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) names for the process of
    local rank ``local_rank`` (``cuda``: its own GPU); anything else is one ValueError line
    (other torch device types, ``mps`` or ``meta``, would fail only mid-run).

    >>> resolve_device("cpu", 0)
    device(type='cpu')
    >>> resolve_device("mps", 0)
    Traceback (most recent call last):
    ...
    ValueError: expected a device auto, cpu, cuda or cuda:N, got 'mps'
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"expected a device auto, cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} requested but CUDA is not available here; use --device cpu"
            )
        index = local_rank if device.index is None else device.index
        if device.index is not None and index >= torch.cuda.device_count():
            raise ValueError(
                f"expected a GPU index below {torch.cuda.device_count()} (this machine's GPUs), "
                f"got {name!r}"
            )
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"expected at most {torch.cuda.device_count()} processes per node (one per GPU), "
                f"got local rank {index}: lower --nproc_per_node"
            )
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)
    return device


BACKENDS = ("auto", "nccl", "gloo")


def choose_backend(backend: str, device: torch.device) -> str:
    """The process-group backend: ``auto`` is NCCL on CUDA and gloo on the CPU; NCCL needs CUDA.

    >>> choose_backend("auto", torch.device("cpu")), choose_backend("gloo", torch.device("cpu"))
    ('gloo', 'gloo')
    >>> choose_backend("nccl", torch.device("cpu"))
    Traceback (most recent call last):
    ...
    ValueError: the nccl backend needs CUDA devices, got device cpu: use --dist-backend gloo (or auto)
    """
    if backend not in BACKENDS:
        raise ValueError(f"expected a backend in {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise ValueError(
            f"the nccl backend needs CUDA devices, got device {device}: use --dist-backend gloo (or auto)"
        )
    return backend


def setup_distributed(device: str = "auto", backend: str = "auto") -> DistContext:
    """Read torchrun's environment (``WORLD_SIZE`` >= 1, ``RANK`` in ``0..WORLD_SIZE-1``,
    ``LOCAL_RANK`` >= 0; anything else is one ValueError line), initialise the process group
    with ``backend`` (:func:`choose_backend`: by default NCCL on GPU, gloo on CPU) unless
    the caller already did (then that group is used, and left to the caller)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        resolved = resolve_device(device, 0)
        choose_backend(backend, resolved)  # the same checks without torchrun
        return DistContext(device=resolved)
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0, world_size - 1)
    local_rank = _env_int("LOCAL_RANK", 0, default="0")
    resolved = resolve_device(device, local_rank)
    chosen = choose_backend(backend, resolved)
    owns = world_size > 1 and not dist.is_initialized()  # else the caller's group is used
    if owns:
        dist.init_process_group(backend=chosen, device_id=resolved if chosen == "nccl" else None)
    return DistContext(rank, world_size, local_rank, resolved, owns_group=owns)


def _env_int(name: str, low: int, high: int | None = None, default: str | None = None) -> int:
    """The integer in ``low..high`` that environment variable ``name`` holds, else one line
    naming the variable, the range and the value (``RANK=1`` with ``WORLD_SIZE=1`` would
    train a rank that writes nothing; ``RANK=2`` of 2 would wait for a rank that never comes)."""
    text = os.environ.get(name, default)
    try:
        value = None if text is None else int(text)
    except (TypeError, ValueError):
        value = None
    if value is None or value < low or (high is not None and value > high):
        expected = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"
        if name == "RANK" and high is not None:
            expected += f" (WORLD_SIZE is {high + 1})"
        raise ValueError(f"expected the torchrun variable {name} to be {expected}, got {text!r}")
    return value


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (no-op on one process); returns it."""
    if ctx.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def cleanup_distributed(ctx: DistContext) -> None:
    """Destroy the process group :func:`setup_distributed` made (one the caller made is
    left to the caller), after collecting what still holds it.

    A model's ``DistributedDataParallel`` wrapper keeps the group alive and sits in
    reference cycles, so without a collection here the group (and its gloo / NCCL threads)
    would be torn down at some later collection, possibly during interpreter shutdown.
    """
    if ctx.owns_group and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
