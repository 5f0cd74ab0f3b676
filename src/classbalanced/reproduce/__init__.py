"""Reproducing the paper: its published numbers, sweeps of runs, and reports against them.

* :mod:`.published`: Table 2 / Table 3 / later work as data (``published.json``);
* :mod:`.sweep`: grids of runs from a TOML file, their names and the sweep folder's plan;
* :mod:`.results`: run states, ``results.csv`` written and read;
* :mod:`.report`: ``report.md`` comparing a sweep with the paper (``classbalanced report``);
* :mod:`.decoupling`: its section on ``classbalanced decouple`` runs beside Kang et al.

Imports go one way: ``report`` and ``sweep`` use ``results``, never each other.
Running a sweep is :func:`classbalanced.launch.sweep.run_sweep` (``classbalanced sweep``).
"""

from .published import (
    IMBALANCE_FACTORS,
    later_work,
    paper_cb_setting,
    published_decoupling,
    published_error,
    published_large,
    table2,
    table3,
)
from .report import write_report
from .results import collect_results, load_results, write_results_csv
from .sweep import expand_sweep, load_sweep, plan_sweep

__all__ = [
    "IMBALANCE_FACTORS",
    "table2",
    "table3",
    "later_work",
    "published_error",
    "published_large",
    "published_decoupling",
    "paper_cb_setting",
    "load_sweep",
    "expand_sweep",
    "plan_sweep",
    "collect_results",
    "load_results",
    "write_results_csv",
    "write_report",
]
