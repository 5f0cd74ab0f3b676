"""Mixed precision: the autocast context of ``--precision`` and its start-up warning.

The loop, the evaluators and ``decouple`` run the network under :func:`autocast`;
:func:`warn_fp16_on_cpu` is the one line a run (or an evaluation) in fp16 on the
CPU gets.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from ..config import PRECISIONS, Precision

__all__ = ["autocast", "warn_fp16_on_cpu"]


def autocast(device: torch.device, precision: Precision):
    """``torch.autocast`` for ``bf16`` / ``fp16``, nothing for ``fp32`` (anything else is one
    ValueError line).

    >>> with autocast(torch.device("cpu"), "bf16"):
    ...     torch.ones(2, 2) @ torch.ones(2, 2)
    tensor([[2., 2.],
            [2., 2.]], dtype=torch.bfloat16)
    >>> autocast(torch.device("cpu"), "fp8")
    Traceback (most recent call last):
    ValueError: expected a precision in fp32, bf16, fp16, got 'fp8'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"expected a precision in {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def warn_fp16_on_cpu(
    precision: Precision, device: torch.device, log: Callable[[str], Any], whose: str = ""
) -> None:
    """Give ``log`` one start-up line for fp16 autocast on the CPU (nothing otherwise):
    PyTorch's CPU kernels for float16 are many times slower than float32 (bf16's are fast).
    ``whose``: where the precision comes from, when not ``--precision``.

    >>> warn_fp16_on_cpu("fp16", torch.device("cpu"), print)
    warning: --precision fp16 on the CPU is very slow (float16 autocast runs many times slower there than fp32); use bf16 or fp32 on the CPU
    >>> warn_fp16_on_cpu("bf16", torch.device("cpu"), print)
    >>> warn_fp16_on_cpu("fp16", torch.device("meta"), print)
    """
    if precision == "fp16" and device.type == "cpu":
        log(
            f"warning: {whose or '--precision'} fp16 on the CPU is very slow (float16 autocast "
            "runs many times slower there than fp32); use bf16 or fp32 on the CPU"
        )
