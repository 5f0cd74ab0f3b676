"""``--sync-bn``: batch-norm statistics over the global batch of all processes."""

from __future__ import annotations

import warnings

import torch
from torch import nn

__all__ = ["sync_batchnorm"]


def sync_batchnorm(
    model: nn.Module, *, world_size: int, device: torch.device, name: str = "the model"
) -> nn.Module:
    """Every ``BatchNorm`` layer of ``model`` as ``nn.SyncBatchNorm`` (the same parameters
    and buffers, so the same ``state_dict`` keys and checkpoints).

    With several processes the statistics of each step are those of the global batch;
    PyTorch's ``SyncBatchNorm`` synchronises CUDA tensors only, so that needs CUDA. With
    one process (``world_size`` 1) the model is converted all the same (the modules are
    those of a multi-GPU run) but there is nothing to synchronise: ``SyncBatchNorm``
    without a process group normalises with this process's batch, exactly as
    ``BatchNorm``; a warning says so. A model without batch norm is one ValueError line
    naming it (``name``, e.g. ``"model simple_cnn"``): the option would be silently ignored.

    >>> import warnings
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     net = sync_batchnorm(net, world_size=1, device=torch.device("cpu"))
    >>> type(net[1]).__name__, "one process" in str(caught[0].message)
    ('SyncBatchNorm', True)
    >>> sync_batchnorm(nn.Linear(2, 2), world_size=1, device=torch.device("cpu"))
    Traceback (most recent call last):
    ...
    ValueError: --sync-bn synchronises batch-norm layers, and the model has none: expected a model with batch norm (e.g. resnet32), or no --sync-bn
    """
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ValueError(
            f"--sync-bn synchronises batch-norm layers, and {name} has none: expected a "
            "model with batch norm (e.g. resnet32), or no --sync-bn"
        )
    if world_size > 1 and device.type != "cuda":
        raise ValueError(f"--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm), got {device}")
    if world_size == 1:
        warnings.warn(
            "--sync-bn with one process: nothing to synchronise, batch-norm statistics are "
            "this process's batch (as without --sync-bn); launch with torchrun to share them",
            stacklevel=2,
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)
