"""Checkpoints: round trip with weights_only, keep-K retention, refusals, crash-safe writes."""

from __future__ import annotations

import hashlib
import os
import pickle

import pytest
import torch

from classbalanced.engine import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from classbalanced.engine.checkpoint import CorruptCheckpoint, write_checkpoint


def _state(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(5, 4, generator=gen)).sum().backward()
    opt.step()
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "history": [{"epoch": 2, "accuracy": 0.25, "many_shot_accuracy": None}],
        "train_seconds": 1.5,
        "config": {"lr": 0.1, "decay_epochs": [160, 180], "out": "runs/x"},
    }


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_round_trip_is_exact_and_uses_weights_only(tmp_path, monkeypatch):
    state = _state()
    path = save_checkpoint(tmp_path, 17, state)
    assert path.name == "checkpoint-00000017.pt"

    seen = {}
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    loaded = load_checkpoint(path)
    assert seen.get("weights_only") is True
    assert loaded["global_step"] == 17
    for key, value in state.items():
        assert _same(loaded[key], value), key
    # the loaded weights really restore a model
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    model.load_state_dict(loaded["model"])
    assert torch.equal(model[0].weight, state["model"]["0.weight"])


def test_only_the_last_k_remain_sorted_by_step(tmp_path):
    # 99999999 -> 100000000 crosses a digit boundary: numeric, not lexicographic order
    steps = [3, 12, 99_999_999, 100_000_000, 100_000_001]
    for step in steps:
        save_checkpoint(tmp_path, step, _state(step % 7), keep=3)
    kept = list_checkpoints(tmp_path)
    assert [int(p.stem.split("-")[1]) for p in kept] == steps[-3:]
    assert _files(tmp_path) == sorted(p.name for p in kept)  # nothing else left behind
    assert latest_checkpoint(tmp_path).name == "checkpoint-100000001.pt"
    assert load_checkpoint(latest_checkpoint(tmp_path))["global_step"] == 100_000_001
    save_checkpoint(tmp_path, 100_000_002, _state(), keep=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-100000002.pt"]


def test_listing_ignores_other_files(tmp_path):
    save_checkpoint(tmp_path, 5, _state(), keep=5)
    (tmp_path / "checkpoint-7.pt").write_bytes(b"x")  # too few digits: not ours
    (tmp_path / "notes.txt").write_text("mine")
    save_checkpoint(tmp_path, 6, _state(), keep=1)
    assert _files(tmp_path) == ["checkpoint-00000006.pt", "checkpoint-7.pt", "notes.txt"]
    assert latest_checkpoint(tmp_path).name == "checkpoint-00000006.pt"


def _one_line_value_error(path) -> str:
    with pytest.raises(ValueError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_a_file_that_is_not_a_checkpoint_gives_a_one_line_value_error(tmp_path):
    torch_file = tmp_path / "weights.pt"
    torch.save({"a": torch.zeros(2)}, torch_file)  # a valid torch file, not a checkpoint
    assert "not a classbalanced checkpoint" in _one_line_value_error(torch_file)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    _one_line_value_error(tmp_path / "list.pt")
    text = tmp_path / "text.pt"
    text.write_text("hello\nworld\n")
    _one_line_value_error(text)


@pytest.mark.parametrize("keep_fraction", [0.0, 0.3, 0.9])
def test_a_truncated_checkpoint_gives_a_value_error(tmp_path, keep_fraction):
    path = save_checkpoint(tmp_path, 1, _state())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    _one_line_value_error(path)


def test_a_missing_checkpoint_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "checkpoint-00000001.pt")


class _Payload:
    """Unpickling this would create a file: weights_only must refuse it."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_a_checkpoint_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint-00000001.pt"
    torch.save({"model": {}, "format_version": 1, "x": _Payload(marker)}, path, pickle_protocol=2)
    assert not marker.exists()
    _one_line_value_error(path)
    assert not marker.exists()
    # and a plain pickle (not a torch zip file) with the same trick
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    _one_line_value_error(raw)
    assert not marker.exists()


def test_a_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    previous = _state(1)
    first = save_checkpoint(tmp_path, 10, previous, keep=1)
    before = first.read_bytes()
    real_save = torch.save

    def crash_midway(obj, f, *args, **kwargs):
        # write part of a real checkpoint to the target, then die
        real_save(obj, f, *args, **kwargs)
        target = f if isinstance(f, (str, os.PathLike)) else f.name
        size = os.path.getsize(target)
        with open(target, "r+b") as handle:
            handle.truncate(size // 2)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, 20, _state(2), keep=1)
    monkeypatch.undo()

    assert _files(tmp_path) == ["checkpoint-00000010.pt"]  # no temp file, no step-20 file
    assert first.read_bytes() == before
    loaded = load_checkpoint(latest_checkpoint(tmp_path))
    assert loaded["global_step"] == 10
    assert _same(loaded["model"], previous["model"])


def test_a_crash_with_an_interrupt_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    first = save_checkpoint(tmp_path, 1, _state(1), keep=2)

    def interrupted(obj, f, *args, **kwargs):
        target = f if isinstance(f, (str, os.PathLike)) else f.name
        with open(target, "wb") as handle:
            handle.write(b"PK\x03\x04partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, _state(2), keep=2)
    monkeypatch.undo()
    assert _files(tmp_path) == [first.name]
    assert load_checkpoint(first)["global_step"] == 1


def test_a_refused_checkpoint_never_suggests_unpickling_it(tmp_path):
    path = tmp_path / "checkpoint-00000001.pt"
    torch.save({"model": {}, "format_version": 1, "x": _Payload(tmp_path / "p")}, path)
    message = _one_line_value_error(path)
    assert "weights_only" not in message and "trust" not in message
    assert "could run code" in message


def test_flipped_bits_are_caught_by_the_checksum_before_unpickling(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint-00000001.pt"
    digest = write_checkpoint(path, 1, _state())
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_checkpoint(path, sha256=digest)["global_step"] == 1
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit
    path.write_bytes(bytes(data))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("unpickled a corrupt file"))
    with pytest.raises(CorruptCheckpoint, match="SHA-256"):
        load_checkpoint(path, sha256=digest)


def test_rotation_never_removes_the_checkpoint_it_just_wrote(tmp_path):
    # a resume from an older checkpoint (--fallback-checkpoint past a corrupt newest one,
    # whose step the run has not reached again) with fewer checkpoints kept than before
    from classbalanced.engine.run_folder import Manifest, RunFolder

    folder = RunFolder(tmp_path, Manifest(tmp_path), writer=True, resuming=True)
    for step in (10, 30):
        folder.save_checkpoint(step, _state(step), keep=5)
    new = folder.save_checkpoint(20, _state(20), keep=1)
    assert load_checkpoint(new, sha256=folder.manifest.checkpoint_sha(new))["global_step"] == 20
    # the older one goes; the later one stays until the run writes that step again
    assert _files(tmp_path / "checkpoints") == [new.name, "checkpoint-00000030.pt"]
    plain = tmp_path / "plain"
    for step in (10, 30):
        save_checkpoint(plain, step, _state(step), keep=5)
    assert load_checkpoint(save_checkpoint(plain, 20, _state(20), keep=1))["global_step"] == 20
    assert _files(plain) == ["checkpoint-00000020.pt", "checkpoint-00000030.pt"]


def test_a_checkpoint_of_another_format_version_names_both_versions(tmp_path):
    from classbalanced.engine.checkpoint import FORMAT_VERSION

    path = tmp_path / "checkpoint-00000001.pt"
    torch.save({**_state(), "format_version": FORMAT_VERSION + 1}, path)
    message = _one_line_value_error(path)
    assert f"format_version {FORMAT_VERSION + 1}" in message
    assert f"expected format_version {FORMAT_VERSION}" in message


def test_a_forced_resume_steps_with_the_configs_hyperparameters_and_the_saved_momentum(tmp_path):
    from classbalanced.config import TrainConfig
    from classbalanced.engine.state import TrainState
    from classbalanced.models import build_model
    from classbalanced.optim import build_sgd, parameter_groups

    cfg = TrainConfig(dataset="digits", model="simple_cnn")

    def model_and_sgd(weight_decay, momentum, nesterov):
        model = build_model("simple_cnn", 3, in_channels=1)
        groups = parameter_groups(model, weight_decay, no_decay=[model.fc.bias])
        return model, build_sgd(groups, lr=0.1, momentum=momentum, nesterov=nesterov)

    model, sgd = model_and_sgd(2e-4, 0.9, False)
    model(torch.randn(4, 1, 8, 8)).sum().backward()
    sgd.step()
    path = tmp_path / "checkpoint-00000001.pt"
    write_checkpoint(path, 1, TrainState().to_checkpoint(model, sgd, cfg, ["a", "b", "c"]))
    # --resume --force --weight-decay 0.5 --momentum 0.5 --nesterov: the new values apply
    model, sgd = model_and_sgd(0.5, 0.5, True)
    TrainState.from_checkpoint(load_checkpoint(path), model, sgd, cfg, ["a", "b", "c"], "x")
    assert [g["weight_decay"] for g in sgd.param_groups] == [0.5, 0.0]
    assert {(g["momentum"], g["nesterov"]) for g in sgd.param_groups} == {(0.5, True)}
    saved = load_checkpoint(path)["optimizer"]["state"]
    for i, p in enumerate(model.parameters()):
        assert torch.equal(sgd.state[p]["momentum_buffer"], saved[i]["momentum_buffer"])
