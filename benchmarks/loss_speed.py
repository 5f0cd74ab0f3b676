"""Speed and peak memory of our losses against a literal port of the release's formulas,
eager and under ``torch.compile``, and against torchvision's compiled focal loss.

Run from the repository root::

    .venv/bin/python benchmarks/loss_speed.py            # cuda if available, else cpu
    .venv/bin/python benchmarks/loss_speed.py --device cpu --threads 2 --losses focal
    .venv/bin/python benchmarks/loss_speed.py --device cuda:1 --shapes 128x10 256x8142
    .venv/bin/python benchmarks/loss_speed.py --columns ours ours_nv ours_c  # some columns

For every loss (softmax, sigmoid, focal, logit_adjusted) and every shape (N, C) in
(128, 10), (128, 100), (256, 1000), (256, 8142) the script times one
forward + backward pass (``loss(logits, targets, w).backward()`` with fresh
``logits.grad``) of seven implementations, and measures the peak memory of that
pass for each of them, the same way for all:

* transcription eager / compiled: the naive port below, as is and under
  ``torch.compile`` (inductor);
* plain transcription compiled: the same formulas written with plain operations
  (one-hot by comparison, the per-example weight broadcast; no ``repeat``, no
  ``binary_cross_entropy_with_logits``), compiled: what a user would compile;
* torchvision compiled: ``torchvision.ops.sigmoid_focal_loss`` (alpha = -1) on
  one-hot targets times the per-example weights, compiled (sigmoid: gamma 0;
  none for the softmax losses);
* ours eager (default ``validate_args=True``), ours eager with
  ``validate_args=False``, ours compiled.

``--columns`` keeps some of them: running the script twice, with ``PYTHONPATH`` naming
two versions of the package, compares them side by side (docs/benchmarks.md). As soon
as a row is measured the table so far is printed (and flushed), so the last table of a
run cut short holds every finished row; then the goals.

The goals, for the focal rows measured (exit status 1 if one is missed): at (256, 8142)
ours eager and ours compiled each at least 1.5x faster than the compiled transcription
and with at most a third of the eager transcription's peak memory, and ours compiled
at most one ``(N, C)`` float32 buffer (the gradient it leaves) plus 64 KiB; at
(128, 10) ours eager (validation off allowed) no slower than the eager transcription.

``logit_adjusted`` is the logit-adjusted loss (tau 1) of the benchmark's counts, its
transcriptions the softmax ones of ``z + log(pi)``.

Inputs: ``logits = 2 * randn(N, C)`` (modest, so the naive exp/log1p modulator
stays finite), uniform random class-index targets, and class-balanced weights
(beta = 0.999) of a Zipf-like long-tailed count vector. Before timing, every
implementation is checked to agree with the eager transcription on these inputs
(loss and gradient within 1e-4 relative); the script aborts loudly otherwise.
Compilation happens in the untimed warm-up passes.

Timing: after ``--warmup`` untimed passes, the ``--repeats`` timed passes of each
implementation of a row are split over ``--rounds`` rounds; each round runs the
implementations back to back (in rotating order), so bursts of background load are
spread over all of them. The median (``--statistic min``: the minimum, the better
estimate of the idle cost when other jobs share the machine) wall-clock time of
a single pass is reported (CUDA: ``torch.cuda.synchronize()`` before each clock
reading).

Peak memory of one forward + backward pass, the same quantity for every column: bytes
live at the peak above those live before it (the logits, targets and weights;
``logits.grad`` is cleared first, so the gradient the pass leaves counts):

* CUDA: ``torch.cuda.reset_peak_memory_stats()``, then
  ``max_memory_allocated() - memory_allocated()`` taken before the pass.
* CPU: the pass runs under ``torch.profiler.profile(profile_memory=True)``;
  every allocation and free event the profiler records (``alloc_size``, negative
  for a free) is collected from its event tree, sorted by time, and summed
  cumulatively; the peak is the maximum of that running sum (the live bytes
  above the baseline; never below 0). Frees of tensors allocated before the
  pass only lower the running sum, so they cannot inflate the peak. The method
  is checked at start-up on functions with known answers (k tensors of a known
  size held at once give k * size; allocated and freed one at a time give
  size) and the script aborts if it is off by a single byte.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss as tv_sigmoid_focal_loss

from classbalanced.losses import (
    logit_adjusted_loss,
    sigmoid_cross_entropy,
    sigmoid_focal_cross_entropy,
    softmax_cross_entropy,
)
from classbalanced.weights import class_balanced_weights

SHAPES = ((128, 10), (128, 100), (256, 1000), (256, 8142))
LOSSES = ("softmax", "sigmoid", "focal", "logit_adjusted")
TARGET_SHAPE = (256, 8142)
SMALL_SHAPE = (128, 10)
TARGET_SPEEDUP = 1.5  # ours (eager and compiled) vs the compiled transcription
TARGET_MEMORY_RATIO = 1.0 / 3.0  # ours (eager and compiled) vs the eager transcription
#: ours compiled at TARGET_SHAPE: at most one (N, C) float32 buffer (the gradient it leaves)
#: plus this much for (N,)-sized buffers and scalars
TARGET_COMPILED_SLACK = 64 * 1024
#: column key -> header; "naive" is the transcription, "tv" torchvision's focal loss
COLUMNS = {
    "naive": "transcription eager",
    "naive_c": "transcription compiled",
    "plain_c": "plain transcription compiled",
    "tv_c": "torchvision compiled",
    "ours": "ours eager",
    "ours_nv": "ours eager validate_args=False",
    "ours_c": "ours compiled",
}
MIB = 2.0**20
STATISTICS = {"median": statistics.median, "min": min}


# ---------------------------------------------------------------------------
# Naive transcriptions
# ---------------------------------------------------------------------------


def _naive_weight_matrix(targets: torch.Tensor, w: torch.Tensor, num_classes: int):
    """One-hot targets and the materialised (N, C) per-element weight matrix."""
    one_hot = F.one_hot(targets, num_classes).to(w.dtype)
    per_example = (one_hot * w.unsqueeze(0)).sum(1, keepdim=True)
    return one_hot, per_example.repeat(1, num_classes)


def naive_softmax(z: torch.Tensor, targets: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Reference transcription of the TF release's weighted softmax cross-entropy.

    ``tf.losses.softmax_cross_entropy(one_hot, z, weights=alpha_y)`` ported
    literally: softmax, log, one-hot product, per-element weight matrix, sum,
    divided by the number of examples (non-zero weights).
    """
    one_hot, weights = _naive_weight_matrix(targets, w, z.shape[1])
    log_p = torch.log(F.softmax(z, dim=1))
    return (-(weights * one_hot * log_p)).sum() / z.shape[0]


def naive_sigmoid(z: torch.Tensor, targets: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Reference transcription of the TF release's weighted sigmoid cross-entropy.

    ``sigmoid_cross_entropy_with_logits(one_hot, z)`` times the per-element
    weight matrix, summed, divided by ``one_hot.sum()``.
    """
    one_hot, weights = _naive_weight_matrix(targets, w, z.shape[1])
    bce = F.binary_cross_entropy_with_logits(z, one_hot, reduction="none")
    return (weights * bce).sum() / one_hot.sum()


def naive_focal(
    z: torch.Tensor, targets: torch.Tensor, w: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Reference transcription of the TF release's class-balanced focal loss.

    Modulator ``exp(-gamma * t * z - gamma * log1p(exp(-z)))`` times the BCE
    times the per-element weight matrix, summed, divided by ``one_hot.sum()``.
    """
    one_hot, weights = _naive_weight_matrix(targets, w, z.shape[1])
    bce = F.binary_cross_entropy_with_logits(z, one_hot, reduction="none")
    modulator = torch.exp(-gamma * one_hot * z - gamma * torch.log1p(torch.exp(-1.0 * z)))
    return (weights * (modulator * bce)).sum() / one_hot.sum()


def plain_softmax(z: torch.Tensor, targets: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The softmax loss written plainly: ``w[y] * (logsumexp(z) - z_y)``, mean over N."""
    z_y = z.gather(1, targets.unsqueeze(1)).squeeze(1)
    return (w[targets] * (torch.logsumexp(z, 1) - z_y)).sum() / z.shape[0]


def plain_focal(
    z: torch.Tensor, targets: torch.Tensor, w: torch.Tensor, gamma: float
) -> torch.Tensor:
    """The release's focal loss written plainly, as one would for ``torch.compile``: one-hot
    by comparison, ``BCE = max(z, 0) - t z + log1p(exp(-|z|))``, the release's modulator,
    the per-example weight broadcast (no ``repeat``, no ``binary_cross_entropy_with_logits``);
    gamma 0: the sigmoid loss."""
    t = (torch.arange(z.shape[1], device=z.device) == targets.unsqueeze(1)).to(z.dtype)
    bce = z.clamp_min(0) - t * z + torch.log1p(torch.exp(-z.abs()))
    elements = (
        bce if gamma == 0 else torch.exp(-gamma * t * z - gamma * torch.log1p(torch.exp(-z))) * bce
    )
    return (w[targets].unsqueeze(1) * elements).sum() / z.shape[0]


def torchvision_focal(
    z: torch.Tensor, targets: torch.Tensor, w: torch.Tensor, gamma: float
) -> torch.Tensor:
    """``torchvision.ops.sigmoid_focal_loss`` (alpha = -1: no alpha) on one-hot targets,
    weighted per example and divided by the number of positives, as a user would."""
    one_hot = F.one_hot(targets, z.shape[1]).to(z.dtype)
    elements = tv_sigmoid_focal_loss(z, one_hot, alpha=-1, gamma=gamma, reduction="none")
    return (elements * w[targets].unsqueeze(1)).sum() / z.shape[0]


def bench_counts(c: int) -> torch.Tensor:
    """The benchmark's long-tailed counts of ``c`` classes: ``round(max(1000 / j, 1))``."""
    return torch.clamp(1000.0 / torch.arange(1, c + 1, dtype=torch.float64), min=1.0).round()


def _log_prior(z: torch.Tensor) -> torch.Tensor:
    counts = bench_counts(z.shape[1]).to(device=z.device, dtype=z.dtype)
    return counts.log() - counts.sum().log()


def _logit_adjusted(validate: bool) -> Callable:
    def ours(z, t, w):
        counts = bench_counts(z.shape[1])
        return logit_adjusted_loss(z, t, counts, w, validate_args=validate)

    return ours


def implementations(loss: str, gamma: float, compile: bool = True) -> dict[str, Callable | None]:
    """Every column's ``f(logits, targets, w) -> scalar`` (``None``: not applicable or,
    with ``compile=False``, a compiled column)."""
    g = gamma if loss == "focal" else 0.0
    if loss == "softmax":
        ours = softmax_cross_entropy
        ours_nv = lambda z, t, w: softmax_cross_entropy(z, t, w, validate_args=False)  # noqa: E731
        naive, plain, tv = naive_softmax, plain_softmax, None
    elif loss == "logit_adjusted":
        ours, ours_nv = _logit_adjusted(True), _logit_adjusted(False)
        naive = lambda z, t, w: naive_softmax(z + _log_prior(z), t, w)  # noqa: E731
        plain = lambda z, t, w: plain_softmax(z + _log_prior(z), t, w)  # noqa: E731
        tv = None
    elif loss == "sigmoid":
        ours = sigmoid_cross_entropy
        ours_nv = lambda z, t, w: sigmoid_cross_entropy(z, t, w, validate_args=False)  # noqa: E731
        naive = naive_sigmoid
        plain = lambda z, t, w: plain_focal(z, t, w, 0.0)  # noqa: E731
        tv = lambda z, t, w: torchvision_focal(z, t, w, 0.0)  # noqa: E731
    else:
        ours = lambda z, t, w: sigmoid_focal_cross_entropy(z, t, w, gamma=g)  # noqa: E731
        ours_nv = lambda z, t, w: sigmoid_focal_cross_entropy(  # noqa: E731
            z, t, w, gamma=g, validate_args=False
        )
        naive = lambda z, t, w: naive_focal(z, t, w, g)  # noqa: E731
        plain = lambda z, t, w: plain_focal(z, t, w, g)  # noqa: E731
        tv = lambda z, t, w: torchvision_focal(z, t, w, g)  # noqa: E731
    compiled = (lambda fn: torch.compile(fn, dynamic=False)) if compile else (lambda fn: None)
    return {
        "naive": naive,
        "naive_c": compiled(naive),
        "plain_c": compiled(plain),
        "tv_c": None if tv is None else compiled(tv),
        "ours": ours,
        "ours_nv": ours_nv,
        "ours_c": compiled(ours),
    }


# ---------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step(fn: Callable, z: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> None:
    z.grad = None
    fn(z, t, w).backward()


def _cpu_allocation_events(prof) -> list[tuple[int, int, int]]:
    from torch._C._profiler import _EventType

    events: list[tuple[int, int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            events.append((node.start_time_ns, len(events), node.extra_fields.alloc_size))
        stack.extend(node.children)
    return sorted(events)


def cpu_peak_bytes(thunk: Callable[[], object]) -> int:
    """Peak live CPU bytes allocated by ``thunk()`` above those live before it."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        thunk()
    live = peak = 0
    for _, _, size in _cpu_allocation_events(prof):
        live += size
        peak = max(peak, live)
    return peak


def peak_bytes(thunk: Callable[[], object], device: torch.device) -> int:
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        thunk()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    return cpu_peak_bytes(thunk)


def measure_peak(fn: Callable, z: torch.Tensor, t, w, device: torch.device) -> int:
    """Peak bytes of one forward + backward pass; ``z.grad`` is freed before the baseline."""
    z.grad = None
    peak = peak_bytes(lambda: fn(z, t, w).backward(), device)
    z.grad = None
    return peak


def check_memory_method(device: torch.device) -> None:
    """Abort unless the peak measurement gives known answers."""
    size = 1024 * 1024 * 4  # a (1024, 1024) float32 tensor (a multiple of CUDA's 512 B rounding)

    def held_together(k: int) -> None:
        tensors = [torch.ones(1024, 1024, device=device) for _ in range(k)]
        del tensors

    def one_at_a_time(k: int) -> None:
        for _ in range(k):
            tensor = torch.ones(1024, 1024, device=device)
            del tensor

    cases = [(lambda: held_together(3), 3 * size), (lambda: held_together(5), 5 * size)]
    cases.append((lambda: one_at_a_time(4), size))
    for thunk, expected in cases:
        got = peak_bytes(thunk, device)
        if got != expected:
            sys.exit(f"FATAL: peak-memory sanity check failed: expected {expected} B, got {got} B")


def check_agreement(ours: Callable, naive: Callable, z, t, w, name: str) -> None:
    """Abort unless loss and gradient of ours and naive agree within 1e-4 relative."""
    za = z.detach().clone().requires_grad_(True)
    zb = z.detach().clone().requires_grad_(True)
    la, lb = ours(za, t, w), naive(zb, t, w)
    la.backward()
    lb.backward()
    if not (torch.isfinite(lb) and torch.isfinite(zb.grad).all()):
        sys.exit(f"FATAL: naive {name} loss is not finite on the benchmark inputs")
    loss_err = abs(la.item() - lb.item()) / max(abs(lb.item()), 1e-30)
    grad_err = ((za.grad - zb.grad).abs().max() / zb.grad.abs().max().clamp_min(1e-30)).item()
    if loss_err > 1e-4 or grad_err > 1e-4:
        sys.exit(
            f"FATAL: ours and naive {name} disagree on shape {tuple(z.shape)}: "
            f"loss {la.item()!r} vs {lb.item()!r} (rel {loss_err:.2e}), "
            f"max grad rel diff {grad_err:.2e}"
        )


def time_passes(fn: Callable, z, t, w, device: torch.device, count: int) -> list[float]:
    """Seconds of ``count`` single forward + backward passes."""
    times = []
    for _ in range(count):
        _sync(device)
        start = time.perf_counter()
        _step(fn, z, t, w)
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def make_inputs(n: int, c: int, device: torch.device, dtype: torch.dtype, seed: int):
    gen = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(n, c, generator=gen, dtype=torch.float64)
    targets = torch.randint(0, c, (n,), generator=gen)
    weight = class_balanced_weights(bench_counts(c), 0.999)
    z = logits.to(device=device, dtype=dtype).requires_grad_(True)
    return z, targets.to(device), weight.to(device=device, dtype=dtype)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default_device, help="cpu, cuda or cuda:N")
    parser.add_argument("--repeats", type=int, default=60, help="timed passes per row (median)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds the repeats are split over")
    parser.add_argument("--warmup", type=int, default=3, help="untimed passes per row")
    parser.add_argument("--gamma", type=float, default=0.5, help="focal gamma (iNat recipe: 0.5)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-compile", action="store_true", help="skip the compiled columns (quick runs)"
    )
    parser.add_argument(
        "--statistic",
        choices=tuple(STATISTICS),
        default="median",
        help="of the timed passes; min estimates the cost on an idle machine when others share it",
    )
    parser.add_argument(
        "--losses", nargs="+", choices=LOSSES, default=list(LOSSES), help="rows to measure"
    )
    parser.add_argument(
        "--shapes",
        nargs="+",
        default=[f"{n}x{c}" for n, c in SHAPES],
        help="N x C of the rows, e.g. 128x10 256x8142",
    )
    parser.add_argument(
        "--columns",
        nargs="+",
        choices=tuple(COLUMNS),
        default=None,
        help="implementations to measure (default all), e.g. ours ours_nv ours_c to compare "
        "two versions of the package side by side (see docs/benchmarks.md)",
    )
    args = parser.parse_args(argv)
    if not re.fullmatch(r"cpu|cuda(:\d+)?", args.device):
        parser.error(f"--device must be cpu, cuda or cuda:N, got {args.device!r}")
    try:
        args.shapes = [tuple(int(v) for v in shape.split("x")) for shape in args.shapes]
    except ValueError:
        parser.error(f"--shapes must look like 128x10, got {args.shapes}")
    if any(len(shape) != 2 or min(shape) < 1 for shape in args.shapes):
        parser.error(f"--shapes must look like 128x10 with N, C >= 1, got {args.shapes}")
    if args.repeats < 1 or args.warmup < 0 or not 1 <= args.rounds <= args.repeats:
        parser.error("need --repeats >= 1, --warmup >= 0 and 1 <= --rounds <= --repeats")
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            parser.error(f"--device {args.device} requested but CUDA is not available")
        index = torch.device(args.device).index
        if index is not None and index >= torch.cuda.device_count():
            parser.error(
                f"--device {args.device}: expected an index below {torch.cuda.device_count()}"
            )
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    check_memory_method(device)
    print(
        f"torch {torch.__version__}, device {args.device} ({name}), "
        f"threads {torch.get_num_threads()}, dtype {args.dtype}, gamma {args.gamma}, "
        f"{args.statistic} of {args.repeats} forward+backward passes (ms); peak memory of "
        "one pass above the live logits, targets and weights, its gradient included (MiB)",
        flush=True,
    )
    keys = [k for k in COLUMNS if args.columns is None or k in args.columns]
    cases = []
    for loss in args.losses:
        for shape in args.shapes:
            case = prepare_case(loss, shape, args, device, dtype, keys)
            run_rounds(case, args, device)
            cases.append(case)
            # the table so far, after every row: a run cut short (or whose log interleaves
            # other output, e.g. the profiler's, with these lines) keeps every finished row
            # in its last table
            print_table(cases, keys)
    return check_targets(cases)


def prepare_case(loss: str, shape, args, device: torch.device, dtype, keys) -> dict:
    """One row: check every implementation against the transcription, warm up (compiles),
    measure each one's peak."""
    n, c = shape
    fns = implementations(loss, args.gamma, not args.no_compile)
    reference = fns["naive"]
    fns = {k: f for k, f in fns.items() if f is not None and k in keys}
    z, t, w = make_inputs(n, c, device, dtype, args.seed)
    for key, fn in fns.items():
        if key != "naive":
            check_agreement(fn, reference, z, t, w, f"{loss} {COLUMNS[key]}")
        for _ in range(args.warmup):
            _step(fn, z, t, w)
    peaks = {k: measure_peak(f, z, t, w, device) for k, f in fns.items()}
    times = {key: [] for key in fns}
    return {"loss": loss, "shape": (n, c), "fns": fns, "inputs": (z, t, w), "peak": peaks,
            "times": times}  # fmt: skip


def run_rounds(case: dict, args, device: torch.device) -> None:
    """The row's timed passes in rounds, the implementations in rotating order, so that a
    burst of background load is spread over every implementation instead of hitting one."""
    per_round = [
        args.repeats // args.rounds + (r < args.repeats % args.rounds) for r in range(args.rounds)
    ]
    for r, count in enumerate(per_round):
        keys = list(case["fns"])
        keys = keys[r % len(keys) :] + keys[: r % len(keys)]
        for key in keys:
            case["times"][key].extend(time_passes(case["fns"][key], *case["inputs"], device, count))
    case["median"] = {k: STATISTICS[args.statistic](v) for k, v in case["times"].items()}


def print_table(cases: list[dict], keys) -> None:
    header = ["loss", "N", "C"] + [f"{COLUMNS[k]} ms" for k in keys]
    header += [f"{COLUMNS[k]} MiB" for k in keys]
    lines = ["", "| " + " | ".join(header) + " |", "|---|---:|---:|" + "---:|" * (len(header) - 3)]
    for case in cases:
        cells = [case["loss"], str(case["shape"][0]), str(case["shape"][1])]
        cells += [f"{1e3 * case['median'][k]:.3f}" if k in case["median"] else "-" for k in keys]
        cells += [f"{case['peak'][k] / MIB:.3f}" if k in case["peak"] else "-" for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines), flush=True)


def check_targets(cases: list[dict]) -> int:
    """Print the goals of the focal rows (if measured) and return 1 if one is missed."""
    lines, missed = [], False
    for case in cases:
        if case["loss"] != "focal":
            continue
        t, m = case["median"], case["peak"]
        if case["shape"] == TARGET_SHAPE and "ours_c" in m:
            n, c = TARGET_SHAPE
            ok = m["ours_c"] <= 4 * n * c + TARGET_COMPILED_SLACK
            missed |= not ok
            lines.append(
                f"{'met' if ok else 'MISSED'}: focal {TARGET_SHAPE} {COLUMNS['ours_c']} peak "
                f"{m['ours_c'] / MIB:.3f} MiB (goal: at most one (N, C) float32 buffer, "
                f"{4 * n * c / MIB:.3f} MiB, + {TARGET_COMPILED_SLACK // 1024} KiB)"
            )
        if case["shape"] == TARGET_SHAPE and all(
            k in t for k in ("naive", "naive_c", "ours", "ours_c")
        ):
            for key in ("ours", "ours_c"):
                speedup, ratio = t["naive_c"] / t[key], m[key] / m["naive"]
                ok = speedup >= TARGET_SPEEDUP and ratio <= TARGET_MEMORY_RATIO
                missed |= not ok
                lines.append(
                    f"{'met' if ok else 'MISSED'}: focal {TARGET_SHAPE} {COLUMNS[key]} is "
                    f"{speedup:.2f}x faster than the compiled transcription (goal >= "
                    f"{TARGET_SPEEDUP}x) with {ratio:.3f} of the eager transcription's peak "
                    "memory (goal <= 1/3)"
                )
        if case["shape"] == SMALL_SHAPE and all(k in t for k in ("naive", "ours", "ours_nv")):
            for key in ("ours", "ours_nv"):
                ok = t[key] <= t["naive"]
                missed |= key == "ours_nv" and not ok
                lines.append(
                    f"{'met' if ok else 'MISSED'}: focal {SMALL_SHAPE} {COLUMNS[key]} "
                    f"{1e3 * t[key]:.3f} ms vs eager transcription {1e3 * t['naive']:.3f} ms "
                    "(goal: no slower, with validation off allowed)"
                )
    print()
    print("\n".join(lines), flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
