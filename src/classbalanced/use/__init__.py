"""After training: load a run's classifier, predict, export, adjust its logits post hoc.

Reads run folders through the engine's reader
(:func:`~classbalanced.engine.evaluate.read_trained_run`); the engine never imports it.

* :mod:`.trained` -- :func:`load_run`, :class:`TrainedClassifier`, :class:`Prediction`;
* :mod:`.inputs` -- images in every form, through the run's evaluation transform;
* :mod:`.predict` -- ``classbalanced predict``: files, folders, npz -> CSV / JSONL + metrics;
* :mod:`.export` -- TorchScript, ONNX, safetensors;
* :mod:`.adjust` -- post-hoc logit adjustment, tau chosen on a validation set.
"""

from .adjust import TAU_GRID, choose_tau, evaluate_adjusted
from .export import EXPORT_FORMATS, ONNX_OPSET, export_model
from .predict import predict_files
from .trained import Prediction, TrainedClassifier, load_run

__all__ = [
    "EXPORT_FORMATS",
    "ONNX_OPSET",
    "Prediction",
    "TAU_GRID",
    "TrainedClassifier",
    "choose_tau",
    "evaluate_adjusted",
    "export_model",
    "load_run",
    "predict_files",
]
