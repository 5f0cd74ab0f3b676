"""Class-balanced losses in Hugging Face Transformers' ``Trainer``.

``Trainer(compute_loss_func=f)`` (Transformers 4.46 and later) calls
``f(outputs, labels, num_items_in_batch=...)``, ``num_items_in_batch`` being the number of
labels (entries not equal to ``-100``) of the whole accumulated batch. The loss returned
here is the class-balanced loss of ``outputs.logits``::

    sum reduction / num_items_in_batch     when num_items_in_batch is given
    mean reduction                         when it is None

so gradient accumulation gives the gradient of one large batch. Rows labelled ``-100``
are left out. Labels are ``(N,)`` class indices, or ``(N, C)`` multi-hot rows for the
``"sigmoid"`` / ``"focal"`` losses (``problem_type="multi_label_classification"``;
Transformers then counts every entry, ``num_items_in_batch = N * C``).

* :func:`class_counts` -- examples per class of a ``datasets.Dataset`` (or a label list);
* :func:`class_balanced_loss_func` -- the ``compute_loss_func``;
* ``ReweightCallback(loss_func)`` -- a ``TrainerCallback`` that sets the weights of the
  re-weighting schedule (DRW, beta ramp) at each epoch's start; built on first use, so
  this module imports without Transformers (``pip install 'classbalanced[transformers]'``);
* :func:`init_prior_bias_` -- the prior bias on the sequence-classification head.

>>> import torch
>>> from types import SimpleNamespace
>>> f = class_balanced_loss_func([90, 10], beta=0.99, loss_type="focal", gamma=1.0)
>>> outputs = SimpleNamespace(logits=torch.tensor([[2.0, -1.0], [0.5, 0.0]]))
>>> f(outputs, torch.tensor([0, 1]))
tensor(0.8348)
>>> f(outputs, torch.tensor([0, 1]), num_items_in_batch=4)  # two more in another micro-batch
tensor(0.4174)
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor, nn

from ..losses import DEFAULT_GAMMA, ClassBalancedLoss
from ..losses import init_prior_bias_ as _init_linear_prior_bias_
from ..schedules import ReweightSchedule
from ._common import IGNORE_INDEX, class_counts, require

__all__ = [
    "HEAD_NAMES",
    "ClassBalancedLossFunc",
    "ReweightCallback",  # noqa: F822 (built on first use by __getattr__)
    "class_balanced_loss_func",
    "class_counts",
    "classification_head",
    "init_prior_bias_",
]

#: where Transformers' ``*ForSequenceClassification`` models keep their head: ``classifier``
#: (BERT, DistilBERT, ALBERT, DeBERTa, ModernBERT, ViT; RoBERTa, XLM-R and ELECTRA as
#: ``classifier.out_proj``), ``score`` (GPT-2, Llama, Mistral, Qwen), ``classification_head``
#: (BART, T5: ``.out_proj``), ``logits_proj`` (XLNet)
HEAD_NAMES = ("classifier", "score", "classification_head", "logits_proj")


def _logits(outputs) -> Tensor:
    """``outputs.logits`` of a ``ModelOutput`` / dict, the first element of a tuple, or a tensor."""
    if isinstance(outputs, Tensor):
        return outputs
    if isinstance(outputs, dict):
        logits = outputs.get("logits")
    elif isinstance(outputs, (tuple, list)):
        logits = outputs[0] if outputs else None
    else:
        logits = getattr(outputs, "logits", None)
    if not isinstance(logits, Tensor):
        raise TypeError(
            "compute_loss_func expects model outputs with a logits tensor, "
            f"got {type(outputs).__name__}"
        )
    return logits


class ClassBalancedLossFunc:
    """The ``compute_loss_func`` :func:`class_balanced_loss_func` returns (see the module).

    ``schedule`` is its :class:`~classbalanced.ReweightSchedule` (``None``: constant
    weights); :meth:`set_epoch` applies it, :meth:`set_weight` replaces the weights.
    """

    def __init__(self, counts, *, beta, loss_type, gamma, reweight_schedule, start_epoch) -> None:
        options = dict(beta=beta, loss_type=loss_type, gamma=gamma)
        self._losses = {
            r: ClassBalancedLoss(counts, **options, reduction=r) for r in ("sum", "mean")
        }
        self.schedule = None
        if reweight_schedule is not None:
            self.schedule = ReweightSchedule(
                reweight_schedule, counts, beta, start_epoch=start_epoch
            )
        self.epoch: int | None = None
        if self.schedule is not None:
            self.set_weight(self.schedule.weight_at(0))

    @property
    def weight(self) -> Tensor | None:
        """The ``(C,)`` class weights in force (``None``: unweighted)."""
        return self._losses["sum"].weight

    def set_weight(self, weight: Tensor | None) -> None:
        """Replace the ``(C,)`` class weights (``None``: unweighted)."""
        for loss in self._losses.values():
            loss.set_weight(weight)

    def set_epoch(self, epoch: int) -> None:
        """Apply the schedule's weights of ``epoch`` (0-based); the callback calls it."""
        self.epoch = epoch
        if self.schedule is not None:
            self.set_weight(self.schedule.weight_at(epoch))

    def __call__(self, outputs, labels: Tensor, num_items_in_batch=None) -> Tensor:
        logits = _logits(outputs)
        if self.schedule is not None and self.epoch is None and logits.requires_grad:
            raise ValueError(
                f"reweight_schedule={self.schedule.kind!r} changes the weights with the epoch: "
                "pass callbacks=[ReweightCallback(loss_func)] to the Trainer "
                "(or call loss_func.set_epoch(epoch))"
            )
        if labels is None:
            raise ValueError("compute_loss_func needs labels, got None (no 'labels' column?)")
        if labels.dim() == 1:
            kept = labels != IGNORE_INDEX
            logits, labels = logits[kept], labels[kept]
        reduction = "mean" if num_items_in_batch is None else "sum"
        loss = self._losses[reduction].to(logits.device)(logits, labels)
        if num_items_in_batch is None:
            return loss
        return loss / torch.as_tensor(num_items_in_batch, device=loss.device).clamp(min=1)


def class_balanced_loss_func(
    counts,
    *,
    beta: float,
    loss_type: str,
    gamma: float = DEFAULT_GAMMA,
    reweight_schedule: str | None = None,
    start_epoch: int = 0,
) -> ClassBalancedLossFunc:
    """The class-balanced loss as ``Trainer(compute_loss_func=...)`` takes it.

    Args:
        counts: ``(C,)`` training examples per class (:func:`class_counts`), each > 0.
        beta: in ``[0, 1)``; loss_type: ``"softmax"``, ``"sigmoid"`` or ``"focal"``;
            gamma: focal exponent ``>= 0``: as in :class:`~classbalanced.ClassBalancedLoss`.
        reweight_schedule: ``None`` (the class-balanced weights throughout), or
            ``"constant"``, ``"drw"`` or ``"ramp"`` with ``start_epoch``, as in
            :class:`~classbalanced.ReweightSchedule`; then pass
            ``callbacks=[ReweightCallback(loss_func)]`` to the ``Trainer``.

    Returns:
        ``f(outputs, labels, num_items_in_batch=None)``: the mean reduction, or the sum
        divided by ``num_items_in_batch`` (see the module).

    >>> f = class_balanced_loss_func([90, 10], beta=0.9, loss_type="softmax", reweight_schedule="drw", start_epoch=1)
    >>> f.set_epoch(0); f.weight is None
    True
    >>> f.set_epoch(1); f.weight
    tensor([0.7889, 1.2111])
    """
    return ClassBalancedLossFunc(
        counts,
        beta=beta,
        loss_type=loss_type,
        gamma=gamma,
        reweight_schedule=reweight_schedule,
        start_epoch=start_epoch,
    )


def classification_head(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` of a sequence-classification model's head (see ``HEAD_NAMES``).

    >>> classification_head(nn.Module()) # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: found no classification head on Module (looked for model.classifier, ...
    """
    for name in HEAD_NAMES:
        module = getattr(model, name, None)
        if isinstance(module, nn.Linear):
            return module
        out_proj = getattr(module, "out_proj", None)
        if isinstance(out_proj, nn.Linear):
            return out_proj
    looked = ", ".join(f"model.{name}" for name in HEAD_NAMES)
    raise ValueError(
        f"found no classification head on {type(model).__name__} (looked for {looked}, "
        "an nn.Linear or a head with .out_proj): pass it, init_prior_bias_(model, head=...)"
    )


def init_prior_bias_(model: nn.Module, *, head: nn.Linear | None = None, prior=None) -> nn.Linear:
    """Start the head's bias at ``-log((1 - pi) / pi)``, ``pi = 1/C`` by default.

    For the ``"sigmoid"`` / ``"focal"`` losses (Cui et al., 2019, section 4.3): every
    class's initial probability is ``pi``. ``head`` defaults to
    :func:`classification_head`; ``prior`` is as in :func:`classbalanced.prior_bias`.
    Returns the head.

    >>> model = nn.Module()
    >>> model.classifier = nn.Linear(8, 4)
    >>> torch.sigmoid(init_prior_bias_(model).bias.detach())
    tensor([0.2500, 0.2500, 0.2500, 0.2500])
    """
    head = classification_head(model) if head is None else head
    if isinstance(head, nn.Linear) and head.bias is None:
        raise ValueError(
            f"the head of {type(model).__name__} has no bias (bias=False): the prior bias "
            "needs one; use the softmax loss, or a head with a bias"
        )
    return _init_linear_prior_bias_(head, prior)


@functools.cache
def _reweight_callback_class() -> type:
    transformers: Any = require("transformers", "transformers", "ReweightCallback")

    class ReweightCallback(transformers.TrainerCallback):
        """Sets ``loss_func``'s schedule weights at each epoch's start (``int(state.epoch)``,
        also after resuming from a checkpoint)."""

        def __init__(self, loss_func: ClassBalancedLossFunc) -> None:
            if getattr(loss_func, "schedule", None) is None:
                raise ValueError(
                    "ReweightCallback expects a loss function made with "
                    "class_balanced_loss_func(..., reweight_schedule='drw' or 'ramp'), "
                    f"got {type(loss_func).__name__} without a schedule"
                )
            self.loss_func = loss_func

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.loss_func.set_epoch(int(state.epoch + 1e-6))

    ReweightCallback.__module__, ReweightCallback.__qualname__ = __name__, "ReweightCallback"
    return ReweightCallback


def __getattr__(name: str):
    if name == "ReweightCallback":  # lazy: a transformers.TrainerCallback subclass
        return _reweight_callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
