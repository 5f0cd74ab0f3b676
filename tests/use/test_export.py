"""``classbalanced export``: TorchScript, ONNX (checked with onnxruntime), safetensors."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

import classbalanced as cb
from classbalanced import cli

EXPORT_EXTRA = "pip install 'classbalanced[export]'"
needs = {
    name: pytest.mark.skipif(
        importlib.util.find_spec(name) is None, reason=f"needs {name}: {EXPORT_EXTRA}"
    )
    for name in ("onnx", "onnxscript", "onnxruntime", "safetensors")
}


@pytest.fixture(scope="module")
def model_and_images(use_run):
    model = cb.load_run(use_run.out)
    files = sorted(use_run.test.glob("*/*.png"))[::7][:64]
    x = model.preprocess(files)
    assert x.shape[0] == 64
    with torch.no_grad():
        return model, files, x, model.model(x)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_matches_the_model(use_run, model_and_images, tmp_path):
    model, _, x, expected = model_and_images
    out = tmp_path / "m.pt"
    assert (
        cli.main(["export", str(use_run.out), "--format", "torchscript", "--output", str(out)]) == 0
    )
    scripted = torch.jit.load(str(out))
    assert (scripted(x) - expected).abs().max() <= 1e-5
    assert scripted(x[:3]).shape == (3, 10)  # dynamic batch axis
    adjusted = tmp_path / "a.pt"
    args = ["export", str(use_run.out), "--format", "torchscript", "--output", str(adjusted)]
    assert cli.main([*args, "--adjust-tau", "1.5"]) == 0
    want = cb.post_hoc_logit_adjustment(expected, model.train_counts, 1.5)
    assert (torch.jit.load(str(adjusted))(x) - want).abs().max() <= 1e-5


@needs["onnx"]
@needs["onnxscript"]
@needs["onnxruntime"]
def test_onnx_matches_the_model_in_onnxruntime(use_run, model_and_images, tmp_path):
    import onnx
    import onnxruntime

    from classbalanced.use import ONNX_OPSET

    _, _, x, expected = model_and_images
    out = tmp_path / "m.onnx"
    assert cli.main(["export", str(use_run.out), "--format", "onnx", "--output", str(out)]) == 0
    graph = onnx.load(str(out))
    assert any(o.domain in ("", "ai.onnx") and o.version == ONNX_OPSET for o in graph.opset_import)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    (logits,) = session.run(None, {name: x.numpy()})
    assert float((torch.from_numpy(logits) - expected).abs().max()) <= 1e-4
    (few,) = session.run(None, {name: x[:5].numpy()})  # dynamic batch axis
    assert few.shape == (5, 10)


@needs["safetensors"]
def test_safetensors_round_trip(use_run, model_and_images, tmp_path):
    model, files, _, _ = model_and_images
    out = tmp_path / "m.safetensors"
    assert (
        cli.main(["export", str(use_run.out), "--format", "safetensors", "--output", str(out)]) == 0
    )
    assert (tmp_path / "m.safetensors.json").is_file()
    again = cb.load_run(out)
    assert again.class_names == model.class_names and again.train_counts == model.train_counts
    assert torch.equal(again.logits(files), model.logits(files))
    a, b = again.predict(files), model.predict(files)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.probabilities, b.probabilities)
    assert again.run_folder is None  # no run folder to keep predict's output out of
    written = tmp_path / "p.csv"
    assert cli.main(["predict", str(out), *map(str, files[:3]), "--output", str(written)]) == 0
    assert len(written.read_text().splitlines()) == 4


def test_missing_extra_is_one_line(use_run, tmp_path, monkeypatch, capsys):
    # the first package of the extra that is missing is named (onnx itself where the
    # extra is not installed at all: README command 1's environment)
    missing = "onnxscript" if importlib.util.find_spec("onnx") is not None else "onnx"
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import fails as if not installed
    out = tmp_path / "m.onnx"
    code = cli.main(["export", str(use_run.out), "--format", "onnx", "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and EXPORT_EXTRA in err[0]
    assert f"optional package {missing!r}" in err[0]
    assert not out.exists()
