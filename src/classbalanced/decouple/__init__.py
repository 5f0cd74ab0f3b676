"""Decoupled classifier learning (Kang et al., "Decoupling Representation and Classifier for
Long-Tailed Recognition", ICLR 2020): a second stage on top of any finished run.

The run's network is split into its backbone (everything but ``model.fc``) and its linear
classifier ``z = W f + b`` (``W``: ``(C, D)``, ``f``: ``(D,)`` features). The backbone is
frozen (no gradients; by default in evaluation mode, so its batch-norm statistics do not
move either: ``backbone_bn="train"`` runs it in train mode while stage two trains, as the
authors' release does) and one of:

* ``crt`` -- classifier re-training: a freshly initialised ``fc`` trained on the frozen
  features of augmented training images drawn with the release's class-aware sampling
  (classes in turn, 4 images of a class each turn; :mod:`.samplers`), SGD with a cosine
  learning rate and the run's weight decay (not on the bias a sigmoid-family loss
  initialises to the prior, nor on any bias after a stage one with
  ``--no-decay-bias-and-norm``); 10 epochs (30 on iNaturalist 2018), lr 0.2 on ImageNet-LT
  and iNaturalist 2018, 0.1 on Places-LT (:mod:`.options`); the epoch kept is the best on
  the validation list, the last where there is none;
* ``tau_norm`` -- no training: ``w_i <- w_i / ||w_i||^tau`` for every class row ``i``
  (the bias is kept, so ``tau = 0`` is exactly the run's classifier; ``tau_bias="drop"``
  drops it, as the logits of Kang et al.'s release are ``W f`` alone); ``tau`` is the value
  of a grid (default 0, 0.1, ..., 2) with the best top-1 accuracy on the validation split;
* ``lws`` -- learnable weight scaling: ``z_i = s_i (w_i . f + b_i)`` with ``s`` (``(C,)``,
  starting at 1) the only trained parameters, sampled, scheduled and selected as ``crt``;
  5 epochs.

The stage-two loss is any loss of :func:`classbalanced.losses.build_loss` (softmax by
default; class-balanced losses with ``beta > 0`` too), weighted by the run's training
counts. The result is an ordinary run folder, written through the engine's ``RunFolder``:
``run.json`` (the stage-one data record), ``config.json`` (the run's config), ``subset.json``,
``decouple.json`` (the stage-two settings, also under ``metrics["decouple"]``), a checkpoint
whose classifier is a plain ``nn.Linear`` (``lws`` folds ``s`` into ``W`` and ``b``), and
``metrics.json`` with
the overall, many / medium / few-shot accuracies on the run's evaluation split, so that
``classbalanced evaluate`` and ``plot run`` work on it unchanged.

The modules, one job each: :mod:`.options` (settings and defaults), :mod:`.heads` (tau
normalisation, LWS), :mod:`.samplers` (``--sampler`` over :mod:`classbalanced.sampling`),
:mod:`.stage_one` (the finished run, through the engine's reader), :mod:`.data` (its data,
through the engine's ``run_data``), :mod:`.fitting` (the three methods), :mod:`.write` (the
new run folder), :mod:`.stage_two` (:func:`decouple`, the whole).

Example (:mod:`.heads` shows ``tau_normalize`` at work):
    >>> METHODS, TRAINED_METHODS  # tau_norm trains nothing
    (('crt', 'tau_norm', 'lws'), ('crt', 'lws'))
    >>> options = DecoupleOptions(method="crt", out="runs/crt")
    >>> options.sampler, options.backbone_bn, options.taus[-1]
    ('class_aware', 'eval', 2.0)
"""

from __future__ import annotations

from ..sampling import ClassAwareSampler, ClassUniformSampler
from .heads import LWSHead, tau_normalize
from .options import (
    CLASS_BALANCED_SAMPLER,
    DEFAULT_TAUS,
    METHODS,
    SAMPLERS,
    TRAINED_METHODS,
    DecoupleOptions,
)
from .stage_two import decouple

__all__ = [
    "METHODS",
    "DEFAULT_TAUS",
    "SAMPLERS",
    "CLASS_BALANCED_SAMPLER",
    "TRAINED_METHODS",
    "DecoupleOptions",
    "ClassAwareSampler",
    "ClassUniformSampler",
    "LWSHead",
    "tau_normalize",
    "decouple",
]
