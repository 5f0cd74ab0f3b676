"""Boundary checks and the steps every loss shares (compute dtype, autocast off, reduction).

One-line "expected X, got Y" errors for logits, targets and weights. Checks
that need the *values* (class indices in range, targets in [0, 1], weights
finite and >= 0) read one number on the host for CPU tensors and run on the
device (``torch._assert_async``) elsewhere, so a training step never waits; they
are skipped under ``torch.compile`` and with ``validate_args=False``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .types import Reduction

__all__ = [
    "check_logits",
    "check_num_classes",
    "check_targets",
    "check_weight",
    "check_weight_type",
    "compiling",
    "compute_dtype",
    "full_precision",
    "reduce_loss",
]


def compiling() -> bool:
    return torch.compiler.is_compiling()


def check_logits(logits: object) -> Tensor:
    if not isinstance(logits, Tensor):
        raise TypeError(
            f"logits must be a torch.Tensor of shape (N, C), got {type(logits).__name__}"
        )
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    if logits.dim() != 2 or logits.shape[1] < 1:
        raise ValueError(
            f"logits must have shape (N, C) with C >= 1, got shape {tuple(logits.shape)}"
        )
    return logits


def compute_dtype(logits: Tensor) -> torch.dtype:
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def _host_checks(tensor: Tensor) -> bool:
    """Data-dependent checks read values on the host only for CPU tensors (no GPU sync)."""
    return tensor.device.type == "cpu"


def _check_values(
    tensor: Tensor,
    valid: Callable[[Any, Any], Any],
    message: Callable[[Any, Any], str],
) -> None:
    """Raise ``ValueError(message(low, high))`` unless ``valid(low, high)`` holds for the
    tensor's smallest and largest value (NaN fails every comparison, so it is invalid).

    ``valid`` works on Python numbers and on 0-d tensors. CPU tensors: one host read of
    both values, compared in Python. On accelerators the check runs on the device
    (``_assert_async``, message without values), so a training step never waits for the host.
    """
    low, high = torch.aminmax(tensor.detach() if tensor.requires_grad else tensor)
    if _host_checks(tensor):
        lo, hi = low.item(), high.item()
        if not valid(lo, hi):
            raise ValueError(message(lo, hi))
    else:
        torch._assert_async(valid(low, high), message(None, None))


def _check_index_targets(targets: Tensor, logits: Tensor, validate: bool) -> Tensor:
    n, c = logits.shape
    if targets.dim() != 1 or targets.shape[0] != n:
        raise ValueError(
            f"class-index targets must have shape (N,) = ({n},) to match logits {tuple(logits.shape)}, "
            f"got shape {tuple(targets.shape)}"
        )
    targets = targets.long()  # first: torch has no aminmax for uint16 / uint32 / uint64
    if validate and n > 0:

        def message(low, high) -> str:
            bad = "" if low is None else f", got {int(low) if low < 0 else int(high)}"
            return f"targets must be class indices in [0, {c - 1}]{bad}"

        _check_values(targets, lambda low, high: (low >= 0) & (high < c), message)
    return targets


def _check_dense_targets(targets: Tensor, logits: Tensor, validate: bool) -> Tensor:
    if targets.shape != logits.shape:
        raise ValueError(
            f"multi-hot targets must have the logits' shape {tuple(logits.shape)}, got shape {tuple(targets.shape)}"
        )
    dense = targets.to(compute_dtype(logits))
    if validate and dense.numel() > 0:

        def message(low, high) -> str:
            got = "" if low is None else f", got values in [{low}, {high}]"
            return f"multi-hot targets must lie in [0, 1]{got}"

        _check_values(dense, lambda low, high: (low >= 0) & (high <= 1), message)
    return dense


def check_targets(
    targets: object, logits: Tensor, *, allow_dense: bool, validate: bool = True
) -> tuple[Tensor, bool]:
    """Return (targets, is_dense): integer ``(N,)`` class indices, or (``allow_dense``)
    ``(N, C)`` multi-hot of any real dtype (float, bool or integer, e.g. ``F.one_hot``)."""
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    if targets.device != logits.device:
        raise ValueError(
            f"targets must be on the logits' device {logits.device}, got targets on {targets.device}"
        )
    if targets.is_complex():
        raise TypeError(f"targets must be class indices or multi-hot, got dtype {targets.dtype}")
    is_integer = not targets.is_floating_point() and targets.dtype != torch.bool
    if is_integer and (targets.dim() != 2 or not allow_dense):
        return _check_index_targets(targets, logits, validate and not compiling()), False
    if not allow_dense:
        raise TypeError(
            f"targets must be int64 class indices of shape (N,), got dtype {targets.dtype}"
        )
    if targets.dim() != 2:
        raise TypeError(
            "targets must be int64 class indices of shape (N,) or multi-hot of shape (N, C), "
            f"got dtype {targets.dtype} with shape {tuple(targets.shape)}"
        )
    return _check_dense_targets(targets, logits, validate and not compiling()), True


def check_weight_type(weight: object) -> Tensor:
    """A per-class weight must be a real tensor (a complex one's imaginary part would be dropped)."""
    if not isinstance(weight, Tensor):
        raise TypeError(
            f"weight must be a tensor of shape (C,) or None, got {type(weight).__name__}"
        )
    if weight.is_complex():
        raise TypeError(f"weight must hold real numbers, got dtype {weight.dtype}")
    return weight


def check_weight(weight: object, logits: Tensor, validate: bool = True) -> Tensor | None:
    """``(C,)`` weights in the compute dtype; gradients flow to a weight that requires them."""
    if weight is None:
        return None
    weight = check_weight_type(weight)
    c = logits.shape[1]
    if weight.dim() != 1 or weight.shape[0] != c:
        raise ValueError(
            f"weight must have one entry per class, shape ({c},) for logits {tuple(logits.shape)}, "
            f"got shape {tuple(weight.shape)}"
        )
    weight = weight.to(device=logits.device, dtype=compute_dtype(logits))
    if validate and not compiling():
        _check_values(
            weight,
            lambda low, high: (low >= 0) & (high < float("inf")),
            lambda low, high: (
                "weight must hold finite values >= 0, got a negative or non-finite entry"
            ),
        )
    return weight


def full_precision(z: Tensor):
    """Disable autocast so the loss is computed (and reduced) in float32 / float64."""
    if torch.is_autocast_enabled(z.device.type):
        return torch.autocast(device_type=z.device.type, enabled=False)
    return contextlib.nullcontext()


def reduce_loss(per_example: Tensor, reduction: Reduction, normalizer: Tensor | int) -> Tensor:
    if reduction == "none":
        return per_example
    total = per_example.sum()
    if reduction == "sum":
        return total
    return total / normalizer


def check_num_classes(num_counts: int, logits: Tensor) -> None:
    if num_counts != logits.shape[1]:
        raise ValueError(
            f"samples_per_class must have one count per class: expected {logits.shape[1]} counts "
            f"for logits {tuple(logits.shape)}, got {num_counts}"
        )
