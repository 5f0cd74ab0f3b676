"""A NaN / infinite loss stops the run with a clear message, or is skipped and counted."""

import json
from pathlib import Path

import pytest
import torch

from classbalanced.config import TrainConfig
from classbalanced.engine.checkpoint import latest_checkpoint
from classbalanced.engine.trainer import NonFiniteLoss, train
from classbalanced.losses import WeightedLoss, register_loss
from classbalanced.losses.registry import LOSS_REGISTRY

BAD_STEPS = {6, 7}  # 1-based optimiser steps whose loss is NaN: epoch 2, its steps 2 and 3


class _PoisonedLoss(WeightedLoss):
    """Softmax CE that returns NaN at chosen steps (counted by forward calls)."""

    def __init__(self):
        super().__init__("softmax")
        self.calls = 0

    def forward(self, logits, targets):
        self.calls += 1
        value = super().forward(logits, targets)
        return value * float("nan") if self.calls in BAD_STEPS else value


@pytest.fixture
def poisoned():
    register_loss("poisoned", lambda counts, **_: _PoisonedLoss())
    yield "poisoned"
    LOSS_REGISTRY.pop("poisoned")


def _cfg(tmp_path, **overrides):
    return TrainConfig(
        dataset="digits",
        imbalance_factor=10,
        model="simple_cnn",
        loss="poisoned",
        epochs=3,
        batch_size=128,  # 534 images: 4 steps per epoch
        pad=1,
        eval_every=1,
        device="cpu",
        progress=False,
        out=str(tmp_path / "run"),
        **overrides,
    )


# the speed options read the loss on the host once per epoch and checkpoint in the background:
# the first bad step is still found (tracked on the device) and the checkpoint still named
@pytest.mark.parametrize(
    "options", [{}, {"sync_every": 0, "async_checkpoints": True}], ids=["default", "fast"]
)
def test_nan_loss_stops_naming_epoch_step_and_checkpoint(tmp_path, poisoned, options):
    with pytest.raises(NonFiniteLoss) as info:
        train(_cfg(tmp_path, **options), log=lambda _: None)
    message = str(info.value)
    last = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert last is not None and last.name == "checkpoint-00000004.pt"  # end of epoch 1
    # found at the end of the epoch, reported at the step where it happened
    assert "epoch 2, step 2;" in message and str(last) in message and "\n" not in message


@pytest.mark.parametrize(
    "options", [{}, {"sync_every": 0, "sgd_impl": "fused"}], ids=["default", "fast"]
)
def test_skip_nonfinite_counts_and_finishes(tmp_path, poisoned, options):
    metrics = train(_cfg(tmp_path, skip_nonfinite=True, **options), log=lambda _: None)
    assert metrics["skipped_nonfinite_steps"] == len(BAD_STEPS)
    assert metrics["epoch"] == 3
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["skipped_nonfinite_steps"] == 2
    state = torch.load(latest_checkpoint(tmp_path / "run" / "checkpoints"), weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.parametrize("options", [{}, {"async_checkpoints": True}], ids=["sync", "async"])
def test_a_stop_between_two_loss_reads_after_a_nan_saves_no_nan_checkpoint(
    tmp_path, poisoned, engine_helpers, options
):
    """SIGTERM after step 7, the NaN at step 6, the loss read at steps 5 and 8 (--sync-every
    20, 4 steps an epoch): the stop reads the loss first, so the run ends as a non-finite
    loss naming the checkpoint before it, and no checkpoint of the NaN weights is written."""
    with engine_helpers.record_sgd_steps(sigterm_at=7), pytest.raises(NonFiniteLoss) as info:
        train(_cfg(tmp_path, **options), log=lambda _: None)
    last = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert last is not None and last.name == "checkpoint-00000004.pt"
    assert f"epoch 2, step 2; last good checkpoint: {last} " in str(info.value)


def _ddp_nan_worker(rank: int, folder: str) -> None:
    """One of 2 gloo processes: with --skip-nonfinite a DDP step whose loss is NaN on rank 1
    only, then a finite one; then a loss read (the non-finite check) after a NaN on rank 1."""
    import torch.distributed as dist
    from torch import nn

    from classbalanced.engine.distributed import DistContext
    from classbalanced.engine.loop import Network, Optimisation, Run, Schedules, _NonFiniteWatch
    from classbalanced.engine.run_folder import Manifest, RunFolder
    from classbalanced.engine.state import TrainState

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model, poison = nn.Linear(4, 3), [rank == 1]
        ddp = nn.parallel.DistributedDataParallel(model)

        def loss_fn(logits, _targets):
            return logits.sum() * (float("nan") if poison[0] else 1.0)

        run = Run(
            cfg=TrainConfig(skip_nonfinite=True, channels_last=False, device="cpu"),
            ctx=DistContext(rank, 2, rank),
            data=None,
            folder=RunFolder(Path(folder), Manifest(Path(folder)), writer=False, resuming=False),
            network=Network(model, ddp, ddp),
            loss_fn=loss_fn,
            optim=Optimisation(torch.optim.SGD(model.parameters(), lr=0.1), []),
            schedules=Schedules(lambda s: 0.1, 1),
            log=lambda _: None,
        )
        state, weights = TrainState(), [model.weight.detach().clone()]
        for _ in range(2):
            batch = iter([(torch.ones(2, 4), torch.zeros(2, dtype=torch.long))])
            run.optimizer_step(run.forward_backward(batch, 0.1), state, 0, 0)
            weights.append(model.weight.detach().clone())
            poison[0] = False
        watch = _NonFiniteWatch(torch.device("cpu"), 2)  # without --skip-nonfinite: a stop
        watch.update(torch.tensor(float("nan") if rank == 1 else 1.0))
        try:
            watch.check(0, run)  # every rank reads the loss at the same step
            stopped = ""
        except NonFiniteLoss as exc:
            stopped = str(exc)
        result = {"skipped": state.skipped_nonfinite, "weights": weights, "stopped": stopped}
        torch.save(result, f"{folder}/{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_under_ddp_a_nan_loss_on_one_rank_is_acted_on_by_every_rank(tmp_path):
    """A NaN loss on one rank reaches every rank's gradients through DDP's all-reduce. With
    --skip-nonfinite all ranks skip that step (a rank with a finite loss stepped with NaN
    gradients, so the model became NaN and every later step was skipped: a run that
    'finished' with NaN weights); without it all ranks stop, naming the same step (rank 0,
    its loss finite, went on, and a stop then checkpointed its NaN weights)."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_nan_worker, args=(str(tmp_path),), nprocs=2)
    ranks = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in (0, 1)]
    for result in ranks:
        start, after_nan, after_finite = result["weights"]
        assert result["skipped"] == 1
        assert torch.equal(after_nan, start)  # skipped: nothing applied
        assert torch.isfinite(after_finite).all() and not torch.equal(after_finite, start)
    assert torch.equal(ranks[0]["weights"][-1], ranks[1]["weights"][-1])  # still in step
    for result in ranks:
        assert result["stopped"].startswith("the loss is not finite at epoch 1, step 3;")
