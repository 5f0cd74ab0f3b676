"""Fixtures of the sweep / report tests (they live in reproduce_helpers.py)."""

from reproduce_helpers import fake_launcher, no_launch  # noqa: F401
