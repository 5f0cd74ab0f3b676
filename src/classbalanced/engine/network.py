"""The run's network, built the same way for training and for evaluation."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import TrainConfig
from ..losses import build_loss, init_prior_bias_
from ..losses.criterion import Criterion
from ..models.registry import (
    build_model,
    classifier,
    load_pretrained_,
    use_normed_classifier_,
)
from ..models.sync_bn import sync_batchnorm
from ..optim import parameter_groups
from .distributed import DistContext

__all__ = ["build_network", "build_training_model"]


def build_network(
    cfg: TrainConfig,
    counts,
    in_channels: int,
    loss_fn: Criterion | None = None,
    *,
    pretrained: bool = False,
) -> nn.Module:
    """The run's network as training builds it: seeded initialisation (the global RNG is left
    alone), ``pretrained`` weights, LDAM's cosine classifier when the loss asks for it."""
    if loss_fn is None:  # ignored: loss_options never names "reduction" (validate refuses it)
        loss_fn = build_loss(cfg.loss, counts, beta=cfg.beta, gamma=cfg.gamma, **cfg.loss_options)  # type: ignore[arg-type]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, len(counts), in_channels=in_channels)
        if pretrained:
            load_pretrained_(model, cfg.model)
        if loss_fn.normalized_classifier:  # e.g. LDAM: cosine logits
            use_normed_classifier_(model)
    return model


def build_training_model(
    cfg: TrainConfig, counts, in_channels: int, loss_fn: Criterion, ctx: DistContext
):
    """The network on the device and its optimiser parameter groups."""
    model = build_network(cfg, counts, in_channels, loss_fn, pretrained=cfg.pretrained)
    no_decay: list[Tensor | str] = []
    if loss_fn.uses_prior_bias:
        no_decay.append(init_prior_bias_(classifier(model)).bias)
    if cfg.sync_bn:
        model = sync_batchnorm(
            model, world_size=ctx.world_size, device=ctx.device, name=f"model {cfg.model}"
        )
    model.to(ctx.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    groups = parameter_groups(
        model, cfg.weight_decay, no_decay=no_decay, bias_and_norm=cfg.no_decay_bias_and_norm
    )
    return model, groups
