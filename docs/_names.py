"""Whether a dotted name exists: shared by the Sphinx config (conf.py) and the docs tests
(tests/docs/test_docs_match_code.py), which must not need Sphinx."""

from __future__ import annotations

import importlib


def importable(dotted: str) -> bool:
    """Whether ``dotted`` (``classbalanced.losses.comparison``, ``...Criterion``) names a
    module, or an attribute reached from the longest importable module prefix."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False
