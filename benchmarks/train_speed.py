"""Training throughput (images/s) of our loop against a plain DataLoader reference loop.

Run from the repository root::

    .venv/bin/python benchmarks/train_speed.py                 # cuda if available, else cpu
    .venv/bin/python benchmarks/train_speed.py --device cpu --threads 2 --steps 20

Both loops train the same ResNet-32 (same seeded initialisation, including the
classifier-bias prior the focal loss asks for), with the same class-balanced
focal loss module (``build_loss("focal", counts, beta=0.9999, gamma=1.0)``), the
same SGD (momentum 0.9, weight decay 2e-4 on the parameter groups of
``parameter_groups``) and batch size, on the same data, in one process.

Data: a synthetic CIFAR-10-LT-like training set, ``N = 12406`` uint8 images of
32x32x3 with the IF-100 long-tailed class counts of
``classbalanced.data.longtail_counts(5000, 10, 100)``, drawn from a seeded
``numpy.random.Generator``: each image is a per-class template plus uniform
noise, so the task is learnable and the losses can be compared (the pixel
values do not affect speed).

"ours": the library's real training step. Rather than calling
``classbalanced.engine.trainer.train`` (whose per-epoch figure would fold in
the first, compiling, steps and the epoch-end bookkeeping, and would need a
full 97-step epoch per configuration -- minutes on a 2-core CPU), the script
builds the run with the trainer's own pieces and runs its inner-loop body
verbatim: the model and parameter groups from ``network.build_training_model`` (seeded
init, prior bias, ``channels_last`` conversion), the batches from
``InMemoryStream`` (uint8 images held on the device, the epoch plan drawn up
front, whole-batch ``crop_flip`` + ``normalize_images``), the ``LRSchedule``
written into the parameter groups every step, ``zero_grad(set_to_none=True)``,
the optional ``channels_last`` input conversion, ``precision.autocast`` around
the forward pass, the loss, backward, ``optimizer.step()``, the on-device loss
accumulation and the trainer's host read of the loss every 20 steps. What is
left out is per-epoch work (tqdm bar updates, tensorboard scalars, evaluation,
checkpoints); their cost is measured separately (see docs/benchmarks.md).
``torch.compile`` wraps the model exactly as the trainer does
(``torch.compile(model)``).

"reference": a plain PyTorch loop: a ``torch.utils.data.Dataset`` returning a
PIL image built from the same uint8 array, per-image torchvision transforms
(``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``,
``Normalize((0.5,) * 3, (0.5,) * 3)``), ``DataLoader(batch_size, shuffle=True,
drop_last=True)`` with ``num_workers`` 0 and 2 (the better one is the reference
the ratios use, to be fair to it), an eager float32 NCHW model, the same loss
module and optimiser, constant learning rate, no host reads of the loss.

Correctness: every "ours" configuration starts from the same initial weights and
sees the same batches in the same order (the stream is a pure function of the
seed), so it can be compared with the eager float32 NCHW configuration: the
table shows the relative difference of the first step's loss, of the mean loss
over all its steps (warm-up and timed: the training trajectory), and the
relative L2 error of the first step's full gradient vector. A configuration
counts as correct when both loss differences are below 1e-2. The gradient error
is informative only: at initialisation the gradient of this deep BN network is
ill-conditioned -- merely switching fp32 to channels_last (a different
summation order, rounding ~1e-7) already moves it by ~1e-2, and bf16 autocast
by ~0.5, while the loss trajectories of fp32 and bf16 stay within ~1e-3.

Timing: after ``--warmup`` untimed steps per configuration (the first step's
wall time is reported separately: for ``torch.compile`` it is the compile time,
excluded from the throughput), the ``--steps`` timed steps are split over
``--rounds`` rounds; each round runs every configuration in turn, so bursts of
background load are spread over all of them. Each timed block of ``--block``
steps is timed with ``time.perf_counter`` (CUDA: ``torch.cuda.synchronize()``
at both ends of the block only); images/s = batch * block / median block time.
The medians make the figures robust to other jobs on a shared machine, not
immune to them.

The script always exits with status 0 (it is a measurement) and prints whether
the CPU target of the issue -- the default "ours" configuration at least 1.4x
the reference -- is met.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout

from classbalanced.config import TrainConfig
from classbalanced.data import longtail_counts
from classbalanced.engine.distributed import DistContext
from classbalanced.engine.network import build_training_model
from classbalanced.engine.precision import autocast as _autocast
from classbalanced.engine.streams import InMemoryStream
from classbalanced.losses import build_loss, init_prior_bias_
from classbalanced.models.registry import build_model
from classbalanced.optim import parameter_groups
from classbalanced.schedules import LRSchedule

NUM_CLASSES = 10
BETA, GAMMA = 0.9999, 1.0
CPU_TARGET = 1.4
CORRECT_TOL = 1e-2


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------


def synthetic_cifar10_lt(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(images (N, 32, 32, 3) uint8, labels (N,) int64, counts (10,))`` with IF-100 counts."""
    counts = np.asarray(longtail_counts(5000, NUM_CLASSES, 100.0), dtype=np.int64)
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(NUM_CLASSES, dtype=np.int64), counts)
    rng.shuffle(labels)
    # a learnable task (a per-class template plus noise), so that the losses of
    # the configurations can be compared over the run
    templates = rng.integers(0, 128, size=(NUM_CLASSES, 32, 32, 3), dtype=np.uint8)
    noise = rng.integers(0, 128, size=(labels.size, 32, 32, 3), dtype=np.uint8)
    return templates[labels] + noise, labels, counts


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------
# runners: each exposes step() and first_step (loss, flat grad) for the check
# ---------------------------------------------------------------------------


class OursRunner:
    """The trainer's inner-loop body (engine/loop.py, ``train_epoch``) with accumulate = 1."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        counts: np.ndarray,
        *,
        device: torch.device,
        model: str,
        batch_size: int,
        precision: str,
        channels_last: bool,
        compile: bool,
        seed: int,
    ) -> None:
        self.name = (
            f"ours: {precision}, {'channels_last' if channels_last else 'NCHW'}"
            f"{', compile' if compile else ', eager'}"
        )
        self.options = (precision, channels_last, compile)
        self.device = device
        cfg = TrainConfig(
            model=model,
            loss="focal",
            beta=BETA,
            gamma=GAMMA,
            batch_size=batch_size,
            precision=precision,
            channels_last=channels_last,
            compile=compile,
            seed=seed,
            progress=False,
        ).resolved()
        self.cfg = cfg
        ctx = DistContext(device=device)
        # as run_data._in_memory_data: NHWC uint8 -> NCHW uint8 on the device
        x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
        y = torch.from_numpy(labels).to(device)
        self.stream = InMemoryStream(
            x, y, batch_size=cfg.batch_size, seed=cfg.seed, pad=cfg.pad, flip=cfg.flip, ctx=ctx
        )
        self.loss_fn = build_loss(cfg.loss, counts, beta=cfg.beta, gamma=cfg.gamma).to(device)
        self.model, groups = build_training_model(cfg, counts, 3, self.loss_fn, ctx)
        self.optimizer = torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov
        )
        self.steps_per_epoch = self.stream.steps_per_epoch
        self.schedule = LRSchedule(
            cfg.lr,
            cfg.warmup_epochs,
            tuple(cfg.decay_epochs),
            tuple(cfg.decay_factors),
            self.steps_per_epoch,
        )
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self.model.train()
        self.global_step = 0
        self.loss_sum = torch.zeros((), device=device)
        self.first_step: tuple[float, Tensor] | None = None
        self.losses = 0
        self._batches = self._batch_iter()

    def _batch_iter(self) -> Iterator[tuple[int, Tensor, Tensor]]:
        epoch = 0
        while True:
            for s, (xb, yb) in enumerate(self.stream.epoch(epoch)):
                yield s, xb, yb
            epoch += 1

    def step(self) -> None:
        cfg, device, optimizer = self.cfg, self.device, self.optimizer
        s, xb, yb = next(self._batches)
        # --- the body of loop.train_epoch's step loop (accumulate = 1, one process) ---
        lr = self.schedule(self.global_step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss_value = torch.zeros((), device=device)
        if cfg.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with _autocast(device, cfg.precision):
            logits = self.forward(xb)
        loss = self.loss_fn(logits, yb)
        loss.backward()
        loss_value += loss.detach()
        if self.first_step is None:
            grads = [p.grad.detach().float().flatten() for p in self.model.parameters()]
            self.first_step = (float(loss_value), torch.cat(grads).cpu())
        optimizer.step()
        self.global_step += 1
        self.loss_sum += loss_value
        self.losses += 1
        if s % 20 == 0 or s == self.steps_per_epoch - 1:
            value = float(loss_value)
            if not math.isfinite(value):
                raise FloatingPointError(f"{self.name}: loss became {value}")


class _PILDataset(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


class ReferenceRunner:
    """A plain loop: DataLoader + per-image torchvision transforms, eager fp32 NCHW."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        counts: np.ndarray,
        *,
        device: torch.device,
        model: str,
        batch_size: int,
        num_workers: int,
        seed: int,
    ) -> None:
        from torchvision import transforms as T

        self.name = f"reference: DataLoader num_workers={num_workers}, fp32 NCHW eager"
        self.options = None
        self.device = device
        transform = T.Compose(
            [
                T.RandomCrop(32, padding=4),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
                T.Normalize((0.5,) * 3, (0.5,) * 3),
            ]
        )
        self.loader = torch.utils.data.DataLoader(
            _PILDataset(images, labels, transform),
            batch_size=batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(seed),
        )
        self.loss_fn = build_loss("focal", counts, beta=BETA, gamma=GAMMA).to(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = build_model(model, NUM_CLASSES)
        init_prior_bias_(self.model.fc)
        self.model.to(device).train()
        groups = parameter_groups(self.model, 2e-4, no_decay=[self.model.fc.bias])
        self.optimizer = torch.optim.SGD(groups, lr=0.1 * batch_size / 128, momentum=0.9)
        self.first_step = None
        self._batches = self._batch_iter()

    def _batch_iter(self):
        while True:
            yield from self.loader

    def step(self) -> None:
        x, y = next(self._batches)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        self.optimizer.step()


# ---------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------


def measure(
    runners: list,
    *,
    warmup: int,
    steps: int,
    rounds: int,
    block: int,
    batch: int,
    device,
    on_round=None,
) -> dict[str, dict]:
    """Per configuration: the first step's time, then the median block time over the rounds;
    ``on_round(done, rounds, results)`` after each round, with the medians so far."""
    results: dict[str, dict] = {}
    for r in runners:
        _sync(device)
        t0 = time.perf_counter()
        r.step()
        _sync(device)
        first = time.perf_counter() - t0
        for _ in range(max(0, warmup - 1)):
            r.step()
        _sync(device)
        results[r.name] = {"first_s": first, "blocks": []}
        print(f"  warmed up {r.name} (first step {first:.2f} s)", flush=True)
    blocks_total = max(1, steps // block)
    per_round = [blocks_total // rounds + (i < blocks_total % rounds) for i in range(rounds)]
    for rnd, nblocks in enumerate(per_round):
        order = runners if rnd % 2 == 0 else runners[::-1]
        for r in order:
            for _ in range(nblocks):
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(block):
                    r.step()
                _sync(device)
                results[r.name]["blocks"].append(time.perf_counter() - t0)
        for r in runners:
            res = results[r.name]
            res["median_s"] = statistics.median(res["blocks"]) / block
            res["images_per_s"] = batch / res["median_s"]
        print(f"  round {rnd + 1}/{rounds} done", flush=True)
        if on_round is not None:
            on_round(rnd + 1, rounds, results)
    return results


def check(runners: list) -> dict[str, tuple[float, float, float]]:
    """Relative differences vs fp32 eager NCHW: first-step loss, mean loss of the run, first-step gradient."""
    base = next(r for r in runners if r.options == ("fp32", False, False))
    loss0, grad0 = base.first_step
    mean0 = float(base.loss_sum) / base.losses
    out = {}
    for r in runners:
        loss, grad = r.first_step
        assert r.losses == base.losses  # the same batches, so the trajectories are comparable
        dl = abs(loss - loss0) / abs(loss0)
        dm = abs(float(r.loss_sum) / r.losses - mean0) / abs(mean0)
        dg = float((grad - grad0).norm() / grad0.norm())
        out[r.name] = (dl, dm, dg)
    return out


def _configs(text: str) -> list[tuple[str, bool, bool]]:
    """``"fp32:cl:eager,bf16:nchw:compile"`` -> ``[("fp32", True, False), ("bf16", False, True)]``."""
    out = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if (
            len(parts) != 3
            or parts[0] not in ("fp32", "bf16", "fp16")
            or parts[1] not in ("nchw", "cl")
            or parts[2] not in ("eager", "compile")
        ):
            raise argparse.ArgumentTypeError(
                f"expected PRECISION:nchw|cl:eager|compile (e.g. bf16:cl:compile), got {item!r}"
            )
        out.append((parts[0], parts[1] == "cl", parts[2] == "compile"))
    return out


def write_json(
    path, args, device, runners, results, checks, chosen_name, steps_per_run, rounds_done=None
) -> None:
    """The table as data: one row per configuration (gpu_check.py reads it); rewritten
    after every round (``rounds_done``), so a run stopped early leaves its rows so far."""
    rows = []
    for r in runners:
        res = results[r.name]
        dl, dm, dg = checks.get(r.name, (None, None, None))
        rows.append(
            {
                "name": r.name,
                "default": r.name == chosen_name,
                "images_per_s": res["images_per_s"],
                "step_s": res["median_s"],
                "first_step_s": res["first_s"],
                "implied_200_epochs_s": steps_per_run * res["median_s"],
                "first_loss_rel_diff": dl,
                "mean_loss_rel_diff": dm,
                "first_grad_rel_err": dg,
            }
        )
    doc = {
        "torch": torch.__version__,
        "device": str(device),
        "model": args.model,
        "batch": args.batch_size,
        "steps_per_200_epochs": steps_per_run,
        "rounds_done": rounds_done,
        "rows": rows,
    }
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)  # whole or absent, also when the run is stopped while writing


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--steps", type=int, default=None, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per configuration")
    p.add_argument("--rounds", type=int, default=None, help="rounds the timed steps are split over")
    p.add_argument("--block", type=int, default=None, help="steps per timed block")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--model", default="resnet32")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default=None,
        help="ours (default: fastest measured here)",
    )
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument(
        "--sweep",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the other configurations of interest (default: yes)",
    )
    p.add_argument(
        "--configs",
        type=_configs,
        default=None,
        help="'ours' configurations to time instead of the sweep, e.g. "
        "fp32:cl:eager,bf16:cl:compile (PRECISION:nchw|cl:eager|compile)",
    )
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[0, 2],
        help="num_workers values tried for the reference (the better one is used)",
    )
    args = p.parse_args(argv)

    name = args.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.steps or (200 if cuda else 20)
    warmup = args.warmup or (20 if cuda else 3)
    block = args.block or (10 if cuda else 1)
    rounds = args.rounds or (4 if cuda else 2)

    # Defaults of "ours": the fastest correct configuration measured (docs/benchmarks.md).
    # CPU (2-core EPYC with avx512_bf16): bf16 autocast, channels_last, eager.
    # CUDA (unmeasured here): bf16 autocast, channels_last, torch.compile.
    default = ("bf16", True, cuda)
    chosen = (
        args.precision or default[0],
        default[1] if args.channels_last is None else args.channels_last,
        default[2] if args.compile is None else args.compile,
    )
    if device.type == "cpu" and chosen[0] == "fp16":
        raise SystemExit("fp16 autocast is for CUDA; use --precision bf16 or fp32 on the CPU")
    combos = [("fp32", False, False), chosen]
    if args.configs is not None:
        combos += args.configs
    elif args.sweep:
        combos += [
            ("fp32", True, False),
            ("bf16", False, False),
            ("bf16", True, False),
            ("fp32", False, True),
            ("bf16", True, True),
        ]
    combos = list(dict.fromkeys(combos))

    images, labels, counts = synthetic_cifar10_lt(args.seed)
    print(
        f"torch {torch.__version__}, device {device} "
        f"({torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine()}), "
        f"threads {torch.get_num_threads()}, model {args.model}, batch {args.batch_size}, "
        f"N {len(labels)} (IF 100 counts {counts.tolist()})",
        flush=True,
    )
    common = dict(device=device, model=args.model, batch_size=args.batch_size, seed=args.seed)
    refs = [ReferenceRunner(images, labels, counts, num_workers=w, **common) for w in args.workers]
    ours = [
        OursRunner(images, labels, counts, precision=pr, channels_last=cl, compile=co, **common)
        for pr, cl, co in combos
    ]
    runners = refs + ours
    chosen_name = next(r.name for r in ours if r.options == chosen)
    steps_per_run = 200 * (len(labels) // args.batch_size)

    def on_round(done: int, total: int, results: dict) -> None:
        # each row as soon as it is measured: a run stopped early has reported these
        for r in runners:
            res = results[r.name]
            print(
                f"  row after round {done}/{total}: {r.name}: {res['images_per_s']:.0f} images/s, "
                f"{1e3 * res['median_s']:.2f} ms/step, first step {res['first_s']:.1f} s",
                flush=True,
            )
        if args.json:
            checks = check(ours)
            write_json(
                args.json, args, device, runners, results, checks, chosen_name, steps_per_run, done
            )

    results = measure(
        runners,
        warmup=warmup,
        steps=steps,
        rounds=rounds,
        block=block,
        batch=args.batch_size,
        device=device,
        on_round=on_round,
    )
    checks = check(ours)

    ref_best = max(refs, key=lambda r: results[r.name]["images_per_s"])
    ref_ips = results[ref_best.name]["images_per_s"]

    print()
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
        f"{args.model}, batch {args.batch_size}; images/s = batch / median step time over "
        f"{steps} timed steps ({rounds} rounds, after {warmup} warm-up steps)"
    )
    print()
    print(
        "| configuration | images/s | ratio vs reference | first step s "
        "| first loss rel. diff | mean loss rel. diff | first grad rel. err |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in runners:
        res = results[r.name]
        label = r.name + (" (default)" if r.name == chosen_name else "")
        label += " (reference)" if r is ref_best else ""
        dl, dm, dg = checks.get(r.name, (None, None, None))
        fmt = lambda v: "-" if v is None else f"{v:.1e}"  # noqa: E731
        print(
            f"| {label} | {res['images_per_s']:.0f} | {res['images_per_s'] / ref_ips:.2f}x "
            f"| {res['first_s']:.1f} | {fmt(dl)} | {fmt(dm)} | {fmt(dg)} |"
        )
    print()
    bad = [n for n, (dl, dm, _) in checks.items() if not (dl < CORRECT_TOL and dm < CORRECT_TOL)]
    if bad:
        print(f"WARNING: losses differ from fp32 eager by >= {CORRECT_TOL} for: {bad}")
    else:
        print(
            f"check: the losses (first step and mean over the run) of every 'ours' configuration "
            f"match fp32 eager NCHW within {CORRECT_TOL}"
        )
    if args.json:
        write_json(
            args.json, args, device, runners, results, checks, chosen_name, steps_per_run, rounds
        )
    ratio = results[chosen_name]["images_per_s"] / ref_ips
    if device.type == "cpu":
        verdict = "MET" if ratio >= CPU_TARGET else "NOT MET"
        print(
            f"CPU target (default ours >= {CPU_TARGET}x the reference): {verdict} "
            f"({ratio:.2f}x: {results[chosen_name]['images_per_s']:.0f} vs {ref_ips:.0f} images/s)"
        )
    else:
        est = steps_per_run * results[chosen_name]["median_s"]
        print(
            f"ratio {ratio:.2f}x; 200 epochs x {len(labels) // args.batch_size} steps at this rate: "
            f"{est:.0f} s of training steps (target: a full run, evaluation included, < 60 s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
