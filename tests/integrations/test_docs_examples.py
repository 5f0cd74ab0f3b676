"""Every ```python block of docs/integrations.md runs as written, section by section in one
namespace each, and ends in the state its comments state."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import classbalanced as cb

PAGE = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"


def blocks(section: str) -> list[str]:
    text = PAGE.read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def run(section: str, capsys) -> tuple[dict, str]:
    namespace: dict = {}
    found = blocks(section)
    for block in found:
        exec(compile(block, f"{PAGE}: {section}", "exec"), namespace)
    return namespace, capsys.readouterr().out


def test_transformers_examples_run(tmp_path, monkeypatch, capsys):
    for name in ("transformers", "datasets", "accelerate"):
        pytest.importorskip(name, reason="needs the [transformers] extra")
    assert len(blocks("Hugging Face Transformers")) == 2
    monkeypatch.chdir(tmp_path)  # the example's output_dir="out"
    namespace, out = run("Hugging Face Transformers", capsys)
    assert namespace["counts"].tolist() == [16, 6, 2]
    assert namespace["trainer"].state.epoch == 3 and namespace["trainer"].state.global_step == 9
    expected = cb.class_balanced_weights([16, 6, 2], 0.999)
    torch.testing.assert_close(namespace["loss_func"].weight, expected)
    bias = namespace["model"].classifier.bias
    assert out.splitlines()[0] == "tensor([16,  6,  2])" and bias.shape == (3,)


def test_lightning_example_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("lightning.pytorch", reason="needs the [lightning] extra")
    assert len(blocks("PyTorch Lightning")) == 1
    monkeypatch.chdir(tmp_path)
    namespace, _ = run("PyTorch Lightning", capsys)
    assert namespace["trainer"].current_epoch == 4  # after the last epoch
    expected = cb.class_balanced_weights([30, 8, 2], 0.999)
    torch.testing.assert_close(namespace["model"].loss.weight, expected)
