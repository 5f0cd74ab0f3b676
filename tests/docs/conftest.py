"""Fixtures of the docs tests (they live in docs_helpers.py)."""

from docs_helpers import docs_copy, site  # noqa: F401
