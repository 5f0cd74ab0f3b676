"""One command that checks everything GPU-related and measures the GPU goals, within a time budget.

Run from the repository root on a GPU machine (nothing to install: ``src/`` is put on
the path; torch and torchvision must be there)::

    python benchmarks/gpu_check.py --out gpu-check --budget-s 420
    python benchmarks/gpu_check.py --out /tmp/q --device cpu --quick   # the same plumbing, toy sizes

Stages, in order (``--stages`` picks a subset, e.g. to rerun one that failed):

1. ``env``: torch, CUDA, GPU, driver, Python, CPUs, optional packages.
2. ``tests``: ``pytest -m cuda tests/cuda`` (every CUDA-only branch of the library).
3. ``loss``: ``benchmarks/loss_speed.py`` on the device.
4. ``train_speed``: ``benchmarks/train_speed.py`` on the device: ResNet-32 batch-128
   step time per configuration and the implied time of 200 epochs of steps.
5. ``train``: a real ``classbalanced train`` on a generated CIFAR-10-format data set of
   the real size (50,000 + 10,000 images; IF 100 leaves 12,406), the paper's recipe
   (ResNet-32, 200-epoch schedule, batch 128, evaluation every 2 epochs, checkpoints),
   stopped by SIGTERM when its time slice ends; wall time per epoch from the time
   stamps of its evaluation lines (evaluation and checkpoint included) and the implied
   200-epoch run.
6. ``grid``: ``classbalanced sweep --jobs K`` of K such runs at once on the one device
   (the sweep path); the throughput of the grid and the implied time of the 130 runs
   of configs/sweeps/cifar10_table2.toml.
7. ``resnet50``: torchvision ResNet-50 training steps, bf16 autocast, channels_last,
   224 px, batch 128 (images/s), with ``cudnn.benchmark`` off and on.
8. ``pipeline``: benchmarks/data_speed.py on 800x600 JPEGs (iNaturalist's size): the old and
   fast input paths per worker, then with 8 workers, and the nvJPEG path (JPEGs decoded
   in batches on the GPU); images/s and the workers needed for 3,000 images/s. The fast
   path's libjpeg extension is first built in place (setup.py's extension through
   setuptools' ``build_ext --inplace``, which keeps a build newer than its source); where
   that fails, a note says why.
9. ``remedies`` (only when named in ``--stages``): the ResNet-32 batch-128 step with the
   launch-overhead remedies added one by one (fused SGD, ``cudnn.benchmark``, bf16,
   ``torch.compile``, CUDA graphs through ``mode="reduce-overhead"``).
10. ``train_fast`` (only when named in ``--stages``): the ``train`` stage's run with the
   trainer's speed options on (``FAST_TRAIN_FLAGS``: the same remedies, as trainer
   flags, plus checkpoints in the background and one host read per epoch); its wall
   time per epoch against the ``train`` stage's.

Every stage runs in its own process group with a time slice: the time left, shared
among the stages still to run in proportion to their weights (time a stage leaves
unused goes to the later ones). Everything a stage does fits its slice: a stage still
running near the end of its slice is stopped (SIGTERM, its grace period, then SIGKILL of
its process group at the end of the slice) and reports what it measured; the check
ends within the budget plus its own start and clean-up (docs/benchmarks.md). After every stage,
and on SIGINT / SIGTERM, ``summary.json`` and ``summary.md`` (one table: every
figure with the command that produced it) are rewritten in ``--out``, with
``logs.txt`` (each stage's output). Scratch data (the generated data set, run
folders) goes to ``--work`` (default: a temporary folder, deleted at the end).
A stage whose optional package is missing reports ``skipped: X missing``.
The exit status is 0 when every stage that ran passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import pickle
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

PY = sys.executable
STAGES = (
    "env", "tests", "loss", "train_speed", "train", "grid", "resnet50", "pipeline", "remedies",
    "train_fast",
)  # fmt: skip
#: run when --stages is not given (remedies, train_fast: measurements for the trainer's
#: speed options, which become defaults on CUDA only once measured)
DEFAULT_STAGES = STAGES[:-2]
#: the trainer's launch-overhead options (issue 14, item 3), named as in the remedies stage
FAST_TRAIN_FLAGS = (
    "--sgd-impl", "fused", "--cudnn-benchmark", "--precision", "bf16", "--compile",
    "--compile-mode", "reduce-overhead", "--async-checkpoints", "--sync-every", "0",
)  # fmt: skip
#: --quick on the CPU: the options whose code paths run there (compile is minutes on a CPU)
FAST_TRAIN_FLAGS_CPU = ("--sgd-impl", "fused", "--async-checkpoints", "--sync-every", "0")
#: relative share of the budget of each stage (the time left is split by these)
WEIGHTS = {
    "env": 0.01,
    "tests": 0.32,
    "loss": 0.09,
    "train_speed": 0.17,
    "train": 0.17,
    "grid": 0.17,
    "resnet50": 0.08,
    "pipeline": 0.10,
    "remedies": 0.30,
    "train_fast": 0.17,
}
#: --quick: toy stages of similar cost on a CPU
WEIGHTS_QUICK = dict.fromkeys(STAGES, 1.0) | {"env": 0.05, "tests": 0.6}
#: the CUDA test files, cheapest first (files not listed run after these)
TEST_ORDER = (
    "test_cuda_data.py",
    "test_cuda_losses.py",
    "test_cuda_models.py",
    "test_cuda_distributed.py",
    "test_cuda_cli.py",
    "test_cuda_benchmarks.py",
)
TEST_WORKERS = 4
TEST_OUTCOMES = ("PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS")
STOP_GRACE_S = 20.0  # a stopped training run checkpoints and exits within this
#: the most a stage waits for its output after its process group is gone
JOIN_S = 2.0
#: the libjpeg extension's build (pipeline stage): at most this, inside the stage's slice
BUILD_S = 60.0
MIN_SLICE_S = 8.0
TABLE2 = ROOT / "configs" / "sweeps" / "cifar10_table2.toml"


@dataclass
class Sizes:
    """What the stages run: the real sizes, or toy ones for ``--quick``."""

    per_class_train: int = 5000
    per_class_test: int = 1000
    model: str = "resnet32"
    batch: int = 128
    epochs: int = 200  # the schedule; the run is stopped when its slice ends
    eval_every: int = 2
    jobs: int = 4
    r50_size: int = 224
    r50_batch: int = 128
    r50_steps: int = 30
    r50_warmup: int = 5
    r50_precision: str = "bf16"
    remedy_steps: int = 50
    #: the input pipeline at iNaturalist's image size: old / fast paths per worker, then
    #: ``pipe_workers`` workers, and the nvJPEG path on the GPU (benchmarks/data_speed.py)
    pipe_args: tuple[str, ...] = tuple(
        "--sizes 800x600 --pipeline-images 192 --epochs 2 --batch-size 64 --workers 8 "
        "--resize 0".split()
    )
    #: the rows with goals (focal at the smallest and the target shape): 6 cold compiles
    loss_args: tuple[str, ...] = ("--losses", "focal", "--shapes", "128x10", "256x8142")
    speed_runs: tuple[tuple[str, ...], ...] = (
        tuple(
            "--steps 60 --warmup 10 --block 10 --rounds 2 --workers 2 --no-compile "
            "--configs fp32:cl:eager,bf16:cl:eager".split()
        ),
        tuple(
            "--steps 60 --warmup 10 --block 10 --rounds 2 --workers 2 "
            "--configs bf16:cl:compile".split()
        ),
    )

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            per_class_train=100,
            per_class_test=8,
            model="resnet8",
            batch=32,
            epochs=2,
            eval_every=1,
            jobs=2,
            r50_size=32,
            r50_batch=2,
            r50_steps=2,
            r50_warmup=1,
            r50_precision="fp32",  # bf16 convolutions are slow on many CPUs
            remedy_steps=2,
            pipe_args=tuple(
                "--sizes 96x64 --pipeline-images 8 --epochs 2 --batch-size 4 --workers 0 "
                "--resize 0".split()
            ),
            loss_args=tuple(
                "--losses focal --shapes 128x10 --repeats 1 --rounds 1 --warmup 0".split()
            ),
            speed_runs=(
                tuple(
                    "--model resnet8 --batch-size 32 --steps 2 --warmup 1 --block 1 --rounds 1 "
                    "--workers 0 --no-sweep".split()
                ),
            ),
        )


@dataclass
class Figure:
    what: str
    value: str
    command: str

    def as_dict(self) -> dict[str, str]:
        return {"what": self.what, "value": self.value, "command": self.command}


@dataclass
class Stage:
    name: str
    status: str = "not run"  # ok | failed | timed out | skipped: ... | interrupted
    seconds: float = 0.0
    slice_s: float = 0.0
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, what: str, value: str, command: str) -> None:
        self.figures.append(Figure(what, value, command))

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "seconds": round(self.seconds, 1),
            "slice_s": round(self.slice_s, 1),
            "figures": [f.as_dict() for f in self.figures],
            "notes": self.notes,
        }


class Stopped(Exception):
    """SIGINT / SIGTERM reached the check itself."""


# ---------------------------------------------------------------------------
# subprocesses with a time limit and time-stamped output
# ---------------------------------------------------------------------------


#: set for every child process (--device cuda:N: CUDA_VISIBLE_DEVICES names that GPU alone)
CHILD_ENV: dict[str, str] = {}


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore", **CHILD_ENV)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    env.update(extra)
    return env


@dataclass
class Outcome:
    rc: int | None
    timed_out: bool
    lines: list[tuple[float, str]]  # (seconds since start, line)
    seconds: float

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def _stop_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_timed(
    cmd: list[str],
    limit_s: float,
    log: LogFile,
    *,
    env: dict[str, str] | None = None,
    stop_signal: int = signal.SIGTERM,
    grace_s: float = STOP_GRACE_S,
    on_line=None,
) -> Outcome:
    """Run ``cmd`` in its own process group for at most ``limit_s`` seconds, all included:
    ``stop_signal`` to the leader ``grace`` (at most ``grace_s``, a quarter of the limit)
    plus ``JOIN_S`` before the limit, then the whole group killed. Every output line is
    time-stamped."""
    grace_s = _grace(limit_s, grace_s)
    stop_at = max(0.1, limit_s - grace_s - JOIN_S)
    log.write(f"$ {shlex.join(cmd)}   (limit {limit_s:.0f} s, stopped at {stop_at:.0f} s)\n")
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env or child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        text=True,
        errors="replace",
        bufsize=1,
    )
    ACTIVE.add(proc)
    lines: list[tuple[float, str]] = []

    def reader() -> None:
        for raw in proc.stdout:
            for line in raw.rstrip("\n").split("\r"):
                stamp = time.monotonic() - start
                lines.append((stamp, line))
                log.write(f"[{stamp:7.1f}] {line}\n")
                if on_line is not None:
                    on_line(stamp, line)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    timed_out = False
    try:
        try:
            proc.wait(timeout=stop_at)
        except subprocess.TimeoutExpired:
            timed_out = True
            log.write(f"--- time slice over: sending signal {int(stop_signal)}\n")
            try:
                proc.send_signal(stop_signal)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                log.write("--- still running: killing its process group\n")
                _stop_group(proc, signal.SIGKILL)
                proc.wait()
    finally:
        if proc.poll() is None:
            _stop_group(proc, signal.SIGKILL)
            proc.wait()
        _stop_group(proc, signal.SIGKILL)  # leftovers of the group (workers, ranks)
        ACTIVE.discard(proc)
        thread.join(timeout=JOIN_S)  # a process outside the group may hold the pipe
    return Outcome(proc.returncode, timed_out, lines, time.monotonic() - start)


ACTIVE: set[subprocess.Popen] = set()


class LogFile:
    """``logs.txt`` in --out: every stage's output, appended as it comes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.write_text("", encoding="utf-8")

    def write(self, text: str) -> None:
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(text)


def _cmd(args: list[str]) -> str:
    """A command as a user would type it from the repository root."""
    shown = ["python" if a == PY else a for a in args]
    shown = [
        str(Path(a).relative_to(ROOT)) if a.startswith(str(ROOT) + os.sep) else a for a in shown
    ]
    return shlex.join(shown)


def _missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


# ---------------------------------------------------------------------------
# the check: budget, stages, summaries
# ---------------------------------------------------------------------------


class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.sizes = Sizes.quick() if args.quick else Sizes()
        if args.jobs:
            self.sizes.jobs = args.jobs
        # --device cuda:N: the children see GPU N alone (as cuda, i.e. cuda:0), so that every
        # stage's script, torchrun and the sweep's runs use it, whatever device flags they take
        self.device, self.gpu_index = args.device, 0
        if args.device.startswith("cuda:"):
            self.gpu_index = int(args.device.split(":")[1])
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            ids = visible.split(",") if visible else [str(i) for i in range(self.gpu_index + 1)]
            if self.gpu_index < len(ids):
                CHILD_ENV["CUDA_VISIBLE_DEVICES"] = ids[self.gpu_index].strip()
            self.device = "cuda"
        self.start = time.monotonic()
        self.deadline = self.start + args.budget_s
        self.stages = [Stage(name) for name in args.stages]
        self.log = LogFile(self.out / "logs.txt")
        self.env_line = ""
        self.started_at = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        self._tmp = None
        if args.work:
            self.work = Path(args.work)
            self.work.mkdir(parents=True, exist_ok=True)
        else:
            self._tmp = tempfile.mkdtemp(prefix="cb-gpu-check-")
            self.work = Path(self._tmp)
        self.data_dir: Path | None = None
        self.no_device = ""  # why nothing can run (set by the env stage)
        self.train_result: dict[str, float] = {}

    # -- budget ---------------------------------------------------------------
    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def slice_for(self, index: int) -> float:
        weights = WEIGHTS_QUICK if self.args.quick else WEIGHTS
        left = [s.name for s in self.stages[index:]]
        share = weights[left[0]] / sum(weights[n] for n in left)
        return max(0.0, self.remaining() - 3.0) * share

    # -- output -----------------------------------------------------------------
    def write_summaries(self) -> None:
        doc = {
            "started": self.started_at,
            "environment": self.env_line,
            "device": self.args.device,
            "quick": self.args.quick,
            "budget_s": self.args.budget_s,
            "elapsed_s": round(time.monotonic() - self.start, 1),
            "command": _cmd([PY, *sys.argv]),
            "stages": [s.as_dict() for s in self.stages],
        }
        _atomic_write(self.out / "summary.json", json.dumps(doc, indent=2) + "\n")
        _atomic_write(self.out / "summary.md", self.markdown(doc))

    def markdown(self, doc: dict[str, Any]) -> str:
        lines = [
            f"# GPU check ({'quick, ' if doc['quick'] else ''}device {doc['device']})",
            "",
            f"{doc['started']}; {doc['environment'] or 'environment not read'}",
            f"Budget {doc['budget_s']:.0f} s, elapsed {doc['elapsed_s']:.0f} s. Command: `{doc['command']}`",
            "",
            "| stage | status | figure | value | command |",
            "|---|---|---|---|---|",
        ]
        for s in self.stages:
            status = f"{s.status} ({s.seconds:.0f} s of {s.slice_s:.0f} s)"
            rows = s.figures or [Figure("-", "-", "-")]
            for i, f in enumerate(rows):
                cells = [s.name, status] if i == 0 else ["", ""]
                cells += [f.what, f.value, f"`{f.command}`" if f.command != "-" else "-"]
                lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        notes = [f"- {s.name}: {n}" for s in self.stages for n in s.notes]
        if notes:
            lines += ["", "Notes:", *notes]
        return "\n".join(lines) + "\n"

    # -- running ------------------------------------------------------------------
    def run(self) -> int:
        self.write_summaries()
        try:
            for i, stage in enumerate(self.stages):
                limit = self.slice_for(i)
                stage.slice_s = limit
                if self.no_device:
                    stage.status = f"skipped: {self.no_device}"
                    self.write_summaries()
                    continue
                if limit < MIN_SLICE_S and stage.name != "env":  # env is read in-process
                    stage.status = f"skipped: out of budget ({limit:.0f} s left for it)"
                    self.write_summaries()
                    continue
                self.log.write(f"\n===== stage {stage.name} (slice {limit:.0f} s)\n")
                t0 = time.monotonic()
                try:
                    getattr(self, f"stage_{stage.name}")(stage, limit)
                except Stopped:
                    stage.status = "interrupted"
                    raise
                except Exception as exc:  # a broken stage must not stop the others
                    stage.status = "failed"
                    stage.notes.append(f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
                finally:
                    stage.seconds = time.monotonic() - t0
                    self.write_summaries()
        except Stopped:
            for stage in self.stages:
                if stage.status == "not run":
                    stage.status = "skipped: check interrupted"
            self.write_summaries()
            return 1
        finally:
            if self._tmp and not self.args.keep_work:
                shutil.rmtree(self._tmp, ignore_errors=True)
        ran = [s for s in self.stages if not s.status.startswith("skipped")]
        return 0 if all(s.status == "ok" for s in ran) else 1

    # -- stages -------------------------------------------------------------------
    def stage_env(self, stage: Stage, limit: float) -> None:
        import torch

        parts = [f"torch {torch.__version__}", f"Python {platform.python_version()}"]
        if self.device.startswith("cuda"):
            if not torch.cuda.is_available():
                self.no_device = "--device cuda but torch.cuda.is_available() is False"
                raise RuntimeError(self.no_device)
            if self.gpu_index >= torch.cuda.device_count():
                self.no_device = (
                    f"--device {self.args.device} but torch sees {torch.cuda.device_count()} GPU(s)"
                )
                raise RuntimeError(self.no_device)
            props = torch.cuda.get_device_properties(self.gpu_index)
            parts += [
                f"CUDA {torch.version.cuda}",
                f"GPU {props.name} ({props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs)",
                f"driver {_driver_version()}",
                f"cuDNN {torch.backends.cudnn.version()}",
            ]
        else:
            parts.append(f"CPU {platform.processor() or platform.machine()}")
        parts.append(f"{os.cpu_count()} CPUs")
        import classbalanced

        parts.append(
            f"classbalanced {classbalanced.__version__} from {Path(classbalanced.__file__).parent}"
        )
        optional = (
            "torchvision",
            "numpy",
            "PIL",
            "tensorboard",
            "matplotlib",
            "tqdm",
            "yaml",
            "sklearn",
            "pytest",
        )
        missing = _missing(*optional)
        parts.append(
            "missing: " + (", ".join(missing) if missing else "none of " + ", ".join(optional))
        )
        self.env_line = "; ".join(parts)
        shown = _cmd([PY, "benchmarks/gpu_check.py", "--stages", "env"])
        stage.add("environment", self.env_line, shown)
        if CHILD_ENV.get("CUDA_VISIBLE_DEVICES"):
            stage.notes.append(
                f"--device {self.args.device}: every stage runs with CUDA_VISIBLE_DEVICES="
                f"{CHILD_ENV['CUDA_VISIBLE_DEVICES']}, so the commands' `--device cuda` is that GPU"
            )
        stage.add(
            "build tools (the libjpeg extension and torch.compile need them)", _build_tools(), shown
        )
        stage.status = "ok"

    def stage_tests(self, stage: Stage, limit: float) -> None:
        if _missing("pytest"):
            stage.status = "skipped: pytest missing"
            return
        folder = ROOT / "tests" / "cuda"
        files = sorted(p.name for p in folder.glob("test_*.py"))
        ordered = [f for f in TEST_ORDER if f in files] + [f for f in files if f not in TEST_ORDER]
        # pytest-xdist (if there): the tests are independent and many start subprocesses
        workers = ["-n", str(TEST_WORKERS)] if not _missing("xdist") and not self.args.quick else []
        cmd = [PY, "-m", "pytest", "-m", "cuda", "-v", "-rsfE", "-p", "no:cacheprovider",
               "-o", "addopts=", *workers, *[f"tests/cuda/{f}" for f in ordered]]  # fmt: skip
        out = run_timed(cmd, limit, self.log, stop_signal=signal.SIGINT, grace_s=10)
        results = _test_results(out.text)
        counts = {k: sum(1 for r in results.values() if r == k) for k in TEST_OUTCOMES}
        summary = ", ".join(f"{v} {k.lower()}" for k, v in counts.items() if v) or "no test ran"
        stage.add(
            "CUDA tests (pytest -m cuda tests/cuda)",
            summary,
            _cmd([*cmd[:5], *workers, "tests/cuda"]),
        )
        stage.notes += [f"{r}: {name}" for name, r in results.items() if r in ("FAILED", "ERROR")]
        skip_reasons = set(re.findall(r"^SKIPPED \[\d+\] \S+: (.*)$", out.text, re.M))
        stage.notes += [f"skip reason: {r}" for r in sorted(skip_reasons)][:3]
        if out.timed_out:
            stage.status = f"timed out after {len(results)} tests"
        elif counts["FAILED"] or counts["ERROR"] or out.rc != 0:
            stage.status = "failed" if results else f"failed (exit {out.rc})"
            if not results:
                stage.notes.append(_tail(out.text))
        else:
            stage.status = "ok"

    def stage_loss(self, stage: Stage, limit: float) -> None:
        cmd = [PY, str(ROOT / "benchmarks" / "loss_speed.py"), "--device", self.device,
               *self.sizes.loss_args]  # fmt: skip
        # --quick: torch.compile off (TORCHDYNAMO_DISABLE), the compiled columns run eagerly
        env = child_env(TORCHDYNAMO_DISABLE="1") if self.args.quick else None
        out = run_timed(cmd, limit, self.log, env=env)
        shown = ("TORCHDYNAMO_DISABLE=1 " if env else "") + _cmd(cmd)
        header, rows = _markdown_table(out.text, "| loss | N | C |")
        for row in rows:
            cells = dict(zip(header, row, strict=False))
            times = ", ".join(f"{h[:-3]} {v}" for h, v in cells.items() if h.endswith(" ms"))
            memory = ""
            if cells.get("ours eager MiB") and cells.get("transcription eager MiB"):
                ratio = float(cells["ours eager MiB"]) / max(
                    float(cells["transcription eager MiB"]), 1e-12
                )
                memory = f"; peak memory ours / transcription {ratio:.3f}"
            stage.add(
                f"{cells['loss']} loss N={cells['N']} C={cells['C']}: forward+backward ms",
                times + memory,
                _cmd(cmd),
            )
        for _, line in out.lines:
            if line.startswith(("met:", "MISSED:")):
                stage.add("goal", line, shown)
        if out.timed_out:
            stage.status = "timed out"
        elif not rows:
            stage.status = f"failed (exit {out.rc})"
            stage.notes.append(_tail(out.text))
        else:  # exit 1 = a goal missed: a measurement, reported in the figures
            stage.status = "ok" if out.rc in (0, 1) else f"failed (exit {out.rc})"

    def stage_train_speed(self, stage: Stage, limit: float) -> None:
        # train_speed.py rewrites its JSON after every round: a run stopped at the end of its
        # slice leaves the rows measured so far
        missing = _missing("torchvision", "PIL")
        if missing:
            stage.status = f"skipped: {', '.join(missing)} missing"
            return
        t0, seen, problems = time.monotonic(), set(), []
        runs = self.sizes.speed_runs
        for k, args in enumerate(runs):
            # eager first: a cold torch.compile that overruns the slice cannot take those figures
            left = limit - (time.monotonic() - t0)
            json_path = self.work / f"train_speed_{k}.json"
            json_path.unlink(missing_ok=True)
            cmd = [PY, str(ROOT / "benchmarks" / "train_speed.py"), "--device", self.device,
                   *args, "--json", str(json_path)]  # fmt: skip
            out = run_timed(cmd, left / (len(runs) - k) if k < len(runs) - 1 else left, self.log)
            shown = _cmd(cmd[:-2])
            if not json_path.is_file():
                problems.append("timed out" if out.timed_out else f"failed (exit {out.rc})")
                stage.notes.append(f"{shown}: {problems[-1]}: {_tail(out.text)}")
                continue
            doc = json.loads(json_path.read_text())
            if out.timed_out:
                problems.append("timed out")
                stage.notes.append(
                    f"{shown}: stopped at the end of its slice after {doc.get('rounds_done')} "
                    "round(s): its rows are the medians so far"
                )
            elif out.rc != 0:
                problems.append(f"failed (exit {out.rc})")
            for row in doc["rows"]:
                if row["name"] in seen:  # the fp32 baseline and the reference come every time
                    continue
                seen.add(row["name"])
                value = f"{row['images_per_s']:.0f} images/s, {1e3 * row['step_s']:.2f} ms/step"
                value += f", 200 epochs of steps: {row['implied_200_epochs_s']:.0f} s"
                value += f", first step {row['first_step_s']:.1f} s"
                if row.get("mean_loss_rel_diff") is not None:
                    value += f", mean loss vs fp32 {row['mean_loss_rel_diff']:.1e}"
                stage.add(f"{doc['model']} batch {doc['batch']}: {row['name']}", value, shown)
        stage.status = problems[0] if problems else "ok"

    def _train_deps(self, stage: Stage) -> bool:
        missing = _missing("numpy", "tensorboard", "tqdm", "matplotlib")
        if missing:
            stage.status = f"skipped: {', '.join(missing)} missing (classbalanced train needs them)"
        return not missing

    def _ensure_data(self) -> Path:
        if self.data_dir is None:
            self.data_dir = self.work / "data"
            write_cifar10(self.data_dir, self.sizes.per_class_train, self.sizes.per_class_test)
        return self.data_dir

    def _train_flags(self) -> list[str]:
        s = self.sizes
        return [
            "--dataset", "cifar10", "--no-download", "--imbalance-factor", "100",
            "--model", s.model, "--loss", "focal", "--beta", "0.9999", "--gamma", "1.0",
            "--epochs", str(s.epochs), "--batch-size", str(s.batch), "--eval-every", str(s.eval_every),
            "--device", self.device, "--no-progress", *shlex.split(self.args.train_args),
        ]  # fmt: skip

    def stage_train(self, stage: Stage, limit: float) -> None:
        result = self._timed_train(stage, limit, "single", [], "1 run")
        if result:
            self.train_result = result

    def stage_train_fast(self, stage: Stage, limit: float) -> None:
        flags = list(FAST_TRAIN_FLAGS if self.device.startswith("cuda") else FAST_TRAIN_FLAGS_CPU)
        result = self._timed_train(stage, limit, "fast", flags, "1 run, speed options")
        if result.get("epoch_s") and self.train_result.get("epoch_s"):
            stage.add(
                "speed options: wall time per epoch against the train stage's",
                f"{self.train_result['epoch_s'] / result['epoch_s']:.2f}x as fast "
                f"({result['epoch_s']:.2f} s against {self.train_result['epoch_s']:.2f} s)",
                _cmd(["python", "-m", "classbalanced", "train", *flags]),
            )

    def _timed_train(self, stage: Stage, limit: float, name: str, extra: list[str], prefix: str):
        """A real ``classbalanced train`` (the train flags plus ``extra``) stopped at the end of
        its slice; figures under ``prefix``; returns its epoch times (empty: too few evaluations)."""
        if not self._train_deps(stage):
            return {}
        t0 = time.monotonic()
        data = self._ensure_data()
        stage.notes.append(
            f"generated the CIFAR-10-format data set in {time.monotonic() - t0:.1f} s"
        )
        run_dir = self.work / "runs" / name
        shutil.rmtree(run_dir, ignore_errors=True)
        flags = [*self._train_flags(), *extra]
        cmd = [
            PY,
            "-m",
            "classbalanced",
            "train",
            *flags,
            "--data-dir",
            str(data),
            "--out",
            str(run_dir),
        ]
        left = limit - (time.monotonic() - t0)
        watcher = RunWatcher(run_dir.parent)
        watcher.start()
        try:
            out = run_timed(cmd, max(1.0, left), self.log)
        finally:
            watcher.stop()
        evals = watcher.evals.get(run_dir.name, [])
        shown = _cmd(
            [PY, "-m", "classbalanced", "train", *flags, "--data-dir", "DATA", "--out", "RUN"]
        )
        summarize_evals(stage, evals, self.sizes, shown, prefix=prefix)
        if evals and (out.rc == 0 or (out.timed_out and out.rc == 130)):
            stage.status = "ok"
            if out.rc == 130:
                stage.notes.append(
                    f"stopped by SIGTERM at the end of its slice after epoch {evals[-1][1]['epoch']} "
                    "(exit 130: it checkpoints and can be resumed)"
                )
        else:
            stage.status = "timed out" if out.timed_out else f"failed (exit {out.rc})"
            stage.notes.append(_tail(out.text))
        return _epoch_times(evals, self.sizes.epochs) if len(evals) >= 2 else {}

    def stage_grid(self, stage: Stage, limit: float) -> None:
        if not self._train_deps(stage):
            return
        t0 = time.monotonic()
        data = self._ensure_data()
        k = self.sizes.jobs
        sweep_dir = self.work / "grid"
        shutil.rmtree(sweep_dir, ignore_errors=True)
        sweep_dir.mkdir(parents=True)
        betas = [0.9, 0.99, 0.999, 0.9999, 0.99999, 0.5, 0.0, 0.95][:k]
        toml = sweep_dir.parent / "grid.toml"
        toml.write_text(_grid_toml(self._train_flags(), data, betas), encoding="utf-8")
        cmd = [PY, "-m", "classbalanced", "sweep", "--config", str(toml), "--jobs", str(k),
               "--out", str(sweep_dir), "--no-report"]  # fmt: skip
        watcher = RunWatcher(sweep_dir / "runs")
        watcher.start()
        left = limit - (time.monotonic() - t0)
        try:
            out = run_timed(cmd, max(1.0, left), self.log, stop_signal=signal.SIGINT)
        finally:
            watcher.stop()
        shown = f"{_cmd(cmd[:4])} --config GRID.toml --jobs {k}  (GRID.toml: [base] = the train flags above, [[grid]] beta = {betas})"
        per_run = {name: evals for name, evals in watcher.evals.items() if evals}
        for name, evals in sorted(per_run.items()):
            stamps = [(e["epoch"], round(t, 1)) for t, e in evals]
            self.log.write(f"grid run {name}: (epoch, seconds) at evaluations {stamps}\n")
        summarize_grid(stage, per_run, k, self.sizes, shown, self.train_result)
        if len(per_run) == k and all(len(e) >= 1 for e in per_run.values()):
            stage.status = "ok"
            if out.timed_out:
                stage.notes.append("stopped (SIGINT to the sweep) at the end of its slice")
        else:
            stage.status = "timed out" if out.timed_out else f"failed (exit {out.rc})"
            stage.notes.append(
                f"{len(per_run)} of {k} runs reached an evaluation; {_tail(out.text)}"
            )

    def stage_remedies(self, stage: Stage, limit: float) -> None:
        s = self.sizes
        json_path = self.work / "remedies.json"
        json_path.unlink(missing_ok=True)
        args = ["--device", self.device, "--model", s.model, "--batch", str(s.batch),
                "--steps", str(s.remedy_steps)]  # fmt: skip
        cmd = [PY, str(Path(__file__).resolve()), "remedy-steps", *args, "--json", str(json_path)]
        out = run_timed(cmd, limit, self.log)
        shown = _cmd([PY, "benchmarks/gpu_check.py", "remedy-steps", *args])
        rows = json.loads(json_path.read_text())["rows"] if json_path.is_file() else []
        for row in rows:
            stage.add(
                f"{s.model} batch {s.batch} step: {row['name']}",
                f"{1e3 * row['step_s']:.2f} ms/step ({row['speedup']:.2f}x the first row), "
                f"200 epochs x {row['steps_per_epoch']} steps: {row['implied_200_epochs_s']:.0f} s, "
                f"first step {row['first_step_s']:.1f} s, first loss vs the first row {row['loss_rel_diff']:.1e}",
                shown,
            )
        if out.rc == 0 and rows:
            stage.status = "ok"
        else:
            stage.status = "timed out" if out.timed_out else f"failed (exit {out.rc})"
            stage.notes.append(f"{len(rows)} variants measured; {_tail(out.text)}")

    def stage_resnet50(self, stage: Stage, limit: float) -> None:
        if _missing("torchvision"):
            stage.status = "skipped: torchvision missing"
            return
        s = self.sizes
        json_path = self.work / "resnet50.json"
        json_path.unlink(missing_ok=True)
        args = ["--device", self.device, "--batch", str(s.r50_batch), "--size", str(s.r50_size),
                "--steps", str(s.r50_steps), "--warmup", str(s.r50_warmup),
                "--precision", s.r50_precision]  # fmt: skip
        cmd = [PY, str(Path(__file__).resolve()), "resnet50-steps", *args, "--json", str(json_path)]
        out = run_timed(cmd, limit, self.log)
        shown = _cmd([PY, "benchmarks/gpu_check.py", "resnet50-steps", *args])
        if json_path.is_file():
            for row in json.loads(json_path.read_text())["rows"]:
                stage.add(
                    f"ResNet-50 {row['precision']} channels_last {s.r50_size} px batch {s.r50_batch}, cudnn.benchmark={row['cudnn_benchmark']}",
                    f"{row['images_per_s']:.0f} images/s ({1e3 * row['step_s']:.1f} ms/step, median of {row['steps']} steps)",
                    shown,
                )
        if out.rc == 0 and json_path.is_file():
            stage.status = "ok"
        else:
            stage.status = "timed out" if out.timed_out else f"failed (exit {out.rc})"
            stage.notes.append(_tail(out.text))

    def stage_pipeline(self, stage: Stage, limit: float) -> None:
        # the fast path's partial JPEG decoding, built in place where it can be (setuptools
        # keeps a build newer than _jpegcrop.c; a stale one would not be used); setup.py's
        # extension alone, so that a setuptools too old for pyproject.toml builds it too
        build = (
            f"import os, sys; os.chdir({str(ROOT)!r}); sys.path.insert(0, '.'); "
            "from setup import JPEGCROP; from setuptools import Distribution; "
            "d = Distribution({'ext_modules': [JPEGCROP], 'package_dir': {'': 'src'}}); "
            "d.get_command_obj('build_ext').inplace = True; d.run_command('build_ext')"
        )
        t0 = time.monotonic()
        built = run_timed([PY, "-c", build], min(BUILD_S, 0.4 * limit), self.log)
        args = ["--pipeline-only", "--device", self.device, *self.sizes.pipe_args]
        left = limit - (time.monotonic() - t0)
        out = run_timed([PY, str(ROOT / "benchmarks" / "data_speed.py"), *args], left, self.log)
        shown = _cmd([PY, "benchmarks/data_speed.py", *args])
        # said in the table: without the extension data_speed.py has no 'fast' row
        if built.rc == 0 and "the libjpeg extension is not built" not in out.text:
            state = "built: the 'fast' rows decode only the crop's region"
        else:
            # the extension is optional: setuptools reports a failed compile and exits 0
            errors = [line.strip() for _, line in built.lines if "error" in line.lower()]
            why = "timed out" if built.timed_out else (errors[:1] or [_tail(built.text, 1)])[0]
            state = (
                f"NOT built ({why}): no 'fast' row, only 'fast (PIL's decoder)'; "
                f"the env stage says whether a C compiler, Python.h and jpeglib.h exist"
            )
        stage.add(
            "libjpeg extension (partial JPEG decoding, setup.py)",
            state,
            "python setup.py build_ext --inplace",
        )
        _, rows = _markdown_table(out.text, "| measurement")
        for row in rows:
            if len(row) == 2 and not row[0].startswith("stage,"):  # rates, not the ms split
                stage.add(row[0], row[1], shown)
        if out.rc == 0 and stage.figures:
            stage.status = "ok"
        else:
            stage.status = "timed out" if out.timed_out else f"failed (exit {out.rc})"
            stage.notes.append(_tail(out.text))


# ---------------------------------------------------------------------------
# helpers: data, logs of runs, figures
# ---------------------------------------------------------------------------


def write_cifar10(root: Path, per_class_train: int, per_class_test: int, seed: int = 0) -> None:
    """A CIFAR-10-format folder (``cifar-10-batches-py``) of generated images: a colour
    template per class plus noise, so the task is learnable."""
    import numpy as np

    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    templates = rng.integers(40, 216, size=(10, 1, 1, 3), dtype=np.int16)

    def images(labels):
        noise = rng.integers(-48, 49, size=(len(labels), 32, 32, 3), dtype=np.int16)
        x = np.clip(templates[labels] + noise, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(labels), 3072))

    def dump(name, labels, label):
        batch = {
            b"batch_label": label,
            b"labels": labels.tolist(),
            b"data": images(labels),
            b"filenames": [],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))

    labels = rng.permutation(np.repeat(np.arange(10), per_class_train))
    for b, part in enumerate(np.array_split(labels, 5), start=1):
        dump(f"data_batch_{b}", part, b"training batch")
    dump("test_batch", np.repeat(np.arange(10), per_class_test), b"testing batch")
    meta = {
        b"label_names": [f"class{i}".encode() for i in range(10)],
        b"num_cases_per_batch": len(labels) // 5,
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def _grid_toml(flags: list[str], data: Path, betas: list[float]) -> str:
    """The sweep file of the grid stage: the train flags as [base], beta as the grid."""
    base: dict[str, Any] = {"data_dir": str(data), "download": False, "progress": False}
    i = 0
    while i < len(flags):
        key = flags[i][2:].replace("-", "_")
        if key.startswith("no_"):
            base[key[3:]] = False
            i += 1
        elif i + 1 < len(flags) and not flags[i + 1].startswith("--"):
            base[key] = _toml_scalar(flags[i + 1])
            i += 2
        else:
            base[key] = True
            i += 1
    base.pop("beta", None)
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in base.items())
    return f'[sweep]\nname = "gpu_check_grid"\n\n[base]\n{body}\n\n[[grid]]\nbeta = {json.dumps(betas)}\n'


def _toml_scalar(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


class RunWatcher:
    """Polls ``*/history.json`` of the run folders under ``folder`` and time-stamps each
    new evaluation (the trainer rewrites that file atomically after every evaluation)."""

    def __init__(self, folder: Path, period: float = 0.2) -> None:
        self.folder, self.period = folder, period
        self.evals: dict[str, list[tuple[float, dict]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.start_time = time.monotonic()

    def start(self) -> None:
        self.start_time = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._poll()

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self._poll()

    def _poll(self) -> None:
        now = time.monotonic() - self.start_time
        for path in sorted(self.folder.glob("*/history.json")) if self.folder.is_dir() else ():
            try:
                history = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            seen = self.evals.setdefault(path.parent.name, [])
            for entry in history[len(seen) :] if isinstance(history, list) else ():
                if isinstance(entry, dict) and isinstance(entry.get("epoch"), int):
                    seen.append((now, entry))


def _epoch_times(evals: list[tuple[float, dict]], total: int) -> dict[str, float]:
    """First evaluation time and the median wall time per epoch between evaluations."""
    epochs = [e["epoch"] for _, e in evals]
    times = [t for t, _ in evals]
    pairs = list(zip(times, epochs, strict=True))
    per_epoch = [
        (t2 - t1) / (e2 - e1)
        for (t1, e1), (t2, e2) in zip(pairs, pairs[1:], strict=False)
        if e2 > e1
    ]
    result = {"first_eval_s": times[0], "first_eval_epoch": epochs[0], "total": total}
    if per_epoch:
        result["epoch_s"] = statistics.median(per_epoch)
        result["run_s"] = times[0] + (total - epochs[0]) * result["epoch_s"]
        result["intervals"] = len(per_epoch)
    return result


def summarize_evals(stage: Stage, evals, sizes: Sizes, command: str, prefix: str) -> None:
    if not evals:
        stage.add(f"{prefix}: evaluations", "none within the slice", command)
        return
    r = _epoch_times(evals, sizes.epochs)
    last = evals[-1][1]
    stage.add(
        f"{prefix}: start to first evaluation (epoch {r['first_eval_epoch']}; start-up, data, warm-up included)",
        f"{r['first_eval_s']:.1f} s",
        command,
    )
    if "epoch_s" in r:
        stage.add(
            f"{prefix}: wall time per epoch, evaluation every {sizes.eval_every} and checkpoints included (median of {r['intervals']} intervals)",
            f"{r['epoch_s']:.2f} s",
            command,
        )
        stage.add(
            f"{prefix}: implied {r['total']}-epoch run (first evaluation + the rest at that rate)",
            f"{r['run_s']:.0f} s (target for 200 epochs on one H100/H200-class GPU: <= 60 s)",
            command,
        )
    stage.add(
        f"{prefix}: last evaluation",
        f"epoch {last['epoch']}/{sizes.epochs}: train loss {last.get('train_loss', float('nan')):.4f}, "
        f"test error {last.get('error_percent', float('nan')):.2f}%, "
        f"{last.get('train_images_per_second', float('nan')):.0f} train img/s",
        command,
    )


def summarize_grid(
    stage: Stage, per_run: dict, k: int, sizes: Sizes, command: str, single: dict
) -> None:
    stage.add(
        f"{k} concurrent runs: runs that reached an evaluation", f"{len(per_run)} of {k}", command
    )
    rates = [_epoch_times(evals, sizes.epochs) for evals in per_run.values()]
    epoch_s = [r["epoch_s"] for r in rates if "epoch_s" in r]
    if not epoch_s:
        return
    mean_epoch = statistics.mean(epoch_s)
    stage.add(
        f"{k} concurrent runs: wall time per epoch of each run (mean over runs)",
        f"{mean_epoch:.2f} s",
        command,
    )
    throughput = sum(1.0 / e for e in epoch_s) * (k / len(epoch_s))  # epochs per second, all runs
    stage.add(
        f"{k} concurrent runs: grid throughput",
        f"{3600 * throughput / sizes.epochs:.1f} runs of {sizes.epochs} epochs per hour",
        command,
    )
    if single.get("epoch_s"):
        stage.add(
            f"{k} concurrent runs vs 1 run alone",
            f"{throughput * single['epoch_s']:.2f}x the epochs per second",
            command,
        )
    n_runs, scale = _table2_load()
    if n_runs:
        minutes = scale * sizes.epochs / throughput / 60 if throughput else math.inf
        stage.add(
            f"implied Table 2 grid for CIFAR-10 ({n_runs} runs of configs/sweeps/cifar10_table2.toml, training time scaled by each run's training-set size)",
            f"{minutes:.1f} min at {k} runs at a time (target: <= 20 min on one H100/H200-class GPU)",
            command,
        )


def _table2_load() -> tuple[int, float]:
    """(number of runs, sum over runs of n_train(IF) / n_train(IF 100)) of the CIFAR-10 Table 2 sweep."""
    try:
        from classbalanced.data import longtail_counts
        from classbalanced.reproduce.sweep import expand_sweep, load_sweep

        runs = expand_sweep(load_sweep(TABLE2))
        size = lambda f: sum(longtail_counts(5000, 10, f))  # noqa: E731
        return len(runs), sum(size(r.config.imbalance_factor or 100.0) / size(100.0) for r in runs)
    except Exception:  # an estimate only: leave it out rather than fail the stage
        return 0, 0.0


def _markdown_table(text: str, header_start: str) -> tuple[list[str], list[list[str]]]:
    """Header cells and rows of the last markdown table whose header starts so."""
    header, rows, inside = [], [], False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(header_start):
            header, rows, inside = [c.strip() for c in line.strip("|").split("|")], [], True
            continue
        if inside:
            if not line.startswith("|"):
                inside = False
                continue
            if set(line) <= set("|-: "):
                continue
            rows.append([c.strip() for c in line.strip("|").split("|")])
    return header, rows


def _test_results(text: str) -> dict[str, str]:
    """Test id -> outcome from ``pytest -v`` output (plain or pytest-xdist's format)."""
    outcomes = "|".join(TEST_OUTCOMES)
    found = {}
    for m in re.finditer(rf"^(tests/cuda/\S+::\S+) ({outcomes})\b", text, re.M):
        found[m.group(1)] = m.group(2)
    for m in re.finditer(rf"^\[gw\d+\] \[\s*\d+%\] ({outcomes}) (tests/cuda/\S+::\S+)", text, re.M):
        found[m.group(2)] = m.group(1)
    return found


def _grace(slice_s: float, grace_s: float = STOP_GRACE_S) -> float:
    """Time kept at the end of a slice for a stopped run to checkpoint and exit."""
    return min(grace_s, 0.25 * slice_s)


def _tail(text: str, n: int = 3) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " / ".join(lines[-n:])[-600:] if lines else "(no output)"


def _build_tools() -> str:
    """Whether a C compiler, Python.h and libjpeg's jpeglib.h exist (the extension needs all
    three; torch.compile's CPU and Triton paths need the compiler and Python.h)."""
    import sysconfig

    cc = os.environ.get("CC") or next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    compiler = (
        f"C compiler {shutil.which(cc.split()[0]) or cc + ' (not found)'}"
        if cc
        else "no C compiler (cc, gcc, clang)"
    )
    python_h = Path(sysconfig.get_paths()["include"]) / "Python.h"
    dirs = [
        Path(p)
        for var in ("CPATH", "C_INCLUDE_PATH")
        for p in os.environ.get(var, "").split(os.pathsep)
        if p
    ]
    dirs += [Path(sysconfig.get_config_var("prefix") or sys.prefix) / "include"]
    dirs += [Path("/usr/local/include"), Path("/usr/include")]
    multiarch = sysconfig.get_config_var("MULTIARCH")
    dirs += [Path("/usr/include") / multiarch] if multiarch else []
    jpeglib = next((d / "jpeglib.h" for d in dirs if (d / "jpeglib.h").is_file()), None)
    return "; ".join(
        [
            compiler,
            f"Python.h {python_h}"
            if python_h.is_file()
            else f"no Python.h (looked in {python_h.parent}: python3-dev)",
            f"jpeglib.h {jpeglib}"
            if jpeglib
            else "no jpeglib.h (libjpeg-dev / libjpeg-turbo8-dev)",
        ]
    )


def _driver_version() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        return Path("/proc/driver/nvidia/version").read_text().split("Kernel Module")[1].split()[0]
    except (OSError, IndexError):
        return "unknown"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------
# ResNet-50 steps (run as a child: `gpu_check.py resnet50-steps ...`)
# ---------------------------------------------------------------------------


def resnet50_steps(argv: list[str]) -> int:
    """Median step time of ResNet-50 training steps, bf16 autocast, channels_last."""
    p = argparse.ArgumentParser(prog="gpu_check.py resnet50-steps")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    import torch

    import classbalanced as cb
    from classbalanced.data.augment import normalize_images
    from classbalanced.models import build_model

    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(
        0, 256, (args.batch, 3, args.size, args.size), generator=g, dtype=torch.uint8
    )
    labels = torch.randint(0, 1000, (args.batch,), generator=g)
    x = normalize_images(images.to(device)).contiguous(memory_format=torch.channels_last)
    y = labels.to(device)
    counts = torch.randint(2, 1000, (1000,), generator=g)
    rows = []
    bf16 = args.precision == "bf16"
    for benchmark in (False, True) if device.type == "cuda" else (False,):
        torch.backends.cudnn.benchmark = benchmark
        torch.manual_seed(0)
        model = build_model("resnet50", 1000).to(device).to(memory_format=torch.channels_last)
        loss_fn = cb.build_loss("softmax", counts, beta=0.999).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        times = []
        for i in range(args.warmup + args.steps):
            _sync(device)
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
            loss = loss_fn(logits, y)
            loss.backward()
            opt.step()
            _sync(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
        if not math.isfinite(float(loss.detach())):
            raise SystemExit(f"ResNet-50 loss became {float(loss.detach())}")
        step = statistics.median(times)
        rows.append({"precision": args.precision, "cudnn_benchmark": benchmark, "steps": len(times),
                     "step_s": step, "images_per_s": args.batch / step})  # fmt: skip
        print(
            f"cudnn.benchmark={benchmark}: {args.batch / step:.0f} images/s ({1e3 * step:.1f} ms/step)",
            flush=True,
        )
        del model, opt
    Path(args.json).write_text(json.dumps({"rows": rows}, indent=2))
    return 0


def remedy_steps(argv: list[str]) -> int:
    """Step time of the CIFAR training step with each launch-overhead remedy (issue 14, item 3).

    Synthetic uint8 batches on the device, normalised and fed as the trainer does
    (channels_last, the class-balanced focal loss, SGD momentum 0.9, weight decay 2e-4);
    variants are cumulative where that is how they would be used. Every variant starts
    from the same weights and sees the same batches; the first loss is compared with the
    first variant's.
    """
    p = argparse.ArgumentParser(prog="gpu_check.py remedy-steps")
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default="resnet32")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    import torch

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    # (name, autocast dtype, optimizer kwargs, cudnn.benchmark, compile mode)
    variants = [
        ("fp32 channels_last eager, SGD default (the trainer's defaults)", None, {}, False, None),
        ("+ fused SGD (--sgd-impl fused)", None, {"fused": True}, False, None),
        ("+ cudnn.benchmark (--cudnn-benchmark)", None, {"fused": True}, True, None),
        ("+ bf16 autocast (--precision bf16)", torch.bfloat16, {"fused": True}, True, None),
        ("+ torch.compile (--compile)", torch.bfloat16, {"fused": True}, True, "default"),
        ("+ torch.compile reduce-overhead, CUDA graphs (--compile-mode reduce-overhead)", torch.bfloat16, {"fused": True}, True, "reduce-overhead"),
    ]  # fmt: skip
    if not cuda:  # CUDA graphs are a CUDA path, cudnn.benchmark does nothing, compile is slow
        variants = [
            *variants[:2],
            ("+ bf16 autocast (--precision bf16)", torch.bfloat16, {"fused": True}, False, None),
        ]
    rows, base_loss, base_step = [], None, None
    for name, amp, opt_kwargs, benchmark, mode in variants:
        row = _time_variant(args, device, amp, opt_kwargs, benchmark, mode)
        base_loss = row["first_loss"] if base_loss is None else base_loss
        base_step = row["step_s"] if base_step is None else base_step
        row.update(name=name, speedup=base_step / row["step_s"])
        row["loss_rel_diff"] = abs(row["first_loss"] - base_loss) / abs(base_loss)
        rows.append(row)
        print(f"{name}: {1e3 * row['step_s']:.2f} ms/step", flush=True)
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=2))  # what there is so far
    return 0


def _time_variant(args, device, amp, opt_kwargs, benchmark, mode) -> dict[str, Any]:
    import torch

    import classbalanced as cb
    from classbalanced.data import longtail_counts
    from classbalanced.data.augment import normalize_images
    from classbalanced.models import build_model

    torch.backends.cudnn.benchmark = benchmark
    counts = longtail_counts(5000, 10, 100.0)
    g = torch.Generator().manual_seed(0)
    n = args.batch * 4
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8).to(device)
    labels = torch.randint(0, 10, (n,), generator=g).to(device)
    torch.manual_seed(0)
    model = build_model(args.model, 10).to(device).to(memory_format=torch.channels_last)
    cb.init_prior_bias_(model.fc)
    loss_fn = cb.build_loss("focal", counts, beta=0.9999, gamma=1.0).to(device)
    groups = cb.parameter_groups(model, 2e-4, no_decay=[model.fc.bias])
    impl = "fused" if opt_kwargs.get("fused") else "default"
    opt = cb.optim.build_sgd(groups, lr=0.1, momentum=0.9, impl=impl)  # as --sgd-impl does
    forward = torch.compile(model, mode=mode) if mode else model

    def step(i: int) -> torch.Tensor:
        lo = (i % 4) * args.batch
        x = normalize_images(images[lo : lo + args.batch])
        x = x.contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            logits = forward(x)
        loss = loss_fn(logits, labels[lo : lo + args.batch])
        loss.backward()
        opt.step()
        return loss

    _sync(device)
    t0 = time.perf_counter()
    first_loss = float(step(0).detach())  # compile / autotune / graph capture happen here
    first_step = time.perf_counter() - t0
    for i in range(1, args.warmup):
        step(i)
    # as the trainer runs: no host synchronisation inside the block of timed steps
    _sync(device)
    t0 = time.perf_counter()
    for i in range(args.steps):
        loss = step(i)
    _sync(device)
    step_s = (time.perf_counter() - t0) / args.steps
    if not math.isfinite(float(loss.detach())):
        raise SystemExit(f"the loss became {float(loss.detach())}")
    torch.backends.cudnn.benchmark = False
    per_epoch = sum(counts) // args.batch
    return {
        "step_s": step_s,
        "first_step_s": first_step,
        "first_loss": first_loss,
        "steps_per_epoch": per_epoch,
        "implied_200_epochs_s": 200 * per_epoch * step_s,
    }


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def _stages(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in STAGES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"expected stages from {', '.join(STAGES)}, got {text!r}")
    return [s for s in STAGES if s in names]  # always in the documented order


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for summary.json, summary.md, logs.txt")
    p.add_argument(
        "--budget-s",
        type=float,
        default=420.0,
        help="total time budget in seconds (default 420: ends by about 425 s, inside the "
        "documented `timeout 480`)",
    )
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument(
        "--quick", action="store_true", help="toy sizes (the plumbing in about a minute)"
    )
    p.add_argument(
        "--stages",
        type=_stages,
        default=list(DEFAULT_STAGES),
        help=f"comma-separated subset of {','.join(STAGES)} (default: all but remedies, train_fast)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="concurrent runs of the grid stage (default 4; quick 2)",
    )
    p.add_argument(
        "--train-args",
        default="",
        help="extra flags for the train and grid runs, e.g. '--precision bf16 --compile'",
    )
    p.add_argument(
        "--work", help="scratch folder (default: a temporary folder, deleted at the end)"
    )
    p.add_argument("--keep-work", action="store_true", help="keep the temporary scratch folder")
    args = p.parse_args(argv)
    if args.budget_s <= 0:
        p.error(f"--budget-s must be > 0, got {args.budget_s}")
    if args.jobs is not None and args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.device not in ("cuda", "cpu") and not re.fullmatch(r"cuda:\d+", args.device):
        p.error(f"--device must be cuda, cuda:N or cpu, got {args.device!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["resnet50-steps"]:
        return resnet50_steps(argv[1:])
    if argv[:1] == ["remedy-steps"]:
        return remedy_steps(argv[1:])
    check = Check(parse_args(argv))

    def stop(signum, frame):
        for proc in list(ACTIVE):
            _stop_group(proc, signal.SIGKILL)
        raise Stopped(f"signal {signum}")

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = check.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    print((check.out / "summary.md").read_text(encoding="utf-8"))
    return code


if __name__ == "__main__":
    sys.exit(main())
