"""A trained classifier read back from a run folder (or an exported ``.safetensors``).

:func:`load_run` reads a run as ``classbalanced evaluate`` does
(:func:`~classbalanced.engine.evaluate.read_trained_run`: the checkpoint's SHA-256
checked against ``run.json`` before it is unpickled, weights only, the newest valid
checkpoint unless one is named), from any directory and without the training data.
:class:`TrainedClassifier` predicts on images in every form of :mod:`.inputs`, batched
(never one image at a time), under the run's precision.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._validation import check_positive_int
from ..config import TrainConfig
from ..engine.distributed import resolve_device
from ..engine.evaluate import autocast, check_checkpoint_fits, load_weights, read_trained_run
from ..engine.network import build_network
from ..losses import post_hoc_logit_adjustment
from .inputs import Preprocess, as_items

__all__ = ["DEFAULT_TOP_K", "Prediction", "TrainedClassifier", "load_run", "SIDECAR_SUFFIX"]

#: classes per image when ``top_k`` is not given (fewer when the run has fewer classes)
DEFAULT_TOP_K = 5

#: the JSON file written next to an exported ``.safetensors`` (``model.safetensors.json``)
SIDECAR_SUFFIX = ".json"
SIDECAR_FORMAT = "classbalanced-model"


@dataclass
class Prediction:
    """The ``k`` most probable classes of ``N`` images: ``indices (N, k)`` int64,
    ``names`` (N lists of k class names), ``probabilities (N, k)`` float32 (softmax of
    the (adjusted) logits, in decreasing order)."""

    indices: Tensor
    names: list[list[str]]
    probabilities: Tensor


class TrainedClassifier:
    """A run's network (``model``: eval mode, the run's architecture and weights) with its
    ``class_names``, ``train_counts``, ``config`` and evaluation transform."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        counts: list[int],
        record: dict[str, Any],
        source: Path,
        device: torch.device,
    ) -> None:
        self.model = model.eval().to(device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.config, self.record, self.source, self.device = cfg, record, source, device
        self.class_names: list[str] = list(record["class_names"])
        self.train_counts: list[int] = [int(c) for c in counts]
        self._preprocess = Preprocess(cfg, record)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def run_folder(self) -> Path | None:
        """The run folder the weights came from (``None``: an exported ``.safetensors``)."""
        source = Path(self.source)
        return source.parent.parent if source.parent.name == "checkpoints" else None

    @property
    def preprocessor(self) -> Preprocess:
        return self._preprocess

    def preprocess(self, images: Any) -> Tensor:
        """Float ``(N, C, H, W)``: exactly the run's evaluation transform (see :mod:`.inputs`)."""
        return self._preprocess(images)

    @torch.no_grad()
    def forward(self, batch: Tensor, adjust_tau: float = 0.0) -> Tensor:
        """float32 logits ``(N, C)`` of a preprocessed batch, under the run's precision;
        ``adjust_tau`` > 0 subtracts ``tau * log(prior)`` (the run's training counts)."""
        x = batch.to(self.device, non_blocking=True)
        if self.config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.config.precision):
            logits = self.model(x)
        logits = logits.float()
        if adjust_tau:
            logits = post_hoc_logit_adjustment(logits, self.train_counts, adjust_tau)
        return logits

    def logits(
        self, images: Any, *, adjust_tau: float = 0.0, batch_size: int | None = None
    ) -> Tensor:
        """float32 logits ``(N, C)`` of ``images``, ``batch_size`` at a time (default: the
        run's evaluation batch size)."""
        items = as_items(images, self._preprocess.image_shape)
        size = check_positive_int("batch_size", batch_size or self.config.eval_batch_size)
        out = [
            self.forward(self._preprocess(items[i : i + size]), adjust_tau)
            for i in range(0, len(items), size)
        ]
        if not out:
            raise ValueError("expected at least one image, got none")
        return torch.cat(out)

    def predict(
        self,
        images: Any,
        *,
        top_k: int | None = None,
        adjust_tau: float = 0.0,
        batch_size: int | None = None,
    ) -> Prediction:
        """The ``top_k`` most probable classes of each image (``top_k`` at most the number
        of classes; default 5, or the number of classes when fewer)."""
        k = self.check_top_k(top_k)
        return self.top_k(self.logits(images, adjust_tau=adjust_tau, batch_size=batch_size), k)

    def check_top_k(self, top_k: int | None) -> int:
        """``top_k`` checked (``None``: :data:`DEFAULT_TOP_K`, at most the number of classes)."""
        if top_k is None:
            return min(DEFAULT_TOP_K, self.num_classes)
        top_k = check_positive_int("top_k", top_k)
        if top_k > self.num_classes:
            raise ValueError(
                f"expected top_k at most the run's {self.num_classes} classes, got {top_k}"
            )
        return top_k

    def top_k(self, logits: Tensor, k: int) -> Prediction:
        """The :class:`Prediction` of logits ``(N, C)``."""
        probabilities, indices = torch.softmax(logits.float(), dim=1).topk(k, dim=1)
        names = [[self.class_names[i] for i in row] for row in indices.tolist()]
        return Prediction(indices.cpu(), names, probabilities.cpu())

    def __repr__(self) -> str:
        return (
            f"TrainedClassifier({self.config.model}, {self.num_classes} classes, "
            f"from {self.source}, on {self.device})"
        )


def load_run(
    run_dir: str | Path, *, checkpoint: str | Path | None = None, device: str = "cpu"
) -> TrainedClassifier:
    """The classifier of a finished run: ``run_dir`` a run folder (its newest valid
    checkpoint, or ``checkpoint``: a file in ``run_dir/checkpoints`` by name or path), a
    checkpoint file of a run, or a ``.safetensors`` written by ``classbalanced export``
    (with its JSON sidecar). ``device``: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.

    >>> load_run("no/such/run")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: no run folder or checkpoint at ...
    """
    target = resolve_device(device, 0)
    path = Path(run_dir)
    if path.suffix == ".safetensors":
        return _load_safetensors(path, target)
    if checkpoint is not None:  # a bare file name is one of run_dir/checkpoints
        named = Path(checkpoint)
        path = named if named.parent != Path(".") else path / "checkpoints" / named
    trained = read_trained_run(path, use="name that checkpoint to load it")
    return TrainedClassifier(
        trained.model, trained.cfg, trained.counts, trained.record, trained.checkpoint, target
    )


def sidecar(cfg: TrainConfig, counts: Iterable[int], record: dict, checkpoint: Path) -> dict:
    """What ``load_run`` needs besides the weights (the sidecar of an exported model)."""
    return {
        "format": SIDECAR_FORMAT,
        "version": 1,
        "config": cfg.to_dict(),
        "architecture": cfg.model,
        "class_names": list(record["class_names"]),
        "train_counts": [int(c) for c in counts],
        "preprocessing": {
            k: record.get(k) for k in ("in_channels", "image_shape", "normalization")
        },
        "checkpoint": str(checkpoint),
    }


def _load_safetensors(path: Path, device: torch.device) -> TrainedClassifier:
    from ..use.export import require  # one line naming the extra when it is missing

    load_file = require("safetensors.torch", "safetensors").load_file
    meta_path = path.with_name(path.name + SIDECAR_SUFFIX)
    for p in (path, meta_path):
        if not p.is_file():
            raise FileNotFoundError(
                f"{p} is missing: expected the .safetensors file and its JSON sidecar"
            )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != SIDECAR_FORMAT:
            raise ValueError(f"expected format {SIDECAR_FORMAT!r}, got {meta.get('format')!r}")
        cfg = TrainConfig.from_dict(meta["config"], source=str(meta_path))
        record = {"class_names": meta["class_names"], **meta["preprocessing"]}
        counts = meta["train_counts"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"cannot read {meta_path}: {' '.join(str(exc).split())}") from None
    try:
        weights = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types on a damaged file
        raise ValueError(f"cannot load {path}: {' '.join(str(exc).split())[:200]}") from None
    check_checkpoint_fits({"config": meta["config"]}, cfg, record["class_names"], str(path))
    model = build_network(cfg, counts, record["in_channels"])
    load_weights(model, weights, str(path))
    return TrainedClassifier(model, cfg, counts, record, path, device)
