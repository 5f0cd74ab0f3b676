"""Ship a trained classifier: TorchScript, ONNX or safetensors.

TorchScript and ONNX graphs take a float batch ``(N, C, H, W)`` already preprocessed
(:meth:`TrainedClassifier.preprocess`) and return float32 logits ``(N, num_classes)``;
the batch axis is dynamic. With ``adjust_tau`` the graph subtracts
``tau * log(prior)`` (the run's training counts) from the logits
(:class:`~classbalanced.losses.LogitAdjustment`). ONNX is written at opset
:data:`ONNX_OPSET` by torch's default exporter. ``safetensors`` writes the weights and a
JSON sidecar ``FILE.json`` (architecture, class names, training counts, preprocessing,
config) that :func:`~classbalanced.use.load_run` reads back.

ONNX and safetensors need the optional extra ``pip install 'classbalanced[export]'``
(onnx, onnxscript, onnxruntime, safetensors), imported only here and only when used.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .._optional import require
from ..files import atomic_save, atomic_write_json
from ..losses import LogitAdjustment
from .trained import SIDECAR_SUFFIX, TrainedClassifier, sidecar

__all__ = ["EXPORT_FORMATS", "ONNX_OPSET", "export_model"]

EXPORT_FORMATS = ("torchscript", "onnx", "safetensors")
ONNX_OPSET = 18


class _Logits(nn.Module):
    """float32 logits of the network (adjusted when ``tau`` > 0): what the graphs compute."""

    def __init__(self, classifier: TrainedClassifier, tau: float) -> None:
        super().__init__()
        model = classifier.model.to("cpu").eval()
        self.net = LogitAdjustment(model, classifier.train_counts, tau) if tau else model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).float()


def _example(classifier: TrainedClassifier) -> torch.Tensor:
    shape = classifier.preprocessor.image_shape
    if shape is None:  # prepared image files: the run's crop size
        size = classifier.config.image_size or 224
        return torch.zeros(2, 3, size, size)
    return torch.zeros(2, shape[2], shape[0], shape[1])


def export_model(
    classifier: TrainedClassifier,
    fmt: str,
    output: str | os.PathLike,
    *,
    adjust_tau: float = 0.0,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``classifier`` as ``fmt`` (one of :data:`EXPORT_FORMATS`) to ``output``
    atomically; return the files written. An existing file is refused without
    ``overwrite``; a missing optional package is one line naming the extra."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"expected a format in {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    out = Path(output)
    targets = [out, out.with_name(out.name + SIDECAR_SUFFIX)] if fmt == "safetensors" else [out]
    for target in targets:
        if target.is_dir():
            raise ValueError(f"--output {target} is a folder: expected a file path")
        if target.exists() and not overwrite:
            raise ValueError(f"{target} exists: pass --overwrite to replace it")
    if fmt == "safetensors" and adjust_tau:
        raise ValueError(
            "--adjust-tau applies to a graph (torchscript, onnx); a safetensors file holds "
            "weights only: pass adjust_tau to predict after load_run instead"
        )
    if fmt == "onnx":
        require("onnx", "export", "ONNX export")
        require("onnxscript", "export", "ONNX export")
    if fmt == "safetensors":
        save_file = require("safetensors.torch", "export", "safetensors export").save_file
    out.parent.mkdir(parents=True, exist_ok=True)
    module = _Logits(classifier, adjust_tau).eval()
    example = _example(classifier)
    try:
        if fmt == "torchscript":
            with warnings.catch_warnings():  # torch >= 2.9 calls TorchScript deprecated
                warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning))
                scripted = torch.jit.trace(module, example, check_trace=False)
                atomic_save(out, lambda tmp: torch.jit.save(scripted, tmp))
        elif fmt == "onnx":
            atomic_save(out, lambda tmp: _write_onnx(module, example, tmp))
        else:
            weights = {
                k: v.detach().cpu().contiguous() for k, v in classifier.model.state_dict().items()
            }
            atomic_save(out, lambda tmp: save_file(weights, tmp))
            c = classifier
            atomic_write_json(targets[1], sidecar(c.config, c.train_counts, c.record, c.source))
    finally:
        classifier.model.to(classifier.device)
    return targets


def _write_onnx(module: nn.Module, example: torch.Tensor, path: str) -> None:
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        module,
        (example,),
        dynamo=True,
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes={"x": {0: batch}},
        opset_version=ONNX_OPSET,
        external_data=False,
        verbose=False,
    )
    program.save(path)  # type: ignore[union-attr]  # None only without dynamo=True
