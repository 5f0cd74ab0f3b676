"""Fixtures of the sweep / report tests (they live in reproduce_helpers.py); the sweep
processes these tests start are built by tests/launch/launch_helpers.py, as the cluster
tests' are."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "launch"))
from reproduce_helpers import fake_launcher, no_launch  # noqa: F401
