"""Post-hoc logit adjustment (Menon et al., ICLR 2021) chosen on a validation set.

Predict ``argmax_y f_y(x) - tau * log(pi_y)``, ``pi`` the run's training label prior
(``cb.post_hoc_logit_adjustment``); ``tau = 0`` is the plain model. :func:`choose_tau`
picks ``tau`` on a grid ``0, 0.1, ..., 2`` by the balanced accuracy of a *validation*
set, never the test set: ``--val-data`` (an .npz or class folder), or the validation
split the run recorded in ``subset.json`` (``validation_indices`` into its training
set, written by ``train --val-fraction``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..config import TrainConfig
from ..data.arrays import ImageArrays, load_digits
from ..engine.evaluate_run import evaluate_run
from ..engine.run_data import fingerprint_arrays, load_arrays
from ..engine.run_files import read_run_json
from ..engine.run_folder import check_class_names, describe_fingerprint
from ..losses import post_hoc_logit_adjustment
from ..metrics import balanced_accuracy, confusion_matrix
from .trained import load_run

__all__ = ["TAU_GRID", "VALIDATION_KEY", "choose_tau", "evaluate_adjusted", "validation_arrays"]

#: the values of tau ``--adjust-tau auto`` tries
TAU_GRID = tuple(round(0.1 * i, 1) for i in range(21))
#: the key of ``subset.json`` naming the run's validation images (positions in its full
#: training set, held out of training by ``train --val-fraction``)
VALIDATION_KEY = "val_indices"


def _balanced_nll(logits: Tensor, labels: Tensor) -> float:
    """Mean over the classes present of the mean negative log-likelihood of their images."""
    nll = torch.nn.functional.cross_entropy(logits.double(), labels, reduction="none")
    per_class = [float(nll[labels == c].mean()) for c in labels.unique().tolist()]
    return float(np.mean(per_class))


def choose_tau(
    logits: Tensor, labels: Tensor, train_counts, grid=TAU_GRID
) -> tuple[float, dict[str, float]]:
    """The ``tau`` of ``grid`` with the highest balanced accuracy of the adjusted
    ``logits (N, C)`` on ``labels (N,)``, ties broken by the lower balanced log-loss (then
    the smaller tau); and the balanced accuracy of each tau (keys ``str(tau)``).

    >>> z = torch.tensor([[3.0, 0.0], [1.0, 0.0], [1.0, 0.0]])  # the head wins every image
    >>> choose_tau(z, torch.tensor([0, 1, 1]), [90, 10], grid=(0.0, 1.0, 2.0))
    (1.0, {'0.0': 0.5, '1.0': 1.0, '2.0': 0.5})
    """
    logits, labels = logits.float().cpu(), labels.long().cpu()
    c = logits.shape[1]
    scores: dict[str, float] = {}
    keys = []
    for tau in grid:
        adjusted = post_hoc_logit_adjustment(logits, train_counts, tau) if tau else logits
        score = float(balanced_accuracy(confusion_matrix(adjusted.argmax(1), labels, c)) or 0.0)
        scores[str(float(tau))] = score
        keys.append((score, -_balanced_nll(adjusted, labels), -float(tau)))
    return float(-max(keys)[2]), scores


def _training_arrays(cfg: TrainConfig, record: dict) -> ImageArrays:
    """The run's full training set, refused if it changed since training."""
    source = record["train"]["source"]
    if cfg.dataset == "digits":
        arrays = load_digits()[0]
    elif cfg.dataset in ("npz", "folder"):
        arrays = load_arrays(source, record.get("image_shape"))
    else:
        raise ValueError(
            f"a validation split of a {cfg.dataset} run is not read here: pass --val-data"
        )
    expected = record["train"]["fingerprint"]
    if fingerprint_arrays(arrays) != expected:
        raise ValueError(
            f"the run's training data changed since training ({source}: "
            f"{describe_fingerprint(expected)} then): its validation split cannot be rebuilt; "
            "pass --val-data"
        )
    return arrays


def validation_arrays(run_dir: Path, cfg: TrainConfig, record: dict, val_data: str | None):
    """``(arrays, where)``: ``val_data`` (an .npz or class folder with the run's classes),
    else the run's own validation split; neither: one ValueError line."""
    if val_data:
        arrays = load_arrays(val_data, record.get("image_shape"))
        check_class_names(
            record["class_names"], arrays.class_names, "the run", "the validation set"
        )
        return arrays, str(Path(val_data).absolute())
    subset = read_run_json(run_dir / "subset.json")
    indices = subset.get(VALIDATION_KEY)
    if not indices:
        raise ValueError(
            f"--adjust-tau auto needs a validation set: pass --val-data (an .npz or class "
            f"folder), or train with --val-fraction (its split in {run_dir / 'subset.json'}); "
            "tau is never chosen on the test set"
        )
    return _training_arrays(cfg, record).subset(
        indices
    ), f"{run_dir / 'subset.json'}:{VALIDATION_KEY}"


def evaluate_adjusted(
    run: str | Path,
    adjust_tau: float | str,
    *,
    val_data: str | None = None,
    device: str = "auto",
    **evaluate: Any,
) -> dict[str, Any]:
    """``evaluate_run`` with post-hoc adjustment: ``adjust_tau`` a number, or ``"auto"``:
    chosen by :func:`choose_tau` on the validation set (:func:`validation_arrays`), the
    choice recorded under ``adjust_tau_choice``."""
    if adjust_tau != "auto":
        return evaluate_run(run, device=device, adjust_tau=float(adjust_tau), **evaluate)
    classifier = load_run(run, device=device)
    folder = classifier.run_folder
    if folder is None:
        raise ValueError(f"expected a run folder or a checkpoint in one, got {run}")
    arrays, where = validation_arrays(folder, classifier.config, classifier.record, val_data)
    logits = classifier.logits(arrays.images)
    tau, scores = choose_tau(logits, torch.from_numpy(arrays.labels), classifier.train_counts)
    metrics = evaluate_run(run, device=device, adjust_tau=tau, **evaluate)
    metrics["adjust_tau_choice"] = {
        "tau": tau,
        "chosen_on": where,
        "num_validation_images": len(arrays),
        "criterion": "balanced_accuracy",
        "balanced_accuracy_by_tau": scores,
    }
    return metrics
