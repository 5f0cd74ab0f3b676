"""``decouple --sampler``: the name of a stage-two sampler -> the sampler of
:mod:`classbalanced.sampling` (``None``: the stream's own shuffle, each image once per epoch).

* ``class_aware`` (default): the release's class-aware sampling, classes taken in turn,
  :data:`PER_CLASS` images of a class each turn, ``max_i n_i * C`` draws an epoch
  (:class:`~classbalanced.sampling.ClassAwareSampler`);
* ``class_uniform``: a class uniformly at random, then one of its images, ``N`` draws an
  epoch (:class:`~classbalanced.sampling.ClassUniformSampler`);
* ``shuffle``: instance-balanced, as stage one.

>>> len(stage_two_sampler("class_aware", [0, 0, 0, 1], seed=0)), stage_two_sampler("shuffle", [0], 0)
(6, None)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..sampling import ClassAwareSampler, ClassUniformSampler

__all__ = ["PER_CLASS", "SAMPLER_BUILDERS", "stage_two_sampler"]

#: images of a class per turn of the class-aware sampler (the release's ``num_samples_cls``)
PER_CLASS = 4

#: ``--sampler`` name -> (training labels, seed) -> sampler or None
SAMPLER_BUILDERS: dict[str, Callable[[Any, int], Any]] = {
    "class_aware": lambda labels, seed: ClassAwareSampler(labels, PER_CLASS, seed=seed),
    "class_uniform": lambda labels, seed: ClassUniformSampler(labels, seed),
    "shuffle": lambda labels, seed: None,
}


def stage_two_sampler(name: str, labels, seed: int):
    """The sampler ``name`` over the training ``labels`` ``(N,)``, seeded by ``seed``."""
    return SAMPLER_BUILDERS[name](labels, seed)
