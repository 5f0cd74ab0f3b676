"""Weighted softmax / sigmoid / focal losses, the class-balanced loss, and its helpers.

The functional losses (Cui et al., CVPR 2019, section 4, as the authors'
TensorFlow release computes them).

Semantics (batch of ``N`` examples, ``C`` classes, per-class weight ``w``):

* softmax: ``L = (1/N) * sum_b w[y_b] * CE(softmax(z_b), y_b)``; the mean divides
  by ``N``, every example counted, whatever its weight. (The release's
  ``tf.losses.softmax_cross_entropy`` divides by the number of *non-zero*
  weights; its class-balanced weights are all > 0, so the two agree unless a
  user weight is exactly 0.)
* sigmoid: ``L = sum_{b,j} w_b * BCE(z_bj, t_bj) / #positives``;
* focal: ``L = sum_{b,j} w_b * (1 - p_t)**gamma * BCE(z_bj, t_bj) / #positives``
  with ``p_t = sigmoid(z)`` for ``t = 1`` and ``1 - sigmoid(z)`` for ``t = 0``.

The example weight ``w_b`` is ``w[y_b]`` for class-index targets; for multi-hot
(or soft) targets it is the label-mass-weighted mean of the weights of the
example's labels, ``w_b = (t_b @ w) / sum_j t_bj``, and the mean class weight
``mean(w)`` for an example without any positive label (see
:func:`sigmoid_cross_entropy` for the reason).

Everything is computed in log space (``log sigmoid(z) = min(z, 0) - log1p(e^-|z|)``),
so the loss and its gradient are finite and exact for every finite logit, in
float32 (float64 for float64 logits) whatever the logits' precision:
half-precision logits are up-cast, so results match float32 at any logit
magnitude. Second derivatives (``create_graph=True``, gradient penalties,
meta-learning) are exact too, also under ``torch.func`` transforms (``grad``,
``vmap``, ``hessian``; pass ``validate_args=False`` under ``vmap``); the losses
compile with ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

from typing import get_args

import torch
from torch import Tensor

from .._validation import check_choice, check_gamma
from ..weights import class_balanced_weights
from .checks import (
    check_logits,
    check_num_classes,
    check_targets,
    check_weight,
    compute_dtype,
    full_precision,
    reduce_loss,
)
from .kernels import focal_elements, index_focal_per_example
from .softmax import ClassShift, softmax_ce_rows
from .types import LossType, Reduction

__all__ = [
    "LOSS_TYPES",
    "REDUCTIONS",
    "DEFAULT_GAMMA",
    "softmax_cross_entropy",
    "sigmoid_cross_entropy",
    "sigmoid_focal_cross_entropy",
    "class_balanced_loss",
    "loss_of_type",
    "weighted_ce",
]

LOSS_TYPES: tuple[LossType, ...] = get_args(LossType)
REDUCTIONS: tuple[Reduction, ...] = get_args(Reduction)
#: the focal exponent every loss of this package defaults to
DEFAULT_GAMMA = 1.0


def _dense_row_weight(targets: Tensor, weight: Tensor) -> Tensor:
    """``(t_b @ w) / sum_j t_bj`` per example, ``mean(w)`` for rows without positives."""
    mass = targets.sum(1)
    has_labels = mass > 0
    safe_mass = torch.where(has_labels, mass, torch.ones_like(mass))
    return torch.where(has_labels, (targets * weight).sum(1) / safe_mass, weight.mean())


def _binary_loss(
    logits, targets, weight, gamma: float, reduction: Reduction, validate: bool
) -> Tensor:
    logits = check_logits(logits)
    targets, dense = check_targets(targets, logits, allow_dense=True, validate=validate)
    weight = check_weight(weight, logits, validate)
    check_choice("reduction", reduction, REDUCTIONS)
    z = logits.to(compute_dtype(logits))
    with full_precision(z):
        if dense:
            per_example = focal_elements(z, targets, gamma).sum(1)
            row_weight = None if weight is None else _dense_row_weight(targets, weight)
            positives = targets.sum()
            normalizer = torch.where(positives > 0, positives, torch.ones_like(positives))
        else:
            per_example = index_focal_per_example(z, targets, gamma)
            row_weight = None if weight is None else weight[targets]
            normalizer = max(z.shape[0], 1)
        if row_weight is not None:
            per_example = per_example * row_weight
        return reduce_loss(per_example, reduction, normalizer)


def softmax_cross_entropy(
    logits: Tensor,
    targets: Tensor,
    weight: Tensor | None = None,
    *,
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> Tensor:
    """Softmax cross-entropy weighted per example by the weight of its true class.

    ``loss_b = w[y_b] * (logsumexp(z_b) - z_{b, y_b})``; ``"mean"`` divides the sum
    by ``N`` (every example, also one whose weight is 0), ``"sum"`` sums,
    ``"none"`` returns ``(N,)``.

    Args:
        logits: ``(N, C)`` floating tensor (half precision is computed in float32).
        targets: ``(N,)`` integer class indices in ``[0, C)``.
        weight: optional ``(C,)`` non-negative per-class weights (default all
            ones); a weight that requires grad receives its gradient.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        validate_args: check the values of ``targets`` and ``weight`` (one
            host read each on the CPU); ``False`` skips these checks (shapes and
            types are always checked).

    Returns:
        A scalar (or ``(N,)`` for ``"none"``) in float32, float64 for float64 logits.

    >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    >>> softmax_cross_entropy(logits, torch.tensor([0, 1]), torch.tensor([1.0, 3.0]), reduction="none")
    tensor([0.1269, 0.9398])
    """
    logits = check_logits(logits)
    targets, _ = check_targets(targets, logits, allow_dense=False, validate=validate_args)
    weight = check_weight(weight, logits, validate_args)
    check_choice("reduction", reduction, REDUCTIONS)
    z = logits.to(compute_dtype(logits))
    with full_precision(z):
        return weighted_ce(z, targets, weight, reduction)


def weighted_ce(
    z: Tensor,
    targets: Tensor,
    weight: Tensor | None,
    reduction: Reduction,
    shift: ClassShift | None = None,
) -> Tensor:
    """``w[y_b] * CE(z_b + shift, y_b)`` reduced over ``N`` (inputs already validated), exact
    when ``y_b`` wins by any margin (:func:`~classbalanced.losses.softmax.softmax_ce_rows`)."""
    per_example = softmax_ce_rows(z, targets, shift)
    if weight is not None:
        per_example = per_example * weight[targets]
    return reduce_loss(per_example, reduction, max(z.shape[0], 1))


def sigmoid_cross_entropy(
    logits: Tensor,
    targets: Tensor,
    weight: Tensor | None = None,
    *,
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> Tensor:
    """One-vs-all sigmoid cross-entropy over all ``C`` logits, weighted per example.

    ``loss_b = w_b * sum_j BCE(z_bj, t_bj)`` with ``BCE(z, t) = softplus(z) - t z``;
    ``"mean"`` divides the sum by the number of positive labels (``N`` for class
    indices, ``targets.sum()`` for multi-hot, 1 if there are none).

    Example weight ``w_b``: ``w[y_b]`` for class indices (the paper's rule); for
    multi-hot or soft targets ``w_b = (t_b @ w) / sum_j t_bj``, the mean weight
    of the example's labels, and ``mean(w)`` for an example without labels. So a
    one-hot row gets exactly ``w[y_b]``, equal weights ``c`` give ``c`` times
    the unweighted loss (``beta = 0`` gives the unweighted loss exactly), and
    neither an all-negative example (no class of its own) nor an example with
    many labels is silenced or multiplied by its label count.

    Args:
        logits: ``(N, C)`` floating tensor.
        targets: ``(N,)`` integer class indices, or ``(N, C)`` multi-hot in ``[0, 1]``
            (float, also soft labels, bool or integer, e.g. ``F.one_hot(y, C)``).
        weight: optional ``(C,)`` non-negative per-class weights (gradients
            flow to a weight that requires grad).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(N,)`` per-example sums).
        validate_args: see :func:`softmax_cross_entropy`.

    >>> sigmoid_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 2]))  # 3 * log(2)
    tensor(2.0794)
    """
    return _binary_loss(logits, targets, weight, 0.0, reduction, validate_args)


def sigmoid_focal_cross_entropy(
    logits: Tensor,
    targets: Tensor,
    weight: Tensor | None = None,
    *,
    gamma: float = DEFAULT_GAMMA,
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> Tensor:
    """Sigmoid focal loss ``(1 - p_t)**gamma * BCE`` over all ``C`` logits, weighted per example.

    Same shapes, weighting and normalisation as :func:`sigmoid_cross_entropy`, to
    which it reduces at ``gamma = 0``. Unlike ``torchvision.ops.sigmoid_focal_loss``
    it takes class indices (or multi-hot), a per-class ``weight`` instead of
    ``alpha``, and ``"mean"`` divides by the number of positives. Finite and
    exact for every finite logit and every ``gamma >= 0`` (also its gradient
    for ``gamma < 1``): a positive label with logit ``-100`` contributes ``100``
    at ``gamma = 1``, not ``0``.

    >>> sigmoid_focal_cross_entropy(torch.tensor([[-100.0]]), torch.tensor([0]), gamma=1.0)
    tensor(100.)
    """
    gamma = check_gamma(gamma)
    return _binary_loss(logits, targets, weight, gamma, reduction, validate_args)


def loss_of_type(
    loss_type: LossType, logits, targets, weight, gamma: float, reduction: Reduction, validate: bool
):
    """The ``"softmax"``, ``"sigmoid"`` or ``"focal"`` loss (``gamma`` for focal only)."""
    if loss_type == "softmax":
        return softmax_cross_entropy(
            logits, targets, weight, reduction=reduction, validate_args=validate
        )
    return _binary_loss(
        logits, targets, weight, gamma if loss_type == "focal" else 0.0, reduction, validate
    )


def class_balanced_loss(
    logits: Tensor,
    targets: Tensor,
    samples_per_class,
    *,
    beta: float,
    loss_type: LossType,
    gamma: float = DEFAULT_GAMMA,
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> Tensor:
    """Class-balanced loss: ``loss_type`` re-weighted by ``(1 - beta) / (1 - beta**n_y)``.

    The per-class weights are :func:`classbalanced.weights.class_balanced_weights`
    (normalised to sum to ``C``; in float64 for float64 logits); each example is
    weighted by its true class's weight (Cui et al., 2019, eq. 6-9). ``beta = 0``
    gives the unweighted loss.

    Args:
        logits: ``(N, C)``; targets: ``(N,)`` class indices (or ``(N, C)`` multi-hot
            for ``"sigmoid"`` / ``"focal"``, weighted as in :func:`sigmoid_cross_entropy`);
        samples_per_class: ``(C,)`` counts > 0 (list, numpy array or tensor);
        beta: in ``[0, 1)``; loss_type: ``"softmax"``, ``"sigmoid"`` or ``"focal"``;
        gamma: focal exponent ``>= 0`` (``"focal"`` only); reduction: ``"mean"``,
            ``"sum"`` or ``"none"``; validate_args: see :func:`softmax_cross_entropy`.

    >>> logits = torch.tensor([[1.0, -1.0], [0.5, 0.5]])
    >>> class_balanced_loss(logits, torch.tensor([0, 1]), [100, 10], beta=0.0, loss_type="softmax")
    tensor(0.4100)
    """
    check_choice("loss_type", loss_type, LOSS_TYPES)
    gamma = check_gamma(gamma)
    logits = check_logits(logits)
    weight = class_balanced_weights(samples_per_class, beta, dtype=compute_dtype(logits))
    check_num_classes(weight.shape[0], logits)
    return loss_of_type(loss_type, logits, targets, weight, gamma, reduction, validate_args)
