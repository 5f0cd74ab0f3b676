"""Decoupled classifier learning (Kang et al., "Decoupling Representation and Classifier for
Long-Tailed Recognition", ICLR 2020): a second stage on top of any finished run.

The run's network is split into its backbone (everything but ``model.fc``) and its linear
classifier ``z = W f + b`` (``W``: ``(C, D)``, ``f``: ``(D,)`` features). The backbone is
frozen (evaluation mode: its batch-norm statistics do not move either) and one of:

* ``crt`` -- classifier re-training: a freshly initialised ``fc`` trained on the frozen
  features of augmented training images drawn with class-balanced sampling (every class
  equally likely, then an image of it uniformly), SGD with a cosine learning rate and the
  run's weight decay (not on the bias a sigmoid-family loss initialises to the prior, nor
  on any bias after a stage one with ``--no-decay-bias-and-norm``);
* ``tau_norm`` -- no training: ``w_i <- w_i / ||w_i||^tau`` for every class row ``i``
  (the bias is kept, so ``tau = 0`` is exactly the run's classifier; ``tau_bias="drop"``
  drops it, as the logits of Kang et al.'s release are ``W f`` alone); ``tau`` is the value
  of a grid (default 0, 0.1, ..., 2) with the best top-1 accuracy on the validation split;
* ``lws`` -- learnable weight scaling: ``z_i = s_i (w_i . f + b_i)`` with ``s`` (``(C,)``,
  starting at 1) the only trained parameters, sampled and scheduled as ``crt``.

The stage-two loss is any loss of :func:`classbalanced.losses.build_loss` (softmax by
default; class-balanced losses with ``beta > 0`` too), weighted by the run's training
counts. The result is an ordinary run folder, written through the engine's ``RunFolder``:
``run.json`` (the stage-one data record), ``config.json`` (the run's config), ``subset.json``,
``decouple.json`` (the stage-two settings, also under ``metrics["decouple"]``), a checkpoint
whose classifier is a plain ``nn.Linear`` (``lws`` folds ``s`` into ``W`` and ``b``), and
``metrics.json`` with
the overall, many / medium / few-shot accuracies on the run's evaluation split, so that
``classbalanced evaluate`` and ``plot run`` work on it unchanged.

Example:
    >>> w = torch.tensor([[3.0, 4.0], [0.6, 0.8]])
    >>> tau_normalize(w, 1.0)
    tensor([[0.6000, 0.8000],
            [0.6000, 0.8000]])
    >>> torch.equal(tau_normalize(w, 0.0), w)
    True
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "METHODS",
    "DEFAULT_TAUS",
    "DecoupleOptions",
    "ClassUniformSampler",
    "LWSHead",
    "tau_normalize",
    "decouple",
]

Method = Literal["crt", "tau_norm", "lws"]
Sampler = Literal["class_uniform", "shuffle"]
METHODS: tuple[Method, ...] = get_args(Method)
DEFAULT_TAUS = tuple(round(0.1 * i, 1) for i in range(21))
SAMPLERS: tuple[Sampler, ...] = get_args(Sampler)
#: Kang et al.'s stage-two sampling (class-balanced), the default of ``crt`` and ``lws``
CLASS_BALANCED_SAMPLER: Sampler = "class_uniform"
#: the methods that train (the others are post hoc)
TRAINED_METHODS: tuple[Method, ...] = ("crt", "lws")


@dataclass
class DecoupleOptions:
    """Stage-two settings. ``None`` means: the stage-one run's value."""

    method: Method
    out: str
    epochs: int = 10
    batch_size: int | None = None
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    loss: str = "softmax"
    beta: float = 0.0
    gamma: float = 1.0
    sampler: Sampler = CLASS_BALANCED_SAMPLER
    taus: list[float] = field(default_factory=lambda: list(DEFAULT_TAUS))
    tau: float | None = None  # tau_norm: use this tau instead of searching
    tau_bias: str = "keep"  # tau_norm: keep the classifier's bias, or drop it as the release does
    device: str = "auto"
    num_workers: int | None = None
    overwrite: bool = False
    accept_data_change: bool = False  # use data that changed since stage one (fingerprints)

    def validate(self) -> None:
        """One-line ValueError for a bad value."""
        if self.method not in METHODS:
            raise ValueError(
                f"unknown method {self.method!r}: expected one of {', '.join(METHODS)}"
            )
        if self.sampler not in SAMPLERS:
            raise ValueError(
                f"unknown sampler {self.sampler!r}: expected one of {', '.join(SAMPLERS)}"
            )
        for name in ("epochs", "batch_size", "num_workers"):
            value = getattr(self, name)
            low = 0 if name == "num_workers" else 1
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < low
            ):
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        from .config import FLOAT32_MAX  # float32: the training dtype

        if not 0 <= self.momentum < 1:  # NaN too; 1 and above: stage two diverges
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        for name, strict in (("lr", 1), ("weight_decay", 0), ("gamma", 0)):
            value = getattr(self, name)
            if value is None:
                continue
            if not ((value > 0 if strict else value >= 0) and value <= FLOAT32_MAX):  # NaN too
                cmp = "> 0" if strict else ">= 0"
                raise ValueError(f"{name} must be {cmp} and at most {FLOAT32_MAX:.4g}, got {value}")
        if self.tau_bias not in ("keep", "drop"):
            raise ValueError(f"tau_bias must be keep or drop, got {self.tau_bias!r}")
        taus = [self.tau] if self.tau is not None else list(self.taus)
        if not taus or any(not math.isfinite(t) or t < 0 for t in taus):
            raise ValueError(f"tau must be finite and >= 0, got {taus}")
        self._check_method_options()

    def _check_method_options(self) -> None:
        """An option of another method is refused (ignored, decouple.json would record it)."""
        changed = [name for name in _TRAINING_OPTIONS + _TAU_OPTIONS if self._given(name)]
        if self.tau is not None and "taus" in changed:
            raise ValueError("--tau and --taus: expected one of them (a tau, or a grid to search)")
        own = _TAU_OPTIONS if self.method == "tau_norm" else _TRAINING_OPTIONS
        users = "tau_norm" if self.method != "tau_norm" else "crt and lws"
        for name in changed:
            if name not in own:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} applies to {users}, not {self.method}")

    def _given(self, name: str) -> bool:
        f = self.__dataclass_fields__[name]
        if callable(f.default_factory):  # the tau grid: any sequence of the same values
            return list(getattr(self, name)) != list(f.default_factory())
        return getattr(self, name) != f.default


#: the options of the trained methods (crt, lws) and of tau_norm
_TRAINING_OPTIONS = (
    "epochs", "batch_size", "lr", "momentum", "weight_decay", "loss", "beta", "gamma", "sampler",
)  # fmt: skip
_TAU_OPTIONS = ("taus", "tau", "tau_bias")


def tau_normalize(weight: Tensor, tau: float) -> Tensor:
    """``w_i / ||w_i||_2 ** tau`` for every row ``i`` of ``weight`` ``(C, D)``; ``tau >= 0``.

    ``tau = 0`` returns the weights unchanged (bit for bit); ``tau = 1`` gives unit rows.
    A zero row stays zero.
    """
    if tau < 0 or not math.isfinite(tau):
        raise ValueError(f"tau must be finite and >= 0, got {tau}")
    if tau == 0:
        return weight.clone()
    norms = weight.norm(dim=1, keepdim=True)
    return weight / torch.where(norms > 0, norms, torch.ones_like(norms)).pow(tau)


def _check_tau(weight: Tensor, tau: float, flag: str) -> None:
    """Refuse a ``tau`` whose ``||w_i|| ** tau`` leaves float32's range (the classifier
    would become +-inf, or all zeros): a one-line error naming the range of row norms."""
    norms = weight.float().norm(dim=1)
    norms = norms[norms > 0]
    powers = norms.pow(tau)
    if norms.numel() and not (torch.isfinite(powers).all() and (powers > 0).all()):
        raise ValueError(
            f"{flag} {tau:g}: the classifier's row norms ({norms.min():.3g} to {norms.max():.3g}) "
            f"to the power tau leave float32's range (the weights would be infinite or zero): "
            "expected a smaller tau"
        )


class LWSHead(nn.Module):
    """Learnable weight scaling: ``z = s * (f @ W.T + b)`` with fixed ``W``, ``b`` and trained ``s``.

    >>> head = LWSHead(nn.Linear(3, 2))
    >>> f = torch.randn(4, 3)
    >>> torch.allclose(head(f), head.linear(f))
    True
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear.requires_grad_(False)
        w = linear.weight
        self.scales = nn.Parameter(torch.ones(linear.out_features, device=w.device, dtype=w.dtype))

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(features) * self.scales

    def folded(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing the same logits (``s`` folded into ``W`` and ``b``)."""
        lin = self.linear
        w = lin.weight
        out = nn.Linear(
            lin.in_features,
            lin.out_features,
            bias=lin.bias is not None,
            device=w.device,
            dtype=w.dtype,
        )
        with torch.no_grad():
            out.weight.copy_(w * self.scales[:, None])
            if lin.bias is not None:
                out.bias.copy_(lin.bias * self.scales)
        return out


class ClassUniformSampler(torch.utils.data.Sampler):
    """Class-balanced sampling: each draw picks a class uniformly among the classes present,
    then one of its examples uniformly. ``len(labels)`` draws per epoch, from a generator
    seeded by ``(seed, epoch)``; ``global_indices(epoch)`` gives them as a tensor.

    >>> s = ClassUniformSampler([0] * 98 + [1, 2], seed=0)
    >>> idx = s.global_indices(0)
    >>> drawn = np.bincount(s.labels[idx].numpy(), minlength=3)
    >>> len(idx), int(drawn.sum()), bool(drawn.min() > 15)
    (100, 100, True)
    """

    def __init__(self, labels, seed: int = 0) -> None:
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        if self.labels.ndim != 1 or self.labels.numel() == 0 or int(self.labels.min()) < 0:
            raise ValueError("labels must be a non-empty 1-D sequence of class indices >= 0")
        self.seed, self.epoch = seed, 0
        self.order = torch.argsort(self.labels, stable=True)
        self.counts = torch.bincount(self.labels)
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.present = torch.nonzero(self.counts > 0).flatten()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_indices(self, epoch: int | None = None) -> Tensor:
        epoch = self.epoch if epoch is None else epoch
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + 7919)
        n = self.labels.numel()
        classes = self.present[torch.randint(len(self.present), (n,), generator=g)]
        within = (torch.rand(n, generator=g, dtype=torch.float64) * self.counts[classes]).long()
        within = torch.minimum(within, self.counts[classes] - 1)
        return self.order[self.starts[classes] + within]

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_indices().tolist())

    def __len__(self) -> int:
        return self.labels.numel()


# --------------------------------------------------------------------------- the stage-one run


@dataclass
class _Run:
    folder: Path
    checkpoint: Path
    cfg: Any  # TrainConfig
    counts: np.ndarray
    subset: dict
    state: dict
    record: dict  # run.json's data record (class names, channels, sources)
    checkpoint_sha256: str  # as run.json lists it: the report checks stage one is unchanged


def _load_run(run: str | Path) -> _Run:
    from .config import run_config
    from .engine.run_folder import DECOUPLE_FILE, RunFolder, read_run_json

    path = Path(run).absolute()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: expected a finished run folder")
    if not path.is_dir():
        raise ValueError(f"{path} is a file: expected a finished run folder")
    folder = RunFolder.read(path)
    if (path / DECOUPLE_FILE).is_file():  # its report row would read as stage one's
        first = read_run_json(path / DECOUPLE_FILE)
        raise ValueError(
            f"{path} holds a {first.get('method')} stage two of {first.get('stage_one')}: "
            "decouple that stage-one run itself"
        )
    if not (path / "metrics.json").is_file():
        raise ValueError(
            f"{path} has no metrics.json: expected a finished run (train it to the end first)"
        )
    cfg = run_config(read_run_json(path / "config.json"), str(path / "config.json"))
    cfg = _recorded_paths(cfg, folder.data)
    subset = read_run_json(path / "subset.json", ("counts",))
    checkpoint, state = folder.load_checkpoint(use="it is not the finished network either")
    if state is None:
        raise FileNotFoundError(
            f"no checkpoint in {path / 'checkpoints'}: is {path} a finished run?"
        )
    _check_finished(path, cfg.epochs, read_run_json(path / "metrics.json"), state)
    counts = np.asarray(subset["counts"], dtype=np.int64)
    sha = folder.manifest.checkpoint_sha(checkpoint)
    return _Run(path, checkpoint, cfg, counts, subset, state, folder.data, sha)


def _recorded_paths(cfg, record: dict):
    """``cfg`` reading the data from the absolute paths the run recorded (``config.json``
    keeps them as typed, maybe relative to where the run was started)."""
    import dataclasses

    train, test = record["train"]["source"], record["test"]["source"]
    if cfg.dataset in ("npz", "folder"):
        return dataclasses.replace(cfg, train_data=train, test_data=test)
    if cfg.dataset == "digits":  # built in: no path
        return cfg
    return dataclasses.replace(cfg, data_dir=train)


def _check_finished(path: Path, epochs: int, metrics: dict, state: dict) -> None:
    """A run stopped early (Ctrl-C, a time limit) has ``metrics.json`` and checkpoints from
    its last evaluation: refuse it unless both the metrics and the newest checkpoint are
    those of the last epoch."""
    history = state.get("history") if isinstance(state.get("history"), list) else []
    last = history[-1].get("epoch") if history and isinstance(history[-1], dict) else None
    evaluated = metrics.get("epoch")
    if evaluated != epochs or last != epochs:
        done = min((e for e in (evaluated, last) if isinstance(e, int)), default=0)
        raise ValueError(
            f"{path}: the run is unfinished (evaluated up to epoch {done} of {epochs}): "
            "expected a finished run (continue it with `classbalanced train --resume`)"
        )


def _build_model(run: _Run, device: torch.device) -> nn.Module:
    from .engine.network import build_network
    from .engine.state import check_checkpoint_fits, load_weights
    from .models.registry import classifier

    check_checkpoint_fits(run.state, run.cfg, run.record["class_names"], str(run.checkpoint))
    model = build_network(run.cfg, run.counts, int(run.record["in_channels"]))
    if not isinstance(classifier(model), nn.Linear):
        raise ValueError(
            f"decoupling needs a linear classifier: expected nn.Linear at model.fc, got "
            f"{type(classifier(model)).__name__} (the run's --loss {run.cfg.loss} uses a cosine "
            "classifier)"
        )
    load_weights(model, run.state["model"], str(run.checkpoint))
    return model.to(device)


# --------------------------------------------------------------------------- data


@dataclass
class _Data:
    """The stage-one run's data: augmented training batches and evaluation batches."""

    labels: np.ndarray  # training labels, in training-set order
    stream: Callable[
        [int, Any], Any
    ]  # (batch size, sampler or None) -> InMemoryStream / LoaderStream
    batches: Callable[[str], Iterator[tuple[Tensor, Tensor]]]  # split -> normalised batches
    eval_split: str
    tune_split: str | None  # a validation split other than the evaluated one, if any
    record: dict  # the run's data record, with the fingerprints of the data read now
    # the tune split's source and fingerprint, as the record holds the others (stage one
    # does not record it: written into decouple.json and run.json when tau is chosen on it)
    tune_data: dict | None = None


def _checked_record(run: _Run, class_names, fingerprints: dict, accept_change: bool) -> dict:
    """The run's data record with the class names and fingerprints of the data as read now;
    refused (one line) when they differ from stage one's, unless ``accept_change``."""
    from .engine.run_folder import RunFolder

    record = {**run.record, "class_names": list(class_names)}
    for split in ("train", "test"):
        record[split] = {**run.record[split], "fingerprint": fingerprints[split]}
    RunFolder.read(run.folder).check_data(record, accept_change=accept_change)
    return record


def _memory_data(run: _Run, device: torch.device, eval_batch: int, accept_change: bool) -> _Data:
    from .data.augment import normalize_images
    from .engine.distributed import DistContext
    from .engine.run_data import prepare_data
    from .engine.streams import InMemoryStream

    cfg = run.cfg
    data = prepare_data(cfg)
    record = _checked_record(run, data.train.class_names, data.fingerprints, accept_change)
    if run.subset.get("indices") is not None and data.indices.tolist() != run.subset["indices"]:
        raise ValueError(f"the training subset of {cfg.dataset} differs from the run's subset.json")
    to_device = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).contiguous().to(device)  # noqa: E731
    x_train, x_test = to_device(data.train.images), to_device(data.test.images)
    y_train = torch.from_numpy(data.train.labels).to(device)
    y_test = torch.from_numpy(data.test.labels).to(device)
    ctx = DistContext(device=device)

    def stream(batch: int, sampler):
        return InMemoryStream(
            x_train, y_train, batch_size=batch, seed=cfg.seed, pad=cfg.pad, flip=cfg.flip, ctx=ctx,
            sampler=sampler,
        )  # fmt: skip

    def batches(split: str):
        for i in range(0, x_test.shape[0], eval_batch):
            yield normalize_images(x_test[i : i + eval_batch]), y_test[i : i + eval_batch]

    return _Data(data.train.labels, stream, batches, "test", None, record)


def _file_data(
    run: _Run, device: torch.device, eval_batch: int, num_workers: int, accept_change: bool
) -> _Data:
    """The stage-one run's image files through the trainer's pipeline: its ``--image-decode``,
    ``--worker-output`` and ``--[no-]persistent-workers`` for training, its evaluation transform."""
    from .data import loaders, prepared
    from .engine.distributed import DistContext
    from .engine.run_data import eval_pipeline, layout_fingerprints, train_pipeline
    from .engine.streams import LoaderStream

    cfg = run.cfg
    layout = prepared.load_prepared(cfg.dataset, cfg.data_dir)
    fingerprints = layout_fingerprints(layout, cfg.data_dir)
    record = _checked_record(run, layout.class_names, fingerprints, accept_change)
    indices = run.subset.get("indices")
    samples = (
        layout.train_samples if indices is None else [layout.train_samples[i] for i in indices]
    )
    labels = np.asarray([label for _, label in samples], dtype=np.int64)
    if np.bincount(labels, minlength=len(run.counts)).tolist() != run.counts.tolist():
        raise ValueError(
            f"the prepared {cfg.dataset} training set differs from the run's subset.json"
        )
    ctx = DistContext(device=device)
    transform, collate, on_device = train_pipeline(cfg, ctx)
    train_set = loaders.ImageFileDataset(layout.root, samples, transform)

    def stream(batch: int, sampler):
        return LoaderStream(
            train_set, batch_size=batch, seed=cfg.seed, ctx=ctx, num_workers=num_workers,
            collate=collate, sampler=sampler, persistent=cfg.persistent_workers,
            on_device=on_device,
        )  # fmt: skip

    eval_transform, normalize = eval_pipeline(cfg)

    def batches(split: str):
        dataset = loaders.ImageFileDataset(layout.root, layout.splits[split], eval_transform)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=eval_batch, num_workers=num_workers,
            collate_fn=loaders.collate_skip_bad,
        )  # fmt: skip
        for images, labels_, _ in loader:
            if images.shape[0]:
                images = images.to(device)
                yield (normalize(images) if normalize else images), labels_.to(device)

    tune = layout.tune_split
    tune_data = (
        {"source": record["test"]["source"], "fingerprint": fingerprints[tune]} if tune else None
    )
    return _Data(labels, stream, batches, layout.eval_split, tune, record, tune_data)


# --------------------------------------------------------------------------- features and heads


def _autocast(cfg, device: torch.device, log: Callable[[str], Any]):
    """The stage-one run's autocast on ``device``; fp16 on the CPU is announced (one line)."""
    from .engine.precision import autocast, warn_fp16_on_cpu

    warn_fp16_on_cpu(cfg.precision, device, log, "the run's precision")
    return autocast(device, cfg.precision)


@torch.no_grad()
def _features(backbone: nn.Module, data: _Data, split: str, cast) -> tuple[Tensor, Tensor]:
    """Frozen features ``(N, D)`` (float32) and labels ``(N,)`` of the split ``split``."""
    feats, labels = [], []
    for x, y in data.batches(split):
        with cast:
            feats.append(backbone(x).float())
        labels.append(y)
    if not feats:  # every image unreadable (moved or deleted since `prepare`)
        raise ValueError(
            f"no readable image in the {split} split to choose tau on: expected its image "
            "files where `prepare` found them (or pass --tau VALUE)"
        )
    return torch.cat(feats), torch.cat(labels)


def _top1(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(1) == labels).double().mean())


def _fit(head: nn.Module, groups, backbone: nn.Module, stream, loss_fn, ctx: dict) -> list[float]:
    """Train the parameter ``groups`` (each with its weight decay) of ``head`` on frozen
    features of ``stream``: SGD, cosine lr to 0."""
    opts, cast, log = ctx["options"], ctx["cast"], ctx["log"]
    lr, epochs = ctx["lr"], opts.epochs
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=opts.momentum)
    total, step, losses = max(1, epochs * stream.steps_per_epoch), 0, []
    for epoch in range(epochs):
        loss_sum, n = torch.zeros((), device=ctx["device"]), 0
        for x, y in stream.epoch(epoch):
            for group in optimizer.param_groups:
                group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / total))
            with torch.no_grad(), cast:
                features = backbone(x)
            loss = loss_fn(head(features.float()), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            step, n = step + 1, n + 1
        if n == 0:  # e.g. every image of the epoch unreadable: nothing was trained
            raise ValueError(f"no training batch in stage-two epoch {epoch + 1}")
        mean = float(loss_sum) / n
        if not math.isfinite(mean):
            raise ValueError(f"the stage-two loss is not finite at epoch {epoch + 1}: lower --lr")
        losses.append(mean)
        log(f"{opts.method} epoch {epoch + 1}/{epochs}: loss {mean:.4f}")
    return losses


def _stage_two_loss(run: _Run, opts: DecoupleOptions, device: torch.device):
    from .losses import build_loss

    loss_fn = build_loss(opts.loss, run.counts, beta=opts.beta, gamma=opts.gamma).to(device)
    if loss_fn.normalized_classifier:
        raise ValueError(
            f"stage-two loss {opts.loss!r} needs a cosine classifier: expected one for a linear fc "
            "(softmax, sigmoid, focal, logit_adjusted, balanced_softmax)"
        )
    return loss_fn


def _sampler(opts: DecoupleOptions, data: _Data, seed: int):
    uniform = opts.sampler == CLASS_BALANCED_SAMPLER
    return ClassUniformSampler(data.labels, seed) if uniform else None


def _crt(run: _Run, backbone, fc: nn.Linear, data: _Data, ctx: dict) -> tuple[nn.Linear, dict]:
    from .losses import init_prior_bias_
    from .optim import parameter_groups

    opts, device, loss_fn = ctx["options"], ctx["device"], ctx["loss_fn"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(run.cfg.seed + 1)
        # a classifier without a bias gets none: the run's model must still load the result
        head = nn.Linear(fc.in_features, fc.out_features, bias=fc.bias is not None).to(device)
    no_decay = []
    if loss_fn.uses_prior_bias:  # its bias starts at the prior and is not decayed (as stage one)
        no_decay.append(init_prior_bias_(head).bias)
    groups = parameter_groups(
        head, ctx["weight_decay"], no_decay=no_decay, bias_and_norm=run.cfg.no_decay_bias_and_norm
    )
    stream = data.stream(ctx["batch_size"], _sampler(opts, data, run.cfg.seed))
    losses = _fit(head, groups, backbone, stream, loss_fn, ctx)
    return head, {"train_loss": losses}


def _lws(run: _Run, backbone, fc: nn.Linear, data: _Data, ctx: dict) -> tuple[nn.Linear, dict]:
    opts, loss_fn = ctx["options"], ctx["loss_fn"]
    head = LWSHead(fc)
    groups = [{"params": [head.scales], "weight_decay": ctx["weight_decay"]}]  # s alone trains
    stream = data.stream(ctx["batch_size"], _sampler(opts, data, run.cfg.seed))
    losses = _fit(head, groups, backbone, stream, loss_fn, ctx)
    return head.folded(), {"train_loss": losses, "scales": head.scales.detach().cpu().tolist()}


def _tau_norm(run: _Run, backbone, fc: nn.Linear, data: _Data, ctx: dict) -> tuple[nn.Linear, dict]:
    opts = ctx["options"]
    info: dict[str, Any] = {"tau_bias": opts.tau_bias}
    bias = fc.bias if opts.tau_bias == "keep" else None
    for t in [opts.tau] if opts.tau is not None else opts.taus:  # before the features
        _check_tau(fc.weight.detach(), float(t), "--tau" if opts.tau is not None else "--taus")
    if opts.tau is not None:
        tau = float(opts.tau)
        info["tau_chosen_on"] = "given (--tau)"
    elif data.tune_split is None:
        raise ValueError(
            f"{run.cfg.dataset} has no validation split apart from the evaluated "
            f"{data.eval_split} split to choose tau on: pass --tau VALUE (or prepare a list dataset "
            "with a val list and a test list)"
        )
    else:
        feats, labels = _features(backbone, data, data.tune_split, ctx["cast"])
        search = []
        for t in sorted(set(opts.taus)):  # ascending: ties go to the smallest tau
            logits = nn.functional.linear(feats, tau_normalize(fc.weight, t), bias)
            search.append({"tau": float(t), "accuracy": _top1(logits, labels)})
        best = max(search, key=lambda r: r["accuracy"])  # the first: the smallest on ties
        tau = best["tau"]
        info.update(tau_search=search, tau_chosen_on=data.tune_split, tau_data=data.tune_data)
        ctx["log"](
            f"tau_norm: tau {tau:g} (top-1 {100 * best['accuracy']:.2f}% on {data.tune_split})"
        )
    head = nn.Linear(fc.in_features, fc.out_features, bias=fc.bias is not None).to(fc.weight.device)
    with torch.no_grad():
        head.weight.copy_(tau_normalize(fc.weight.detach(), tau))
        if fc.bias is not None:  # the run's architecture, the bias dropped as zeros
            head.bias.copy_(fc.bias if bias is not None else torch.zeros_like(fc.bias))
    info["tau"] = tau
    return head, info


#: method name -> stage two: (run, frozen backbone, stage-one fc, data, context) -> (new fc, info)
_METHODS: dict[str, Callable[..., tuple[nn.Linear, dict]]] = {
    "crt": _crt,
    "tau_norm": _tau_norm,
    "lws": _lws,
}


# --------------------------------------------------------------------------- the stage-two run


def _open_out(run: _Run, out: Path, overwrite: bool):
    """The stage-two run folder (checked, nothing written yet; its lock held) and its config."""
    import dataclasses

    from .engine.run_folder import RunFolder

    if (out / "run.json").is_file() and not overwrite:  # (decouple has no --resume)
        raise ValueError(f"{out} already holds a run: pass --overwrite to replace it")
    cfg = dataclasses.replace(run.cfg, out=str(out), overwrite=overwrite, resume=False)
    return RunFolder.open(cfg), cfg


@torch.no_grad()
def _evaluate(model: nn.Module, data: _Data, counts: np.ndarray, cast) -> dict[str, Any]:
    from .engine.metrics import EvalCounts, summarize

    model.eval()
    result = EvalCounts.zeros(len(counts), device=next(model.parameters()).device)
    for x, y in data.batches(data.eval_split):
        with cast:
            logits = model(x)
        result.update(logits.float(), y)
    metrics = summarize(result, counts)
    if metrics["num_test_images"] == 0:  # every image unreadable: not a test error of 100%
        raise ValueError(
            f"no readable image in the {data.eval_split} split to evaluate: expected its image "
            "files where `prepare` found them"
        )
    return metrics


def _write(folder, cfg, run: _Run, record: dict, model, metrics: dict, settings: dict) -> None:
    """Through :class:`~classbalanced.engine.run_folder.RunFolder`, like any run; the data
    record names the split tau was chosen on (``val``) beside the others."""
    from .engine.metrics import scalar_metrics
    from .engine.run_folder import DECOUPLE_FILE

    if settings.get("tau_data"):
        record = {**record, settings["tau_chosen_on"]: settings["tau_data"]}
    folder.start(cfg, run.subset, record)
    folder.write_json(DECOUPLE_FILE, settings)
    state = {
        "model": model.state_dict(),
        "config": cfg.to_dict(),
        "class_names": list(run.record.get("class_names") or []),
        "history": [],
        "decouple": settings,
    }
    folder.save_checkpoint(int(run.state.get("global_step", 0)), state, keep=1)
    folder.write_json("history.json", [scalar_metrics(metrics)])
    folder.write_json("metrics.json", metrics)


def _load_data(run: _Run, options: DecoupleOptions, device: torch.device) -> _Data:
    from .config import LARGE_DATASETS

    cfg, accept = run.cfg, options.accept_data_change
    if cfg.dataset in LARGE_DATASETS:
        workers = cfg.num_workers if options.num_workers is None else options.num_workers
        return _file_data(run, device, cfg.eval_batch_size, workers, accept)
    return _memory_data(run, device, cfg.eval_batch_size, accept)


def _check_one_process() -> None:
    """Refuse torchrun: every one of its processes would run it all and write ``out``."""
    world = os.environ.get("WORLD_SIZE", "1")
    if world.strip() != "1":
        raise ValueError(
            f"decouple runs in one process: expected no torchrun (or one process), "
            f"got WORLD_SIZE={world}"
        )


def _check_workers(run: _Run, options: DecoupleOptions) -> None:
    from .data.registry import is_large_dataset

    if options.num_workers is not None and not is_large_dataset(run.cfg.dataset):
        raise ValueError(
            f"--num-workers applies to image-file data sets, not {run.cfg.dataset} (held in memory)"
        )


def _freeze_backbone(model: nn.Module) -> nn.Linear:
    """Take the classifier out of ``model`` (``fc`` becomes the identity: ``model`` gives
    features) and freeze the rest: no gradients, batch-norm statistics fixed."""
    from .models.registry import classifier, set_classifier_

    fc = classifier(model)
    if not isinstance(fc, nn.Linear):  # refused before, when the run was loaded
        raise ValueError(f"decoupling needs a linear classifier, got {type(fc).__name__}")
    set_classifier_(model, nn.Identity())
    model.eval().requires_grad_(False)
    return fc


def _context(run: _Run, options: DecoupleOptions, data: _Data, **given) -> dict[str, Any]:
    """What a method reads (``given``: device, cast, log, loss_fn), with the stage-two
    ``lr``, ``weight_decay`` and ``batch_size`` (the run's where ``options`` has none)."""
    cfg = run.cfg
    return {
        "options": options,
        **given,
        "lr": options.lr if options.lr is not None else cfg.lr,
        "weight_decay": cfg.weight_decay if options.weight_decay is None else options.weight_decay,
        # a batch larger than the training set shrinks to it (as the trainer's in memory)
        "batch_size": min(options.batch_size or cfg.batch_size, len(data.labels)),
    }


def _settings(run: _Run, options: DecoupleOptions, ctx: dict, split: str, info: dict) -> dict:
    """``decouple.json``: the method, its stage-one run and every setting it used."""
    return {
        "method": options.method,
        "stage_one": str(run.folder),
        "stage_one_checkpoint": str(run.checkpoint),
        "stage_one_checkpoint_sha256": run.checkpoint_sha256,
        "options": {k: v for k, v in asdict(options).items() if k not in ("out", "overwrite")},
        "lr": ctx["lr"],
        "weight_decay": ctx["weight_decay"],
        "batch_size": ctx["batch_size"],
        "evaluated_split": split,
        **info,
    }


def _result_line(run: _Run, options: DecoupleOptions, split: str, metrics: dict) -> str:
    groups = "/".join(
        "-"
        if metrics[f"{g}_shot_accuracy"] is None
        else f"{100 * metrics[f'{g}_shot_accuracy']:.1f}"
        for g in ("many", "medium", "few")
    )
    return (
        f"{options.method} on {run.folder} ({run.checkpoint.name}): {split} error "
        f"{metrics['error_percent']:.2f}%  many/medium/few acc {groups}  -> {options.out}"
    )


def decouple(
    run: str | Path, options: DecoupleOptions, *, log: Callable[[str], Any] = print
) -> dict[str, Any]:
    """Stage two (``options.method``) on the finished run in folder ``run``; write ``options.out``.

    Returns the metrics written to ``<out>/metrics.json``: those of
    :func:`classbalanced.engine.metrics.summarize` on the run's evaluation split, the run's
    summary fields, and ``decouple`` (method, settings, stage-one run, chosen ``tau``, ...).

    Raises:
        FileNotFoundError / ValueError: not a finished run, a classifier that is not linear,
            a bad option, ``out`` holding something else (see :class:`DecoupleOptions`),
            or written by another process right now.
    """
    from .engine.run_folder import lock_run

    options.validate()
    _check_one_process()
    r = _load_run(run)
    _check_workers(r, options)
    out = Path(options.out)
    if out.resolve() == r.folder.resolve():  # also through a symbolic link or ".."
        raise ValueError(f"--out {out} is the stage-one run: expected another folder")
    with lock_run(out, f"decouple --method {options.method}", log=log):  # held to the end
        return _stage_two(r, options, out, log)


def _stage_two(r: _Run, options: DecoupleOptions, out: Path, log) -> dict[str, Any]:
    """:func:`decouple` with the lock of ``out`` held."""
    from .engine.distributed import resolve_device
    from .engine.loop import summary_fields
    from .models.registry import set_classifier_

    out_folder, out_cfg = _open_out(r, out, options.overwrite)
    device = resolve_device(options.device, 0)
    cast = _autocast(r.cfg, device, log)  # before the data load (minutes at scale)
    model = _build_model(r, device)
    trained = options.method in TRAINED_METHODS  # checked before the data load (minutes at scale)
    loss_fn = _stage_two_loss(r, options, device) if trained else None
    data = _load_data(r, options, device)
    fc = _freeze_backbone(model)
    ctx = _context(r, options, data, device=device, cast=cast, log=log, loss_fn=loss_fn)
    head, info = _METHODS[options.method](r, model, fc, data, ctx)
    set_classifier_(model, head.requires_grad_(False))
    metrics = _evaluate(model, data, r.counts, cast)
    settings = _settings(r, options, ctx, data.eval_split, info)
    summary = {**summary_fields(r.cfg, np.asarray(r.counts)), "method": options.method}
    metrics = {**summary, **metrics, "epoch": r.cfg.epochs, "decouple": settings}
    _write(out_folder, out_cfg, r, data.record, model, metrics, settings)
    log(_result_line(r, options, data.eval_split, metrics))
    return metrics
