"""Evaluate a trained run's checkpoint on its test set (or another one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..config import LARGE_DATASETS, TrainConfig
from ..data.arrays import load_image_folder, load_npz
from ..losses import build_loss
from ..models.registry import build_model, use_normed_classifier_
from .checkpoint import latest_checkpoint, load_checkpoint
from .distributed import DistContext, _resolve_device
from .metrics import summarize
from .trainer import _large_data, evaluate, prepare_data

__all__ = ["evaluate_run"]


def _model_for(cfg: TrainConfig, counts, in_channels: int):
    """The run's network as training built it (e.g. LDAM's cosine classifier)."""
    model = build_model(cfg.model, len(counts), in_channels=in_channels)
    if getattr(
        build_loss(cfg.loss, counts, beta=cfg.beta, gamma=cfg.gamma, **cfg.loss_options),
        "normalized_classifier",
        False,
    ):
        use_normed_classifier_(model)
    return model


def evaluate_run(
    run: str | Path, *, test_data: str | None = None, device: str = "auto"
) -> dict[str, Any]:
    """Load the latest checkpoint of ``run`` (a run folder or a checkpoint file) and evaluate it.

    The model is rebuilt from the run's saved config; the training counts (for
    the many / medium / few split) come from the run's ``subset.json``.
    """
    run = Path(run)
    if run.is_file():
        checkpoint, folder = run, run.parent.parent
    else:
        folder = run
        checkpoint = latest_checkpoint(folder / "checkpoints")
        if checkpoint is None:
            raise FileNotFoundError(
                f"no checkpoint in {folder / 'checkpoints'}: is {folder} a run folder?"
            )
    config_path, subset_path = folder / "config.json", folder / "subset.json"
    for path in (config_path, subset_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: cannot rebuild the run's model")
    cfg = TrainConfig.from_dict(
        json.loads(config_path.read_text(encoding="utf-8")), source=str(config_path)
    )
    counts = json.loads(subset_path.read_text(encoding="utf-8"))["counts"]
    target = _resolve_device(device, 0)
    state = load_checkpoint(checkpoint)
    if cfg.dataset in LARGE_DATASETS and not test_data:  # image files: the run's validation loader
        model = _model_for(cfg, counts, 3)
        model.load_state_dict(state["model"])
        model.to(target)
        metrics = summarize(_large_data(cfg, DistContext(device=target)).evaluate(model), counts)
        metrics["checkpoint"] = str(checkpoint)
        return metrics
    if test_data:
        test = (
            load_npz(test_data)
            if Path(test_data).suffix == ".npz"
            else load_image_folder(test_data, image_size=cfg.image_size)
        )
    else:
        test = prepare_data(cfg).test
    if test.num_classes != len(counts):
        raise ValueError(
            f"test set must have the run's {len(counts)} classes, got {test.num_classes}"
        )
    model = _model_for(cfg, counts, test.image_shape[2])
    model.load_state_dict(state["model"])
    model.to(target)
    images = torch.from_numpy(test.images).permute(0, 3, 1, 2).contiguous().to(target)
    labels = torch.from_numpy(test.labels).to(target)
    result = evaluate(
        model,
        images,
        labels,
        batch_size=cfg.eval_batch_size,
        precision=cfg.precision,
        ctx=DistContext(device=target),
        num_classes=len(counts),
    )
    metrics = summarize(result, counts)
    metrics["checkpoint"] = str(checkpoint)
    return metrics
