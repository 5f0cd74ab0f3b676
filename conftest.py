"""Collection of the package's doctests (``--doctest-modules``) where an extra is missing,
and the list of what was skipped, for CI's second part (``.ci/run``).

A module that must import an optional engine at its top (its classes subclass the
engine's types) cannot be imported without it: it is left out of the doctest
collection where the engine is not installed, with the reason, so that
``python -m pytest -q`` passes after ``pip install -e '.[test]'`` alone.
"""

import importlib.util
import os
from pathlib import Path

#: module file -> (the engine it imports, the extra that installs it)
NEEDS_ENGINE = {
    "src/classbalanced/launch/_slurm_task.py": ("submitit", "slurm"),
}

collect_ignore = [
    path for path, (engine, _) in NEEDS_ENGINE.items() if importlib.util.find_spec(engine) is None
]


def pytest_report_header(config):
    return [
        f"not collected: {path} (imports {engine}: pip install -e '.[{extra}]')"
        for path, (engine, extra) in NEEDS_ENGINE.items()
        if path in collect_ignore
    ]


def pytest_terminal_summary(terminalreporter, config):
    """With ``CLASSBALANCED_SKIPPED_TO=FILE``: write the ids of the skipped tests and the
    modules left out above to FILE, one a line (.ci/run runs them once the extras are in)."""
    target = os.environ.get("CLASSBALANCED_SKIPPED_TO")
    if not target:
        return
    ids = {report.nodeid for report in terminalreporter.stats.get("skipped", [])}
    ids.update(collect_ignore)
    Path(target).write_text("".join(f"{i}\n" for i in sorted(ids) if i), encoding="utf-8")
