"""Fitting the stage-two classifier on the frozen backbone: ``crt`` (a new ``nn.Linear``),
``lws`` (the scales of :class:`~.heads.LWSHead`), both SGD with a cosine learning rate to 0,
the epoch kept being the best on the validation list (the release's choice) or the last
when there is none; and ``tau_norm`` (no training: ``tau`` searched on the validation list).

Every method is ``(run, frozen backbone, stage-one fc, data, context) -> (new fc, info)``
(:data:`STAGE_TWO_METHODS`); ``context`` holds ``options``, ``device``, ``cast``, ``log``,
``loss_fn``, ``lr``, ``epochs``, ``weight_decay`` and ``batch_size``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..losses import build_loss, init_prior_bias_
from ..optim import parameter_groups
from .data import StageTwoData
from .heads import LWSHead, check_tau, tau_normalize
from .options import DecoupleOptions
from .samplers import stage_two_sampler
from .stage_one import StageOne

__all__ = [
    "STAGE_TWO_METHODS",
    "features",
    "top1",
    "fit",
    "stage_two_loss",
    "crt",
    "lws",
    "tau_norm",
]


@torch.no_grad()
def features(backbone: nn.Module, data: StageTwoData, split: str, cast) -> tuple[Tensor, Tensor]:
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


def top1(logits: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy of ``logits (N, C)`` against ``labels (N,)``."""
    return float((logits.argmax(1) == labels).double().mean())


def _validation(backbone: nn.Module, data: StageTwoData, ctx: dict) -> Callable | None:
    """``head -> top-1 on the validation list`` (None: no validation list); the backbone in
    evaluation mode, its features computed once when its batch norm stays fixed."""
    split = data.tune_split
    if split is None:
        return None
    cached: list = []

    @torch.no_grad()
    def accuracy(head: nn.Module) -> float:
        backbone.eval()
        if not cached or ctx["backbone_bn"] == "train":  # train: the statistics moved
            cached[:] = [features(backbone, data, split, ctx["cast"])]
        feats, labels = cached[0]
        return top1(head(feats), labels)

    return accuracy


def _snapshot(head: nn.Module, backbone: nn.Module) -> dict[str, Any]:
    """What an epoch leaves behind: the head's tensors and the backbone's buffers (batch
    norm's statistics move when it trains in train mode)."""
    return {
        "head": {k: v.detach().clone() for k, v in head.state_dict().items()},
        "buffers": {k: v.clone() for k, v in backbone.named_buffers()},
    }


def _restore(head: nn.Module, backbone: nn.Module, kept: dict[str, Any]) -> None:
    head.load_state_dict(kept["head"])
    with torch.no_grad():
        for name, buffer in backbone.named_buffers():
            buffer.copy_(kept["buffers"][name])


def fit(head: nn.Module, groups, backbone: nn.Module, stream, loss_fn, ctx: dict) -> dict:
    """Train the parameter ``groups`` (each with its weight decay) of ``head`` on the frozen
    backbone's features of ``stream``: SGD, cosine lr to 0; ``head`` (and the backbone's
    buffers) end as after the kept epoch. Returns the losses and how that epoch was chosen."""
    opts, cast, log = ctx["options"], ctx["cast"], ctx["log"]
    lr, epochs, train_bn = ctx["lr"], ctx["epochs"], ctx["backbone_bn"] == "train"
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=opts.momentum)
    total, step, losses = max(1, epochs * stream.steps_per_epoch), 0, []
    validate, scores, best = ctx.get("validate"), [], None
    for epoch in range(epochs):
        backbone.train(train_bn)  # eval: batch-norm statistics fixed, the backbone unchanged
        loss_sum, n = torch.zeros((), device=ctx["device"]), 0
        for x, y in stream.epoch(epoch):
            for group in optimizer.param_groups:
                group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / total))
            with torch.no_grad(), cast:
                feats = backbone(x)
            loss = loss_fn(head(feats.float()), y)
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
        line = f"{opts.method} epoch {epoch + 1}/{epochs}: loss {mean:.4f}"
        if validate is not None:
            scores.append(validate(head))
            line += f", top-1 {100 * scores[-1]:.2f}% on val"
            if best is None or scores[-1] > best[0]:  # ties: the earlier epoch
                best = (scores[-1], epoch + 1, _snapshot(head, backbone))
        log(line)
    backbone.eval()
    info: dict[str, Any] = {"train_loss": losses}
    if best is None:
        info.update(epoch_kept=epochs, epoch_chosen_on="last (no validation list)")
    else:
        _restore(head, backbone, best[2])
        info.update(epoch_kept=best[1], epoch_chosen_on=ctx["tune_split"], val_accuracy=scores)
        info["epoch_data"] = ctx["tune_data"]
    return info


def stage_two_loss(run: StageOne, opts: DecoupleOptions, device: torch.device):
    """The stage-two loss ``opts.loss``, weighted by the run's training counts."""
    loss_fn = build_loss(opts.loss, run.counts, beta=opts.beta, gamma=opts.gamma).to(device)
    if loss_fn.normalized_classifier:
        raise ValueError(
            f"stage-two loss {opts.loss!r} needs a cosine classifier: expected one for a linear fc "
            "(softmax, sigmoid, focal, logit_adjusted, balanced_softmax)"
        )
    return loss_fn


def _stream(run: StageOne, data: StageTwoData, ctx: dict):
    sampler = stage_two_sampler(ctx["options"].sampler, data.labels, run.cfg.seed)
    return data.stream(ctx["batch_size"], sampler)


def _with_validation(backbone: nn.Module, data: StageTwoData, ctx: dict) -> dict:
    return {
        **ctx,
        "validate": _validation(backbone, data, ctx),
        "tune_split": data.tune_split,
        "tune_data": data.tune_data,
    }


def crt(run: StageOne, backbone, fc: nn.Linear, data: StageTwoData, ctx: dict):
    """Classifier re-training: a new ``nn.Linear`` (the run's shape, bias or none)."""
    device, loss_fn = ctx["device"], ctx["loss_fn"]
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
    info = fit(
        head,
        groups,
        backbone,
        _stream(run, data, ctx),
        loss_fn,
        _with_validation(backbone, data, ctx),
    )
    return head, info


def lws(run: StageOne, backbone, fc: nn.Linear, data: StageTwoData, ctx: dict):
    """Learnable weight scaling: the scales ``s`` alone train; folded into an ``nn.Linear``."""
    head = LWSHead(fc)
    groups = [{"params": [head.scales], "weight_decay": ctx["weight_decay"]}]  # s alone trains
    info = fit(
        head,
        groups,
        backbone,
        _stream(run, data, ctx),
        ctx["loss_fn"],
        _with_validation(backbone, data, ctx),
    )
    return head.folded(), {**info, "scales": head.scales.detach().cpu().tolist()}


def tau_norm(run: StageOne | None, backbone, fc: nn.Linear, data: StageTwoData, ctx: dict):
    """tau-normalisation: ``tau`` given, or the best of the grid on the validation list."""
    opts = ctx["options"]
    info: dict[str, Any] = {"tau_bias": opts.tau_bias}
    bias = fc.bias if opts.tau_bias == "keep" else None
    for t in [opts.tau] if opts.tau is not None else opts.taus:  # before the features
        check_tau(fc.weight.detach(), float(t), "--tau" if opts.tau is not None else "--taus")
    if opts.tau is not None:
        tau = float(opts.tau)
        info["tau_chosen_on"] = "given (--tau)"
    elif data.tune_split is None:
        dataset = run.cfg.dataset if run is not None else "the data set"
        raise ValueError(
            f"{dataset} has no validation split apart from the evaluated "
            f"{data.eval_split} split to choose tau on: pass --tau VALUE (or prepare a list dataset "
            "with a val list and a test list)"
        )
    else:
        feats, labels = features(backbone, data, data.tune_split, ctx["cast"])
        search = []
        for t in sorted(set(opts.taus)):  # ascending: ties go to the smallest tau
            logits = nn.functional.linear(feats, tau_normalize(fc.weight, t), bias)
            search.append({"tau": float(t), "accuracy": top1(logits, labels)})
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
STAGE_TWO_METHODS: dict[str, Callable[..., tuple[nn.Linear, dict]]] = {
    "crt": crt,
    "tau_norm": tau_norm,
    "lws": lws,
}
