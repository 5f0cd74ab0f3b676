"""Fixtures of the sweep / report tests (helpers live in reproduce_helpers.py)."""

from __future__ import annotations

import pytest
from reproduce_helpers import FakeLauncher


@pytest.fixture
def fake_launcher(monkeypatch):
    from classbalanced.reproduce import sweep

    def install(errors=None, default=50.0):
        launcher = FakeLauncher(errors, default)
        monkeypatch.setattr(sweep, "launch_run", launcher)
        return launcher

    return install


@pytest.fixture
def no_launch(monkeypatch):
    from classbalanced.reproduce import sweep

    def refuse(cmd, **_):
        raise AssertionError(f"no run should be launched, got {cmd}")

    monkeypatch.setattr(sweep, "launch_run", refuse)
