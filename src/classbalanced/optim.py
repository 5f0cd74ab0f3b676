"""Optimiser helpers: weight-decay parameter groups and the SGD of a run."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.optim import optimizer as torch_optimizer

__all__ = ["parameter_groups", "build_sgd", "SGD_IMPLS"]

#: ``--sgd-impl``: PyTorch's default choice, the multi-tensor (foreach) or the fused kernel
SGD_IMPLS = ("default", "foreach", "fused")


_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def parameter_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    no_decay: Iterable[Tensor | str] = (),
    bias_and_norm: bool = False,
) -> list[dict]:
    """Split trainable parameters into a weight-decay group and a no-decay group.

    Args:
        model: the network.
        weight_decay: decay of the first group (the second has 0).
        no_decay: parameters (or their names in ``model.named_parameters()``)
            to exclude, e.g. ``[model.fc.bias]`` for sigmoid/focal losses.
        bias_and_norm: also exclude every bias and all normalisation-layer
            parameters (the ImageNet/iNaturalist recipe).

    Returns:
        ``[{"params": [...], "weight_decay": weight_decay}, {"params": [...], "weight_decay": 0.0}]``
        for ``torch.optim`` (an empty group is kept so indices are stable).

    >>> net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Linear(2, 3))
    >>> groups = parameter_groups(net, 1e-4, no_decay=[net[2].bias])
    >>> [len(g["params"]) for g in groups]
    [5, 1]
    >>> [len(g["params"]) for g in parameter_groups(net, 1e-4, bias_and_norm=True)]
    [2, 4]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"expected a finite weight_decay >= 0, got {weight_decay}")
    excluded_ids = set()
    names = dict(model.named_parameters())
    own = {id(p) for p in names.values()}
    for item in no_decay:
        if isinstance(item, str):
            if item not in names:
                raise ValueError(f"no_decay names an unknown parameter {item!r}")
            excluded_ids.add(id(names[item]))
        elif isinstance(item, Tensor):
            if id(item) not in own:  # e.g. of a copy of the model: it would decay all the same
                raise ValueError(
                    f"no_decay holds a tensor of shape {tuple(item.shape)} that is not a parameter of the model"
                )
            excluded_ids.add(id(item))
        else:
            raise TypeError(
                f"no_decay entries must be parameters or names, got {type(item).__name__}"
            )
    if bias_and_norm:
        for module in model.modules():
            for pname, param in module.named_parameters(recurse=False):
                if isinstance(module, _NORM_TYPES) or pname == "bias":
                    excluded_ids.add(id(param))
    decay: list[nn.Parameter] = []
    skip: list[nn.Parameter] = []
    for param in model.parameters():
        if param.requires_grad:
            (skip if id(param) in excluded_ids else decay).append(param)
    return [
        {"params": decay, "weight_decay": float(weight_decay)},
        {"params": skip, "weight_decay": 0.0},
    ]


def build_sgd(
    groups, *, lr: float, momentum: float, nesterov: bool = False, impl: str = "default"
) -> torch.optim.SGD:
    """``torch.optim.SGD`` over ``groups`` with the implementation ``impl``.

    ``default`` leaves the choice to PyTorch (foreach on CUDA, a loop over the parameters
    on the CPU); ``foreach`` updates all parameters with a few multi-tensor kernels;
    ``fused`` with one kernel per step. All three compute the same update
    (``v = momentum * v + g + wd * p``, ``p -= lr * v``) up to the rounding of fused
    multiply-adds. A device the fused kernel does not support is one ValueError line
    (PyTorch itself would fail only at the first step).

    >>> p = nn.Parameter(torch.ones(3))
    >>> opt = build_sgd([{"params": [p], "weight_decay": 0.0}], lr=0.1, momentum=0.9, impl="fused")
    >>> p.grad = torch.ones(3); opt.step(); [round(v, 6) for v in p.tolist()]
    [0.9, 0.9, 0.9]
    """
    if impl not in SGD_IMPLS:
        raise ValueError(f"expected an SGD implementation in {', '.join(SGD_IMPLS)}, got {impl!r}")
    kwargs = {} if impl == "default" else {impl: True}
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, **kwargs)
    if impl == "fused":  # PyTorch checks only at the first step, deep in a run: check now
        devices = torch_optimizer._get_fused_kernels_supported_devices()  # torch's own list
        params = [p for group in optimizer.param_groups for p in group["params"]]
        bad = sorted({f"{p.dtype} on {p.device}" for p in params if not _fused_ok(p, devices)})
        if bad:
            raise ValueError(
                f"--sgd-impl fused needs floating-point parameters on {', '.join(devices)}, "
                f"got {', '.join(bad)}: use --sgd-impl foreach"
            )
    return optimizer


def _fused_ok(param: Tensor, devices: list[str]) -> bool:
    return param.device.type in devices and param.is_floating_point()
