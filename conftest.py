"""Collection of the package's doctests (``--doctest-modules``) where an extra is missing.

A module that must import an optional engine at its top (its classes subclass the
engine's types) cannot be imported without it: it is left out of the doctest
collection where the engine is not installed, with the reason, so that
``python -m pytest -q`` passes after ``pip install -e '.[test]'`` alone.
"""

import importlib.util

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
