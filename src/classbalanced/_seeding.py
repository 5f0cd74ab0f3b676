"""Per-epoch random generators: one helper for every stream whose draws depend on ``(seed, epoch)``.

Two seeding rules are in use, each kept exactly so that recorded runs replay:

* ``"affine"``: ``manual_seed(seed * 1_000_003 + epoch)``, the in-memory batch stream
  (:func:`classbalanced.engine.streams.epoch_plan`);
* ``"seedsequence"``: numpy's ``SeedSequence([seed, epoch])`` hashed to 63 bits, the
  class-balanced sampler (:class:`classbalanced.sampling.ClassBalancedSampler`); distinct
  pairs give unrelated streams (no ``seed + epoch`` collisions); also, keyed
  ``(rank, 1)``, the base seed of the image loader's workers
  (:class:`classbalanced.engine.streams.LoaderStream`).

>>> epoch_generator(1, 2, rule="affine").initial_seed()
1000005
>>> g = epoch_generator(1, 2, rule="seedsequence")
>>> g.initial_seed() == epoch_generator(1, 2, rule="seedsequence").initial_seed() != 1000005
True
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch

__all__ = ["EPOCH_SEED_RULES", "EpochSeedRule", "epoch_generator"]

EpochSeedRule = Literal["affine", "seedsequence"]
EPOCH_SEED_RULES: tuple[str, ...] = get_args(EpochSeedRule)


def epoch_generator(
    seed: int, epoch: int, *, rule: EpochSeedRule, key: tuple[int, ...] = ()
) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``(seed, epoch)`` by ``rule`` (see the module).

    ``key`` (``"seedsequence"`` only) names another stream of the same ``(seed, epoch)``:
    ``SeedSequence([seed, epoch, *key])`` (e.g. the loader workers' seeds of one rank).
    """
    if rule == "affine":
        if key:
            raise ValueError(f"key: the affine rule has no keys, got {key!r}")
        return torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    if rule == "seedsequence":
        state = np.random.SeedSequence([seed, epoch, *key]).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)
    raise ValueError(f"rule: expected 'affine' or 'seedsequence', got {rule!r}")
