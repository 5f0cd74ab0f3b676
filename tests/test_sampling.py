import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from classbalanced.sampling import (
    ClassAwareSampler,
    ClassBalancedSampler,
    ClassUniformSampler,
    class_counts,
    sampling_probabilities,
)
from classbalanced.weights import class_balanced_weights, effective_number

COUNTS = [5000, 1000, 200, 40, 8]
LABELS = np.repeat(np.arange(len(COUNTS)), COUNTS)
DRAWS = 200_000


def _shuffled_labels(seed=1):
    return np.random.default_rng(seed).permutation(LABELS)


def _assert_binomial(observed, probs, draws, sigmas=5.0):
    """Every count within ``sigmas`` binomial standard deviations of ``draws * p``."""
    observed = np.asarray(observed, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    std = np.sqrt(draws * probs * (1 - probs))
    deviation = np.abs(observed - draws * probs)
    assert np.all(deviation <= sigmas * std + 1e-9), (observed, draws * probs, std)


def test_probabilities_match_definition():
    for beta in (0.0, 0.5, 0.9, 0.999, 0.999999):
        probs = sampling_probabilities(COUNTS, beta)
        assert probs.dtype == torch.float64
        assert probs.sum().item() == pytest.approx(1.0, abs=1e-12)
        # P(class i) ∝ n_i * alpha_i, with alpha the library's class-balanced weights
        alpha = class_balanced_weights(COUNTS, beta).double()
        mass = torch.tensor(COUNTS, dtype=torch.float64) * alpha
        torch.testing.assert_close(probs, mass / mass.sum(), rtol=1e-6, atol=0)
        # and ∝ n_i / E_{n_i} in float64
        ratio = torch.tensor(COUNTS, dtype=torch.float64) / effective_number(COUNTS, beta)
        torch.testing.assert_close(probs, ratio / ratio.sum(), rtol=1e-12, atol=0)


def test_probability_limits():
    # beta = 0: instance frequencies
    freq = torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS)
    torch.testing.assert_close(sampling_probabilities(COUNTS, 0.0), freq, rtol=1e-15, atol=0)
    # beta -> 1: uniform over classes (deviation of order n_max * (1 - beta))
    uniform = torch.full((len(COUNTS),), 1 / len(COUNTS), dtype=torch.float64)
    torch.testing.assert_close(sampling_probabilities(COUNTS, 0.999999), uniform, rtol=5e-3, atol=0)
    torch.testing.assert_close(
        sampling_probabilities(COUNTS, 1 - 1e-12), uniform, rtol=1e-7, atol=0
    )
    # rarer classes are never sampled more often than frequent ones
    for beta in (0.9, 0.99, 0.9999):
        probs = sampling_probabilities(COUNTS, beta)
        assert torch.all(probs[1:] <= probs[:-1])


def test_probabilities_of_huge_counts_sum_to_one():
    """The sum of n_i / E_{n_i} overflowed to inf, so every probability was 0."""
    probs = sampling_probabilities([1e308, 0, 1.5e308, 5e307], 0.0)
    expected = torch.tensor([1 / 3, 0, 1 / 2, 1 / 6], dtype=torch.float64)
    torch.testing.assert_close(probs, expected, rtol=1e-15, atol=0)


def test_probabilities_from_labels_and_absent_classes():
    labels = [0, 0, 3, 3, 3, 3]
    probs = sampling_probabilities(labels, 0.0, kind="labels")
    torch.testing.assert_close(probs, torch.tensor([1 / 3, 0, 0, 2 / 3], dtype=torch.float64))
    torch.testing.assert_close(
        sampling_probabilities([2, 0, 0, 4], 0.0), probs, rtol=0, atol=0
    )  # count 0 -> probability 0
    assert class_counts(labels).tolist() == [2, 0, 0, 4]
    assert class_counts(labels, num_classes=6).tolist() == [2, 0, 0, 4, 0, 0]


@pytest.mark.parametrize("beta", [0.0, 0.9, 0.999999])
def test_large_draw_matches_class_probabilities(beta):
    labels = _shuffled_labels()
    sampler = ClassBalancedSampler(labels, beta, num_samples=DRAWS, seed=3)
    drawn = np.fromiter(iter(sampler), dtype=np.int64, count=DRAWS)
    assert len(drawn) == len(sampler) == DRAWS
    observed = np.bincount(labels[drawn], minlength=len(COUNTS))
    expected = sampling_probabilities(COUNTS, beta).numpy()
    _assert_binomial(observed, expected, DRAWS)
    if beta == 0.0:  # instance-balanced: the class frequencies of the data
        _assert_binomial(observed, np.array(COUNTS) / sum(COUNTS), DRAWS)
    if (
        beta == 0.999999
    ):  # class-balanced: every class equally often (tolerance covers the 0.3% bias)
        _assert_binomial(observed, np.full(len(COUNTS), 1 / len(COUNTS)), DRAWS, sigmas=8.0)


def test_uniform_within_a_class():
    labels = _shuffled_labels()
    sampler = ClassBalancedSampler(labels, 0.999, num_samples=DRAWS, seed=5)
    drawn = torch.tensor(list(sampler))
    rare = np.flatnonzero(labels == 4)  # the 8 examples of the rarest class
    hits = torch.bincount(drawn, minlength=len(labels))[rare].numpy()
    p_example = sampler.probabilities[4].item() / 8
    _assert_binomial(hits, np.full(8, p_example), DRAWS)
    probs = sampler.example_probabilities()
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert torch.allclose(probs[rare], torch.full((8,), p_example, dtype=torch.float64))


def test_deterministic_per_seed_and_epoch():
    labels = _shuffled_labels()
    a = ClassBalancedSampler(labels, 0.99, seed=7)
    b = ClassBalancedSampler(labels, 0.99, seed=7)
    assert list(a) == list(b)
    first = list(a)
    assert list(a) == first  # iterating twice gives the same epoch
    a.set_epoch(1)
    second = list(a)
    assert second != first
    b.set_epoch(1)
    assert list(b) == second
    a.set_epoch(0)
    assert list(a) == first
    assert list(ClassBalancedSampler(labels, 0.99, seed=8)) != first
    # the global RNG is neither used nor advanced
    torch.manual_seed(0)
    state = torch.get_rng_state()
    list(a)
    assert torch.equal(state, torch.get_rng_state())
    torch.manual_seed(123)
    assert list(a) == first


@pytest.mark.parametrize("replacement", [True, False])
@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_rank_shards_partition_the_global_draw(world_size, replacement):
    labels = _shuffled_labels()[:1001]
    kwargs = dict(seed=11, replacement=replacement)
    shards = []
    for rank in range(world_size):
        s = ClassBalancedSampler(labels, 0.999, rank=rank, world_size=world_size, **kwargs)
        s.set_epoch(4)
        shards.append(list(s))
    total = -(-1001 // world_size) * world_size  # rounded up
    assert all(len(shard) == total // world_size for shard in shards)
    global_draw = shards_global = None
    for rank in range(world_size):  # every rank computes the same global sequence
        s = ClassBalancedSampler(labels, 0.999, rank=rank, world_size=world_size, **kwargs)
        draw = s.global_indices(4).tolist()
        assert shards_global is None or draw == shards_global
        shards_global = draw
    for rank, shard in enumerate(shards):  # disjoint positions of the same global sequence
        assert shard == shards_global[rank::world_size]
    interleaved = [shards[k % world_size][k // world_size] for k in range(total)]
    assert interleaved == shards_global
    # the union is the single-process draw: exactly its epoch, then the few padded positions
    single = ClassBalancedSampler(labels, 0.999, **kwargs)
    single.set_epoch(4)
    global_draw = list(single)
    assert len(global_draw) == 1001
    assert interleaved[:1001] == global_draw
    if replacement:
        padded = ClassBalancedSampler(labels, 0.999, num_samples=total, **kwargs)
        assert padded.global_indices(4).tolist() == interleaved
    else:
        assert interleaved[1001:] == global_draw[: total - 1001]  # padding wraps around


def test_without_replacement_is_a_permutation():
    labels = _shuffled_labels()[:500]
    sampler = ClassBalancedSampler(labels, 0.999, replacement=False, seed=2)
    drawn = list(sampler)
    assert sorted(drawn) == list(range(500))
    # rare examples tend to come first
    sub = ClassBalancedSampler(labels, 0.9999, num_samples=50, replacement=False, seed=2)
    assert len(set(sub)) == 50
    with pytest.raises(ValueError, match="num_samples must be <= len"):
        ClassBalancedSampler(labels, 0.9, num_samples=501, replacement=False)


def test_works_as_dataloader_sampler():
    labels = torch.from_numpy(_shuffled_labels()[:600])
    dataset = TensorDataset(torch.arange(600).float().unsqueeze(1), labels)
    sampler = ClassBalancedSampler(labels, 0.9999, num_samples=640, seed=0)
    loader = DataLoader(dataset, batch_size=64, sampler=sampler)
    seen = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(loader)
        assert len(batches) == 10
        x = torch.cat([b[0] for b in batches]).squeeze(1).long()
        y = torch.cat([b[1] for b in batches])
        assert torch.equal(labels[x], y)
        assert x.tolist() == sampler.global_indices(epoch).tolist()
        seen.append(x)
    assert not torch.equal(seen[0], seen[1])


def test_set_beta_and_repr():
    sampler = ClassBalancedSampler(LABELS, 0.0)
    torch.testing.assert_close(sampler.probabilities, sampling_probabilities(COUNTS, 0.0))
    sampler.set_beta(0.99)
    torch.testing.assert_close(sampler.probabilities, sampling_probabilities(COUNTS, 0.99))
    assert "beta=0.99" in repr(sampler)
    assert len(sampler) == len(LABELS)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(labels=[0.5, 1.0], beta=0.9), TypeError, "integer class indices"),
        (dict(labels=[], beta=0.9), ValueError, "non-empty"),
        (dict(labels=[[0, 1]], beta=0.9), ValueError, "1-D"),
        (dict(labels=[0, -1], beta=0.9), ValueError, ">= 0"),
        (dict(labels=[0, 1], beta=1.0), ValueError, "beta must be in"),
        (dict(labels=[0, 1], beta=0.9, rank=2, world_size=2), ValueError, "rank must be in"),
        (dict(labels=[0, 1], beta=0.9, world_size=0), ValueError, "world_size"),
        (dict(labels=[0, 1], beta=0.9, num_samples=0), ValueError, "num_samples"),
        (dict(labels=[0, 1], beta=0.9, seed=-1), ValueError, "seed"),
        (dict(labels="01", beta=0.9), TypeError, "labels must be"),
    ],
)
def test_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        ClassBalancedSampler(**kwargs)


def test_probability_validation():
    with pytest.raises(ValueError, match="counts\\[1\\] must be a finite count >= 0"):
        sampling_probabilities([3, -1], 0.9)
    with pytest.raises(ValueError, match="all zeros"):
        sampling_probabilities([0, 0], 0.9)
    # the checks of weights.count_vector, naming the argument counts
    with pytest.raises(TypeError, match="^counts must hold real numbers, got dtype <U1$"):
        sampling_probabilities(["a", "b"], 0.9)
    with pytest.raises(TypeError, match="^counts must be a list, numpy array or tensor of counts"):
        sampling_probabilities("ab", 0.9)
    with pytest.raises(ValueError, match="unknown kind"):
        sampling_probabilities([1, 2], 0.9, kind="label")
    with pytest.raises(ValueError, match="class indices in"):
        class_counts([0, 5], num_classes=3)


def test_docs_beyond_examples_run():
    """Every ```python block of docs/beyond.md runs as written, in order."""
    page = Path(__file__).resolve().parents[1] / "docs" / "beyond.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    assert len(blocks) >= 4
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(page), "exec"), namespace)
    assert math.isfinite(float(namespace["loss"]))


# --------------------------------------------------------------------------- stage two's samplers


def test_class_aware_sampler_takes_classes_in_turn():
    labels = np.array([0] * 9 + [1] * 3 + [3] * 2)  # class 2 absent
    s = ClassAwareSampler(labels, 4, seed=5)
    assert len(s) == 9 * 3  # max count x classes present, as the release
    idx = s.global_indices(1).numpy()
    assert len(idx) == 27 and torch.equal(s.global_indices(1), torch.from_numpy(idx))
    assert not torch.equal(s.global_indices(1), s.global_indices(2))
    turns = [labels[idx[i : i + 4]] for i in range(0, 27, 4)]
    assert all(len(set(t.tolist())) == 1 for t in turns)  # 4 of one class per turn
    classes = [int(t[0]) for t in turns]
    for c in range(0, len(classes) - 2, 3):  # each cycle of 3 turns: every class once
        assert sorted(classes[c : c + 3]) == [0, 1, 3]
    for c in (0, 1, 3):  # within a class: no image again before all came up
        mine = [i for i in idx if labels[i] == c]
        n = int((labels == c).sum())
        for start in range(0, len(mine) - n + 1, n):
            assert len(set(mine[start : start + n])) == n
    with pytest.raises(ValueError, match="per_class"):
        ClassAwareSampler(labels, 0)


def test_class_uniform_sampler_replays_its_recorded_draws():
    """Stage-two runs recorded with ``decouple --sampler class_uniform`` replay: the draw is a
    class index then a position inside the class, from manual_seed(seed * 1_000_003 +
    epoch + 7919), as when the sampler lived in decouple.py."""
    labels = np.array([2] * 7 + [0] * 30 + [1] * 4 + [2] * 5)
    sampler = ClassUniformSampler(labels, seed=11)
    for epoch in (0, 3):
        g = torch.Generator().manual_seed(11 * 1_000_003 + epoch + 7919)
        members = [np.flatnonzero(labels == c) for c in range(3)]
        classes = torch.randint(3, (len(labels),), generator=g)
        u = torch.rand(len(labels), generator=g, dtype=torch.float64)
        expected = [
            members[c][min(int(x * len(members[c])), len(members[c]) - 1)]
            for c, x in zip(classes.tolist(), u.tolist(), strict=True)
        ]
        assert sampler.global_indices(epoch).tolist() == expected
