"""Helpers and fixtures of the docs tests: build the API reference site (needs the docs extra)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
DOCS_MODULES = ("sphinx", "furo", "myst_parser", "latex2mathml")


def require_docs_extra() -> None:
    missing = [m for m in DOCS_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        msg = f"the docs extra is not installed (missing {', '.join(missing)}): pip install -e '.[docs]'"
        print(f"SKIPPED: {msg}")
        pytest.skip(msg)


def build_site(source: Path, out: Path) -> subprocess.CompletedProcess:
    """The documented build command: strict (-W -n), every problem reported (--keep-going)."""
    cmd = [sys.executable, "-m", "sphinx", "-W", "-n", "--keep-going", "-q", "-b", "html"]
    return subprocess.run(
        [*cmd, str(source), str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The built site (a folder of HTML); the build must pass strictly."""
    require_docs_extra()
    out = tmp_path_factory.mktemp("site")
    result = build_site(DOCS, out)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@pytest.fixture
def docs_copy(tmp_path) -> Path:
    """A copy of docs/ to break on purpose (conf.py finds src/ through ROOT)."""
    require_docs_extra()
    target = tmp_path / "docs"
    shutil.copytree(DOCS, target, ignore=shutil.ignore_patterns("_build"))
    conf = target / "conf.py"
    line = "ROOT = Path(__file__).resolve().parents[1]"
    text = conf.read_text()
    assert line in text, f"docs/conf.py no longer sets ROOT with {line!r}"
    conf.write_text(text.replace(line, f"ROOT = Path({str(ROOT)!r})"))
    return target
