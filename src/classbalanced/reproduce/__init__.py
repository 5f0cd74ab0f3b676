"""Reproducing the paper: its published numbers, sweeps of runs, and reports against them.

* :mod:`.published`: Table 2 / Table 3 / later work as data (``published.json``);
* :mod:`.sweep`: grids of runs from a TOML file, resumable, K at a time (``classbalanced sweep``);
* :mod:`.report`: ``report.md`` comparing a sweep with the paper (``classbalanced report``).

The CLI registers the subcommands with :func:`add_sweep_parser` and :func:`add_report_parser`.
"""

from .published import (
    IMBALANCE_FACTORS,
    later_work,
    paper_cb_setting,
    published_error,
    published_large,
    table2,
    table3,
)
from .report import add_report_parser, write_report
from .sweep import add_sweep_parser, expand_sweep, load_sweep, run_sweep

__all__ = [
    "IMBALANCE_FACTORS",
    "table2",
    "table3",
    "later_work",
    "published_error",
    "published_large",
    "paper_cb_setting",
    "load_sweep",
    "expand_sweep",
    "run_sweep",
    "write_report",
    "add_sweep_parser",
    "add_report_parser",
]
