"""Atomic writes (classbalanced.files): a failure leaves the old file and no temporary file."""

import json
import os
from pathlib import Path

import pytest

from classbalanced.files import (
    atomic_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    file_sha256,
)


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_atomic_write_variants(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\xff")
    atomic_write_text(tmp_path / "sub" / "b.txt", "héllo")
    atomic_write_json(tmp_path / "c.json", {"z": 1, "a": [1, 2]})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\xff"
    assert (tmp_path / "sub" / "b.txt").read_text(encoding="utf-8") == "héllo"
    text = (tmp_path / "c.json").read_text()
    assert json.loads(text) == {"z": 1, "a": [1, 2]}
    assert text.index('"z"') < text.index('"a"')  # insertion order kept
    assert text.startswith('{\n  "z"')  # indent=2
    assert _leftovers(tmp_path, {"a.bin", "sub", "c.json"}) == []


def test_atomic_save_failure_keeps_old_file(tmp_path):
    target = tmp_path / "ckpt.pt"
    target.write_bytes(b"old checkpoint")

    def half_write_then_crash(tmp):
        with open(tmp, "wb") as f:
            f.write(b"new but incomplete")
        raise RuntimeError("writer crashed")

    with pytest.raises(RuntimeError, match="writer crashed"):
        atomic_save(target, half_write_then_crash)
    assert target.read_bytes() == b"old checkpoint"
    assert _leftovers(tmp_path, {"ckpt.pt"}) == []


def test_atomic_json_unserialisable_keeps_old_file(tmp_path):
    target = tmp_path / "state.json"
    target.write_text('{"ok": true}\n')
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})
    assert target.read_text() == '{"ok": true}\n'
    assert _leftovers(tmp_path, {"state.json"}) == []


def test_atomic_save_replaces_and_works_with_torch_save(tmp_path):
    import torch

    target = tmp_path / "model.pt"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    atomic_save(target, lambda tmp: torch.save({"w": torch.arange(3)}, tmp))
    assert torch.load(target)["w"].tolist() == [0, 1, 2]
    assert (os.stat(target).st_mode & 0o777) == 0o640  # mode of the replaced file kept
    assert _leftovers(tmp_path, {"model.pt"}) == []
    with pytest.raises(TypeError):
        atomic_save(target, "not callable")


def test_file_sha256_matches_hashlib_in_any_chunk_size(tmp_path):
    import hashlib

    data = bytes(range(256)) * 1000
    atomic_write_bytes(tmp_path / "blob", data)
    expected = hashlib.sha256(data).hexdigest()
    assert file_sha256(tmp_path / "blob") == expected
    assert file_sha256(tmp_path / "blob", chunk=7) == expected
