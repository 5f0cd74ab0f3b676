"""One DDP training step on CUDA, started by ``torchrun`` (tests/cuda/test_cuda_distributed.py).

Every rank takes its slice of one global batch from the library's ``InMemoryStream``,
runs a SyncBatchNorm ResNet-8 under DDP for ``--steps`` SGD steps, evaluates with the
library's ``evaluate`` (counts summed over ranks), and rank 0 saves the parameters,
losses and counts to ``--out``. Backend: ``nccl`` or ``gloo``; with ``--same-gpu`` every
rank uses ``cuda:0``.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from torch import nn

import classbalanced as cb
from classbalanced.engine import evaluate
from classbalanced.engine.distributed import DistContext
from classbalanced.engine.streams import InMemoryStream
from classbalanced.models import build_model

COUNTS = [40, 20, 10, 5, 2]


def data():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (96, 3, 16, 16), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, len(COUNTS), (96,), generator=g)
    return images, labels


def model(sync_bn: bool) -> nn.Module:
    torch.manual_seed(0)
    net = build_model("resnet8", len(COUNTS))
    return nn.SyncBatchNorm.convert_sync_batchnorm(net) if sync_bn else net


def train_steps(net, stream, steps: int, device) -> list[float]:
    loss_fn = cb.build_loss("softmax", COUNTS, beta=0.99).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    losses = []
    batches = stream.epoch(0)
    for _ in range(steps):
        x, y = next(batches)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--backend", required=True, choices=["nccl", "gloo"])
    p.add_argument("--same-gpu", action="store_true")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", 0 if args.same_gpu else local)
    torch.cuda.set_device(device)
    dist.init_process_group(args.backend, device_id=device if args.backend == "nccl" else None)
    ctx = DistContext(rank=rank, world_size=world, local_rank=local, device=device)
    images, labels = data()
    stream = InMemoryStream(
        images.to(device), labels.to(device), batch_size=32, seed=1, pad=2, flip=True, ctx=ctx
    )
    net = model(sync_bn=True).to(device)
    ddp = nn.parallel.DistributedDataParallel(net, device_ids=[device.index])
    losses = train_steps(ddp, stream, args.steps, device)
    counts = evaluate(
        net, images.to(device), labels.to(device), batch_size=16, ctx=ctx, num_classes=len(COUNTS)
    )
    # every rank's mean loss, gathered so that rank 0 can record the global mean
    local_losses = torch.tensor(losses, device=device)
    gathered = [torch.zeros_like(local_losses) for _ in range(world)]
    dist.all_gather(gathered, local_losses)
    if rank == 0:
        torch.save(
            {
                "state": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                "losses": torch.stack(gathered).mean(0).cpu(),
                "counts": counts.stacked().cpu(),
                "world": world,
                "backend": dist.get_backend(),
            },
            args.out,
        )
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
