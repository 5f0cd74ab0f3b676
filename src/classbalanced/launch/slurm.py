"""SLURM through submitit: one job-array task per run (``--launcher slurm``), and one
multi-node DDP training run (``classbalanced submit``).

Needs ``pip install 'classbalanced[slurm]'`` (submitit) on the submitting machine
and the same Python environment on the nodes. The sweep folder must live on
storage every node shares: each task first checks that it sees a probe file the
launcher wrote (and fails with that message otherwise).
"""

from __future__ import annotations

import re

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
