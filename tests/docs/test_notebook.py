"""examples/effective_number.ipynb: stored without outputs, and runs top to bottom."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "effective_number.ipynb"


def _code_cells(nb: dict) -> list[dict]:
    return [cell for cell in nb["cells"] if cell["cell_type"] == "code"]


def test_notebook_is_stored_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    cells = _code_cells(nb)
    assert cells, "the notebook has no code cell"
    for i, cell in enumerate(cells):
        assert cell["outputs"] == [], f"code cell {i} is stored with outputs"
        assert cell["execution_count"] is None, f"code cell {i} is stored with an execution count"


def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    missing = [
        m for m in ("nbclient", "nbformat", "ipykernel") if importlib.util.find_spec(m) is None
    ]
    if missing:
        msg = f"the docs extra is not installed (missing {', '.join(missing)}): pip install -e '.[docs]'"
        print(f"SKIPPED: {msg}")
        pytest.skip(msg)
    import nbclient
    import nbformat

    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # raises CellExecutionError (with the cell and its traceback) if any cell fails,
    # including the notebook's own checks (E_n <= n, weights summing to C, ...)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = [out for cell in _code_cells(nb) for out in cell["outputs"]]
    assert not [out for out in outputs if out["output_type"] == "error"]
    figures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(figures) >= 5, f"expected the 5 figures of the notebook, got {len(figures)}"
    text = "".join(out.get("text", "") for out in outputs if out["output_type"] == "stream")
    assert "CIFAR-100-LT    200   500     2" in text  # tail class of CIFAR-100-LT at IF 200
    assert "class-balanced focal" in text and "few-shot" in text
    assert list(tmp_path.iterdir()) == [], "the notebook wrote files"
