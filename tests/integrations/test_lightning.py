"""classbalanced.integrations.lightning with the real Lightning Trainer on the CPU: the
ReweightCallback drives a ReweightSchedule from trainer.current_epoch, in one process and in
two (``strategy="ddp"``: this file run as a script, once per rank), every loss recomputed
with cb.class_balanced_loss."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import classbalanced as cb
from classbalanced.integrations import lightning as cbl

pl = pytest.importorskip(
    "lightning.pytorch",
    reason="needs the [lightning] extra: pip install 'classbalanced[lightning]'",
)

COUNTS = [30, 8, 2]  # 40 examples
BETA = 0.999


def long_tailed_data(seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.repeat_interleave(torch.arange(len(COUNTS)), torch.tensor(COUNTS))
    labels = labels[torch.randperm(len(labels), generator=generator)]
    features = torch.randn(len(labels), 4, generator=generator) + nn.functional.one_hot(labels, 4)
    return TensorDataset(features, labels)


class Recorder(pl.LightningModule):
    """A linear classifier trained with ClassBalancedLoss; keeps what each step saw."""

    def __init__(self, counts) -> None:
        super().__init__()
        self.net = nn.Linear(4, len(counts))
        self.criterion = cb.ClassBalancedLoss(counts, beta=BETA, loss_type="focal", gamma=0.5)
        self.steps: list[dict] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        loss = self.criterion(logits, y)
        weight = self.criterion.weight
        self.steps.append(
            dict(epoch=self.current_epoch, logits=logits.detach(), labels=y, loss=loss.detach(),
                 weight=None if weight is None else weight.clone())
        )  # fmt: skip
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(module, callbacks, root, **options) -> None:
    trainer = pl.Trainer(
        accelerator="cpu", callbacks=callbacks, default_root_dir=str(root), logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, **options,
    )  # fmt: skip
    trainer.fit(module, DataLoader(long_tailed_data(), batch_size=10, shuffle=True))


def check_steps(steps, counts, start_epoch: int) -> None:
    """Unweighted before start_epoch, the class-balanced weights of ``counts`` from it on,
    and every loss the class-balanced loss of its logits."""
    for step in steps:
        beta = BETA if step["epoch"] >= start_epoch else 0.0
        if beta:
            torch.testing.assert_close(step["weight"], cb.class_balanced_weights(counts, BETA))
        else:
            assert step["weight"] is None
        expected = cb.class_balanced_loss(
            step["logits"], step["labels"], counts, beta=beta, loss_type="focal", gamma=0.5
        )
        torch.testing.assert_close(step["loss"], expected, rtol=1e-6, atol=0)


def test_drw_switches_at_the_named_epoch(tmp_path):
    counts = cbl.class_counts(long_tailed_data().tensors[1])
    assert counts.tolist() == COUNTS
    module = Recorder(counts)
    schedule = cb.ReweightSchedule("drw", counts, BETA, start_epoch=2)
    callback = cbl.ReweightCallback(schedule, loss="criterion")
    fit(module, [callback], tmp_path, max_epochs=3, limit_train_batches=2, devices=1)
    assert [s["epoch"] for s in module.steps] == [0, 0, 1, 1, 2, 2]
    check_steps(module.steps, counts, start_epoch=2)


def test_fast_dev_run_with_the_loss_object_and_a_missing_loss_named(tmp_path):
    counts = torch.tensor(COUNTS)
    module = Recorder(counts)
    schedule = cb.ReweightSchedule("ramp", counts, BETA, start_epoch=4)
    fit(
        module, [cbl.ReweightCallback(schedule, loss=module.criterion)], tmp_path, fast_dev_run=True
    )
    assert len(module.steps) == 1
    torch.testing.assert_close(module.steps[0]["weight"], torch.ones(3))  # the ramp's beta 0
    with pytest.raises(TypeError, match=r"Recorder\.loss to be a loss with set_weight"):
        fit(Recorder(counts), [cbl.ReweightCallback(schedule)], tmp_path, fast_dev_run=True)
    copy = pickle.loads(pickle.dumps(cbl.ReweightCallback(schedule, loss="criterion")))  # ddp_spawn
    assert isinstance(copy, cbl.ReweightCallback) and copy.schedule.beta_at(2) == schedule.beta_at(
        2
    )
    with pytest.raises(TypeError, match="expects a classbalanced.ReweightSchedule"):
        cbl.ReweightCallback(COUNTS)


def ddp_main(out: Path) -> None:
    """Two CPU processes: counts of the whole training set, each process seeing its shard."""
    counts = cbl.class_counts(long_tailed_data().tensors[1])
    module = Recorder(counts)
    schedule = cb.ReweightSchedule("drw", counts, BETA, start_epoch=1)
    callback = cbl.ReweightCallback(schedule, loss="criterion")
    fit(module, [callback], out, max_epochs=2, devices=2, strategy="ddp")
    torch.save(module.steps, out / f"rank{module.global_rank}.pt")


@pytest.mark.slow
def test_ddp_two_cpu_processes_apply_the_global_counts_weights(tmp_path):
    """Both processes started at once, torchrun's way (LOCAL_RANK set: Lightning launches
    none itself), so they import in parallel."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "WORLD_SIZE": "2", "NODE_RANK": "0"}  # fmt: skip
    logs = [tmp_path / f"rank{rank}.log" for rank in (0, 1)]
    ranks = []
    for rank, log in enumerate(logs):
        with log.open("w") as sink:
            ranks.append(
                subprocess.Popen(
                    [sys.executable, __file__, str(tmp_path)],
                    env={**env, "LOCAL_RANK": str(rank)},
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        for process, log in zip(ranks, logs, strict=True):
            assert process.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        for process in ranks:  # the other rank would wait for a failed one
            process.kill()
            process.wait()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    seen = torch.zeros(len(COUNTS), dtype=torch.int64)
    for steps in ranks:
        assert [s["epoch"] for s in steps] == [0, 0, 1, 1]  # 20 examples each, batches of 10
        check_steps(steps, COUNTS, start_epoch=1)
        shard = torch.bincount(torch.cat([s["labels"] for s in steps[:2]]), minlength=3)
        assert shard.tolist() != COUNTS  # a shard's own counts would give other weights
        seen += shard
    assert seen.tolist() == COUNTS  # the two shards make the whole epoch


if __name__ == "__main__":
    ddp_main(Path(sys.argv[1]))
