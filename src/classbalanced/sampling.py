"""Class-balanced sampling: re-balance the data stream instead of the loss.

Re-weighting (the class-balanced loss) and re-sampling are two ways to apply the
same class weights ``alpha_i(beta) = (1 - beta) / (1 - beta ** n_i)``
(:func:`classbalanced.weights.class_balanced_weights`). Here the weights change
how often each class is *drawn*:

* the probability that a drawn example belongs to class ``i`` is::

      P(class i) = n_i * alpha_i / sum_j n_j * alpha_j  =  (n_i / E_{n_i}) / sum_j (n_j / E_{n_j})

  where ``E_n = (1 - beta ** n) / (1 - beta)`` is the effective number. So
  ``beta = 0`` gives ``P(class i) = n_i / N`` (instance-balanced sampling, i.e.
  plain shuffling with replacement) and ``beta -> 1`` gives ``P(class i) = 1 / C``
  (class-balanced sampling); in between, ``n_i / E_{n_i}`` grows from 1 to
  ``n_i`` as the class grows, but ever more slowly;
* within a class examples are equally likely, so example ``k`` of class ``y_k``
  is drawn with probability ``P(class y_k) / n_{y_k}``.

A class that has no example in ``labels`` (an index below ``max(labels)`` that
never occurs) has probability 0.

:class:`ClassBalancedSampler` is a ``torch.utils.data.Sampler`` for
``DataLoader(dataset, sampler=...)``. Its draws come from a private
``torch.Generator`` seeded by ``(seed, epoch)`` (never the global RNG), and it is
aware of data parallelism: every rank draws the same global sequence and rank
``r`` of ``W`` keeps positions ``r, r + W, r + 2W, ...``.

Two exactly class-balanced samplers serve the second stage of decoupled training
(``classbalanced decouple``, Kang et al., ICLR 2020): :class:`ClassAwareSampler`, the
sampling of the authors' release (classes taken in turn in a shuffled cycle, a few images
of a class each turn, ``max_i n_i * C`` draws an epoch), and :class:`ClassUniformSampler`
(a class uniformly at random, then one of its images; ``N`` draws an epoch).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Sampler

from ._seeding import epoch_generator
from ._validation import check_beta, check_choice, check_int, check_positive_int
from .weights import count_vector, effective_number

__all__ = [
    "class_counts",
    "sampling_probabilities",
    "ClassBalancedSampler",
    "ClassUniformSampler",
    "ClassAwareSampler",
]


def _as_labels(labels: object) -> Tensor:
    """Validate class-index labels and return them as a 1-D int64 CPU tensor."""
    if isinstance(labels, Tensor):
        tensor = labels.detach().cpu()
    elif isinstance(labels, (np.ndarray, list, tuple, range)):
        array = np.asarray(labels)
        if array.dtype == object:
            raise TypeError("labels must hold integer class indices, got a ragged or object array")
        if not array.size:
            raise ValueError("labels must be a non-empty 1-D sequence of class indices, got none")
        tensor = torch.from_numpy(np.array(array, copy=True))
    else:
        raise TypeError(
            f"labels must be a list, numpy array or tensor of class indices, got {type(labels).__name__}"
        )
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got dtype {tensor.dtype}")
    if tensor.dim() != 1 or tensor.numel() == 0:
        raise ValueError(
            f"labels must be a non-empty 1-D sequence of class indices, got shape {tuple(tensor.shape)}"
        )
    tensor = tensor.to(torch.int64)
    low = int(tensor.min())
    if low < 0:
        raise ValueError(f"labels must be class indices >= 0, got {low}")
    return tensor


def class_counts(labels, num_classes: int | None = None) -> Tensor:
    """Number of examples of each class in a 1-D sequence of class indices.

    Args:
        labels: ``(N,)`` integer class indices ``>= 0`` (list, numpy array or tensor).
        num_classes: ``C``; default ``max(labels) + 1``.

    Returns:
        ``(C,)`` int64 tensor (classes that never occur count 0).

    >>> class_counts([0, 2, 2, 0, 2])
    tensor([2, 0, 3])
    """
    labels = _as_labels(labels)
    high = int(labels.max())
    if num_classes is None:
        num_classes = high + 1
    num_classes = check_positive_int("num_classes", num_classes)
    if high >= num_classes:
        raise ValueError(f"labels must be class indices in [0, {num_classes - 1}], got {high}")
    return torch.bincount(labels, minlength=num_classes)


def _as_nonnegative_counts(counts: object) -> Tensor:
    if isinstance(counts, Tensor):
        counts = counts.detach().cpu()  # the probabilities are computed on the CPU
    tensor = count_vector(counts, "counts")
    bad = ~torch.isfinite(tensor) | (tensor < 0)
    if bool(bad.any()):
        index = int(torch.nonzero(bad)[0])
        raise ValueError(
            f"counts[{index}] must be a finite count >= 0, got {tensor[index].item()!r}"
        )
    if not bool((tensor > 0).any()):
        raise ValueError("counts must include at least one class with a count > 0, got all zeros")
    return tensor


#: what :func:`sampling_probabilities` is given
SamplingKind = Literal["counts", "labels"]


def sampling_probabilities(
    labels_or_counts, beta: float, *, kind: SamplingKind = "counts"
) -> Tensor:
    """Per-class sampling probabilities ``P(class i) ∝ n_i * alpha_i(beta) = n_i / E_{n_i}``.

    Args:
        labels_or_counts: ``(C,)`` per-class counts ``n_i >= 0`` (``kind="counts"``,
            the default, as everywhere in the library), or ``(N,)`` class indices
            (``kind="labels"``). A 1-D integer array could be either, hence ``kind``.
        beta: in ``[0, 1)``: ``0`` gives ``n_i / N`` (instance-balanced),
            ``beta -> 1`` gives ``1 / C`` (class-balanced).
        kind: ``"counts"`` or ``"labels"``.

    Returns:
        ``(C,)`` float64 tensor summing to 1; a class with count 0 gets 0.

    >>> sampling_probabilities([300, 100], beta=0.0)
    tensor([0.7500, 0.2500], dtype=torch.float64)
    >>> sampling_probabilities([300, 100], beta=0.999999)
    tensor([0.5001, 0.4999], dtype=torch.float64)
    >>> sampling_probabilities([0, 0, 1, 1, 1, 1], beta=0.0, kind="labels")
    tensor([0.3333, 0.6667], dtype=torch.float64)
    """
    beta = check_beta(beta)
    check_choice("kind", kind, get_args(SamplingKind))
    if kind == "labels":
        counts = class_counts(labels_or_counts).to(torch.float64)
    else:
        counts = _as_nonnegative_counts(labels_or_counts)
    present = counts > 0
    n = counts[present]
    mass = n / effective_number(n, beta)  # n / E_n
    mass = mass / mass.max()  # in (0, 1]: the sum cannot overflow, even for counts near 1e308
    probs = torch.zeros_like(counts)
    probs[present] = mass / mass.sum()
    return probs


class ClassBalancedSampler(Sampler[int]):
    """Draw dataset indices so that class ``i`` comes up with probability ``∝ n_i * alpha_i(beta)``.

    See the module docstring for the exact distribution (``beta = 0``:
    instance-balanced, ``beta -> 1``: class-balanced; uniform within a class).

    Args:
        labels: ``(N,)`` class index of every example of the dataset, in dataset order.
        beta: in ``[0, 1)``.
        num_samples: size of the *global* draw of one epoch, over all ranks;
            default ``len(labels)``. Rounded up to a multiple of ``world_size``.
        seed: integer ``>= 0``; the draws of an epoch depend only on ``(seed, epoch)``.
        rank, world_size: this process's rank and the number of processes. All
            ranks draw the same global sequence; rank ``r`` takes positions
            ``r::world_size``, so the shards are disjoint and together form the
            single-process draw.
        replacement: ``True`` (default): independent draws from the distribution
            above. ``False``: a weighted permutation (successive draws without
            replacement, weights = per-example probabilities); then
            ``num_samples <= N``, and class frequencies only approach the target
            when ``num_samples`` is small against every class (they become the
            instance frequencies at ``num_samples = N``). Padding up to a multiple
            of ``world_size`` repeats the first positions of the permutation.

    The global draw of ``m`` samples is a prefix of the draw of ``m' > m`` (same
    seed and epoch), so the positions that rounding up to a multiple of
    ``world_size`` adds come *after* the single-process draw of ``len(labels)``.

    ``len(sampler)`` is the per-rank count ``num_samples / world_size``. Call
    :meth:`set_epoch` before each epoch, as with ``DistributedSampler``.

    >>> labels = [0] * 90 + [1] * 10
    >>> sampler = ClassBalancedSampler(labels, beta=0.99, num_samples=8, seed=0)
    >>> sampler.probabilities
    tensor([0.5911, 0.4089], dtype=torch.float64)
    >>> len(sampler), len(list(sampler))
    (8, 8)
    >>> shard = ClassBalancedSampler(labels, beta=0.99, num_samples=8, rank=1, world_size=2)
    >>> list(shard) == list(sampler)[1::2]
    True
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | Tensor,
        beta: float,
        *,
        num_samples: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        replacement: bool = True,
    ) -> None:
        self.labels = _as_labels(labels)
        self.world_size = check_positive_int("world_size", world_size)
        self.rank = check_int("rank", rank)
        if self.rank >= self.world_size:
            raise ValueError(f"rank must be in [0, {self.world_size - 1}], got {self.rank}")
        self.seed = check_int("seed", seed)
        if not isinstance(replacement, bool):
            raise TypeError(f"replacement must be True or False, got {type(replacement).__name__}")
        self.replacement = replacement
        size = len(self.labels)
        requested = size if num_samples is None else check_positive_int("num_samples", num_samples)
        if not replacement and requested > size:
            raise ValueError(
                f"num_samples must be <= len(labels) = {size} without replacement, got {requested}"
            )
        self.num_samples = -(-requested // self.world_size) * self.world_size  # global, rounded up
        self.epoch = 0
        self.class_counts = torch.bincount(self.labels)
        # examples grouped by class: class c occupies order[offsets[c] : offsets[c] + counts[c]]
        self._order = torch.argsort(self.labels, stable=True)
        self._offsets = torch.cumsum(self.class_counts, 0) - self.class_counts
        self.set_beta(beta)

    def set_beta(self, beta: float) -> None:
        """Change ``beta`` (e.g. switch to class-balanced sampling late in training)."""
        self.beta = check_beta(beta)
        self.probabilities = sampling_probabilities(self.class_counts, self.beta)
        self._cdf = torch.cumsum(self.probabilities, 0)
        self._cdf_lower = torch.cat([self._cdf.new_zeros(1), self._cdf[:-1]])
        self._last_class = torch.nonzero(self.probabilities > 0).max()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draws :meth:`__iter__` yields (same on every rank)."""
        self.epoch = check_int("epoch", epoch)

    def example_probabilities(self) -> Tensor:
        """``(N,)`` float64 probability of each example per draw (with replacement)."""
        return (self.probabilities / self.class_counts.clamp_min(1))[self.labels]

    def global_indices(self, epoch: int | None = None) -> Tensor:
        """The ``(num_samples,)`` global draw of an epoch (default the current one), all ranks."""
        epoch = self.epoch if epoch is None else check_int("epoch", epoch)
        g = epoch_generator(self.seed, epoch, rule="seedsequence")
        if self.replacement:
            # one uniform per draw, inverted through the class CDF; its position inside the
            # class's interval then picks the example uniformly. One draw per position makes
            # the draw of m samples a prefix of the draw of m' > m.
            u = torch.rand(self.num_samples, generator=g, dtype=torch.float64)
            classes = torch.searchsorted(self._cdf, u, right=True)
            classes = torch.minimum(classes, self._last_class)  # u beyond a rounded-down total
            lower = self._cdf_lower[classes]
            sizes = self.class_counts[classes]
            position = ((u - lower) / self.probabilities[classes]).clamp_(0.0, 1.0)
            within = torch.minimum((position * sizes).long(), sizes - 1)
            return self._order[self._offsets[classes] + within]
        # weighted permutation: sort Exp(1) / w ascending (Efraimidis-Spirakis); w = 0 goes last
        keys = torch.empty(len(self.labels), dtype=torch.float64).exponential_(generator=g)
        keys = keys / self.example_probabilities()
        perm = torch.argsort(keys, stable=True)
        if self.num_samples > len(perm):  # padding to a multiple of world_size
            perm = torch.cat([perm, perm[: self.num_samples - len(perm)]])
        return perm[: self.num_samples]

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_indices()[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.num_samples // self.world_size

    def __repr__(self) -> str:
        return (
            f"ClassBalancedSampler(beta={self.beta}, num_samples={self.num_samples}, "
            f"rank={self.rank}, world_size={self.world_size}, replacement={self.replacement})"
        )


class ClassUniformSampler(Sampler[int]):
    """Class-uniform sampling: each draw picks a class uniformly among the classes present,
    then one of its examples uniformly. ``len(labels)`` draws per epoch, from a generator
    seeded by ``(seed, epoch)``; ``global_indices(epoch)`` gives them as a tensor.

    Why not :class:`ClassBalancedSampler`: its distribution tends to this one as
    ``beta -> 1`` but never reaches it (``beta`` lives in ``[0, 1)``, where the effective
    number is defined), and its draws (one uniform through the class CDF, the
    ``seedsequence`` rule) differ from these; stage-two runs recorded with this sampler
    (``decouple --sampler class_uniform``) replay only with these exact draws (the
    ``affine`` rule at ``epoch + 7919``, a class index then a position inside the class).

    >>> s = ClassUniformSampler([0] * 98 + [1, 2], seed=0)
    >>> idx = s.global_indices(0)
    >>> drawn = np.bincount(s.labels[idx].numpy(), minlength=3)
    >>> len(idx), int(drawn.sum()), bool(drawn.min() > 15)
    (100, 100, True)
    """

    def __init__(self, labels, seed: int = 0) -> None:
        self.labels = _as_labels(labels)
        self.seed, self.epoch = check_int("seed", seed), 0
        self.order = torch.argsort(self.labels, stable=True)
        self.counts = torch.bincount(self.labels)
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.present = torch.nonzero(self.counts > 0).flatten()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_indices(self, epoch: int | None = None) -> Tensor:
        epoch = self.epoch if epoch is None else epoch
        g = epoch_generator(self.seed, epoch + 7919, rule="affine")
        n = self.labels.numel()
        classes = self.present[torch.randint(len(self.present), (n,), generator=g)]
        within = (torch.rand(n, generator=g, dtype=torch.float64) * self.counts[classes]).long()
        within = torch.minimum(within, self.counts[classes] - 1)
        return self.order[self.starts[classes] + within]

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_indices().tolist())

    def __len__(self) -> int:
        return self.labels.numel()


class ClassAwareSampler(Sampler[int]):
    """Class-aware sampling as Kang et al.'s release runs stage two (its
    ``data/ClassAwareSampler.py`` with ``num_samples_cls: 4``): the classes present are
    taken in turn, in a cycle shuffled anew each time it is used up; each turn takes the
    next ``per_class`` examples of that class from its own cycle over its examples
    (shuffled anew each time it is used up, so within a class no example repeats before
    all have come up). An epoch is ``num_samples`` draws, by default the release's
    ``max_i n_i * C`` (``C`` the classes present): every class as often as the largest.

    The draws of an epoch depend only on ``(seed, epoch)`` (the ``seedsequence`` rule);
    the release's cycles run on across epochs from Python's global generator instead.

    Args:
        labels: ``(N,)`` class index of every example, in dataset order.
        per_class: examples of a class per turn (``>= 1``; the release: 4).
        num_samples: draws per epoch (default ``max_i n_i * C``).
        seed: integer ``>= 0``.

    >>> s = ClassAwareSampler([0] * 6 + [1, 1, 2], per_class=2, seed=0)
    >>> idx = s.global_indices(0)
    >>> len(s), np.bincount(s.labels[idx].numpy()).tolist()
    (18, [6, 6, 6])
    >>> sorted(s.labels[idx[:6]].tolist())  # the first cycle: each class once, 2 at a time
    [0, 0, 1, 1, 2, 2]
    """

    def __init__(
        self, labels, per_class: int = 4, *, num_samples: int | None = None, seed: int = 0
    ) -> None:
        self.labels = _as_labels(labels)
        self.per_class = check_positive_int("per_class", per_class)
        self.seed, self.epoch = check_int("seed", seed), 0
        self.counts = torch.bincount(self.labels)
        self.order = torch.argsort(self.labels, stable=True)
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.present = torch.nonzero(self.counts > 0).flatten()
        default = int(self.counts.max()) * len(self.present)
        self.num_samples = (
            default if num_samples is None else check_positive_int("num_samples", num_samples)
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = check_int("epoch", epoch)

    def global_indices(self, epoch: int | None = None) -> Tensor:
        """The ``(num_samples,)`` draws of an epoch (default the current one)."""
        epoch = self.epoch if epoch is None else check_int("epoch", epoch)
        g = epoch_generator(self.seed, epoch, rule="seedsequence")
        k, present = self.per_class, self.present
        turns = -(-self.num_samples // k)
        cycles = -(-turns // len(present))
        keys = torch.rand(cycles, len(present), generator=g)
        classes = present[keys.argsort(dim=1).flatten()[:turns]]  # the class of each turn
        per_class_turns = torch.bincount(classes, minlength=len(self.counts))
        # each turn's rank among its class's turns
        by_class = torch.argsort(classes, stable=True)
        first_turn = torch.cumsum(per_class_turns, 0) - per_class_turns
        rank = torch.empty_like(classes)
        rank[by_class] = torch.arange(turns) - first_turn[classes[by_class]]
        # each class's examples in successive shuffled cycles, k per turn it has
        needed = per_class_turns * k
        streams = []
        for c in present.tolist():
            need, size = int(needed[c]), int(self.counts[c])
            if need:
                laps = torch.rand(-(-need // size), size, generator=g).argsort(dim=1)
                streams.append(self.order[self.starts[c] + laps.flatten()[:need]])
        stream_start = torch.cumsum(needed, 0) - needed
        positions = (stream_start[classes] + k * rank)[:, None] + torch.arange(k)
        return torch.cat(streams)[positions.flatten()][: self.num_samples]

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_indices().tolist())

    def __len__(self) -> int:
        return self.num_samples
