"""The static type check is part of the test command (mypy, configured in pyproject.toml's
[tool.mypy]: ``python -m mypy`` from the repository root checks ``src``)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _mypy() -> list[str]:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install -e '.[dev]')")
    return [sys.executable, "-m", "mypy"]


def test_mypy_finds_no_error_in_src():
    result = subprocess.run([*_mypy()], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_fails_on_a_type_error(tmp_path):
    """The check can fail: the same configuration refuses a file with a wrong annotation."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f() -> int:\n    return 'not an int'\n")
    result = subprocess.run(
        [*_mypy(), "--config-file", str(ROOT / "pyproject.toml"), str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "bad.py:2: error" in result.stdout and "[return-value]" in result.stdout
