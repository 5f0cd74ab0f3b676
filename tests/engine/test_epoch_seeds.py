"""One per-epoch generator helper for the samplers and the in-memory stream, each call site
keeping its own seeding rule: the streams must be the ones recorded runs were trained on."""

import numpy as np
import pytest
import torch

from classbalanced.engine.streams import epoch_plan
from classbalanced.sampling import ClassBalancedSampler


# the two functions as they were before they shared a helper (written before the refactor)
def _old_stream_generator(seed, epoch):
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _old_sampler_generator(seed, epoch):
    state = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


@pytest.mark.parametrize("seed, epoch", [(0, 0), (0, 7), (3, 1), (12345, 199), (2**31, 2)])
def test_in_memory_plan_keeps_its_seeds(seed, epoch):
    plan = epoch_plan(50, 8, 6, seed=seed, epoch=epoch, pad=4, flip=True)
    g = _old_stream_generator(seed, epoch)
    assert torch.equal(plan.order, torch.randperm(50, generator=g))
    assert torch.equal(plan.top, torch.randint(0, 9, (50,), generator=g))
    assert torch.equal(plan.left, torch.randint(0, 9, (50,), generator=g))
    assert torch.equal(plan.flips, torch.rand(50, generator=g) < 0.5)


@pytest.mark.parametrize("replacement", [True, False])
@pytest.mark.parametrize("seed, epoch", [(0, 0), (0, 7), (3, 1), (12345, 199)])
def test_sampler_keeps_its_seeds(seed, epoch, replacement):
    labels = [0] * 30 + [1] * 8 + [2] * 2
    sampler = ClassBalancedSampler(labels, 0.99, seed=seed, replacement=replacement)
    g = _old_sampler_generator(seed, epoch)
    if replacement:
        u = torch.rand(sampler.num_samples, generator=g, dtype=torch.float64)
        expected = torch.searchsorted(sampler._cdf, u, right=True)
        got = sampler.labels[sampler.global_indices(epoch)]
        assert torch.equal(got, torch.minimum(expected, sampler._last_class))
    else:
        keys = torch.empty(40, dtype=torch.float64).exponential_(generator=g)
        expected = torch.argsort(keys / sampler.example_probabilities(), stable=True)
        assert torch.equal(sampler.global_indices(epoch), expected)


def test_the_two_rules_differ_and_the_helper_refuses_others():
    from classbalanced._seeding import epoch_generator

    a = epoch_generator(1, 2, rule="affine").initial_seed()
    b = epoch_generator(1, 2, rule="seedsequence").initial_seed()
    assert a == 1_000_005 and a != b
    assert b == _old_sampler_generator(1, 2).initial_seed()
    keyed = epoch_generator(1, 2, rule="seedsequence", key=(0, 1)).initial_seed()
    assert keyed not in (a, b)  # another stream of the same (seed, epoch)
    with pytest.raises(ValueError, match="the affine rule has no keys"):
        epoch_generator(1, 2, rule="affine", key=(0,))
    with pytest.raises(ValueError, match="rule: expected 'affine' or 'seedsequence', got 'sum'"):
        epoch_generator(1, 2, rule="sum")
