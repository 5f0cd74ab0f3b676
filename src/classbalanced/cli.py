"""Command line: ``classbalanced <command>`` (also ``python -m classbalanced``).

Argument parsing, subcommands and one-line errors; the work happens in the
library. Every user mistake ends as one line ``classbalanced: error: <what>``
(``classbalanced COMMAND: error: ...`` for malformed flags) on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from ._console import info as _info

__all__ = ["main", "build_parser"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _bool_flag(parser, name: str, help: str) -> None:
    parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None, help=help)


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``train``; every default is None so that only given flags override the config file."""
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help="cifar10 (default), cifar100, cifar20, digits, npz, folder")
    g.add_argument(
        "--data-dir", help="folder holding (or receiving) the CIFAR archives (default: data)"
    )
    g.add_argument("--train-data", help="training .npz file (x uint8, y int) or class folder")
    g.add_argument("--test-data", help="test .npz file or class folder")
    g.add_argument(
        "--imbalance-factor",
        type=float,
        help="n_max / n_min >= 1 (default 100 for CIFAR, 1 otherwise)",
    )
    g.add_argument("--profile", help="long-tail profile: exp (default) or step")
    g.add_argument("--image-size", type=int, help="resize class-folder images to this size")
    _bool_flag(g, "download", "download missing CIFAR archives (default: yes)")
    g.add_argument(
        "--num-workers", type=int, help="large datasets: loader workers per process (default 4)"
    )
    g = p.add_argument_group("model and loss")
    g.add_argument(
        "--model",
        help="resnet32 (default), resnet{6n+2}, resnet{6n+2}_v2, resnet{9n+2}_bottleneck, resnet50, ...",
    )
    _bool_flag(
        g,
        "pretrained",
        "start from torchvision's ImageNet weights in the local cache (resnet50/101/152)",
    )
    g.add_argument(
        "--loss",
        help="softmax (default), sigmoid, focal; for comparison: ldam, logit_adjusted, balanced_softmax",
    )
    g.add_argument(
        "--beta", type=float, help="class-balanced beta in [0, 1) (default 0: unweighted)"
    )
    g.add_argument("--gamma", type=float, help="focal-loss gamma >= 0 (default 1)")
    g.add_argument(
        "--reweight-schedule",
        help="constant (default: class-balanced weights throughout), drw (unweighted until "
        "--reweight-epoch, then class-balanced), ramp (beta grows to --beta by --reweight-epoch)",
    )
    g.add_argument("--reweight-epoch", type=int, help="default 160 x epochs / 200")
    g.add_argument(
        "--sampler",
        help="shuffle (default: every image once per epoch) or class_balanced "
        "(P(class) ~ n / E_n(--sampler-beta); pair it with --beta 0)",
    )
    g.add_argument(
        "--sampler-beta", type=float, help="beta of the class-balanced sampler (default 0.9999)"
    )
    g = p.add_argument_group("optimisation (defaults: the paper's CIFAR recipe)")
    g.add_argument("--epochs", type=int, help="default 200; warm-up and decay epochs scale with it")
    g.add_argument("--batch-size", type=int, help="global batch size (default 128)")
    g.add_argument("--lr", type=float, help="base learning rate (default 0.1 x batch / 128)")
    g.add_argument("--momentum", type=float)
    _bool_flag(g, "nesterov", "Nesterov momentum")
    g.add_argument("--weight-decay", type=float, help="default 2e-4")
    _bool_flag(
        g,
        "no-decay-bias-and-norm",
        "no weight decay on biases and norm layers (large-scale recipe)",
    )
    g.add_argument(
        "--accumulate-steps", type=int, help="micro-batches per optimiser step (default 1)"
    )
    g.add_argument("--warmup-epochs", type=int)
    g.add_argument("--decay-epochs", type=int, nargs="+")
    g.add_argument("--decay-factors", type=float, nargs="+")
    g.add_argument("--pad", type=int, help="random-crop padding (default 4)")
    _bool_flag(g, "flip", "random horizontal flips (default: yes)")
    g = p.add_argument_group("run")
    g.add_argument("--eval-every", type=int, help="evaluate every N epochs (default 2)")
    g.add_argument("--eval-batch-size", type=int)
    g.add_argument(
        "--seed",
        type=int,
        help="seeds the subset, initialisation, order and augmentation (default 0)",
    )
    g.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    g.add_argument("--precision", help="fp32 (default), bf16, fp16 (autocast)")
    _bool_flag(
        g,
        "channels-last",
        "channels-last memory format (default: yes; --no-channels-last for NCHW)",
    )
    _bool_flag(g, "compile", "torch.compile the model")
    _bool_flag(g, "sync-bn", "synchronised batch norm across processes (torchrun)")
    _bool_flag(
        g, "skip-nonfinite", "skip and count steps whose loss is NaN/inf instead of stopping"
    )
    g.add_argument("--out", help="run folder (default runs/latest)")
    g.add_argument("--keep-checkpoints", type=int, help="how many checkpoints to keep (default 2)")
    _bool_flag(g, "progress", "progress bars (default: yes)")
    g.add_argument("--resume", action="store_true", default=None, help="continue the run in --out")
    g.add_argument(
        "--overwrite", action="store_true", default=None, help="replace the run in --out"
    )
    g.add_argument(
        "--force", action="store_true", default=None, help="resume even if the config differs"
    )
    g.add_argument("--config", help="TOML or YAML file of settings; flags override it")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="classbalanced",
        description="Class-Balanced Loss: train and evaluate on long-tailed data.",
    )
    parser.add_argument("--version", action="version", version=f"classbalanced {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("train", help="train and evaluate a classifier")
    _add_train_arguments(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a run's checkpoint on a test set")
    p.add_argument("run", help="run folder (or a checkpoint file inside one)")
    p.add_argument(
        "--test-data", help="evaluate on this .npz / class folder instead of the run's test set"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--output", help="also write the metrics to this JSON file")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "make-lt", help="write a long-tailed subset (indices and counts) without training"
    )
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--train-data")
    p.add_argument("--test-data")
    p.add_argument("--imbalance-factor", type=float, default=100.0)
    p.add_argument("--profile", default="exp")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--output", required=True, help="JSON file for indices and counts (.npz: also the images)"
    )
    p.add_argument("--plot", help="also write the class distribution as this PNG")
    _bool_flag(p, "download", "download missing CIFAR archives (default: yes)")
    p.set_defaults(func=_cmd_make_lt)

    p = sub.add_parser(
        "prepare",
        help="scan iNaturalist / ImageNet annotations once: counts, class index, file check",
    )
    p.add_argument("--dataset", required=True, help="inat2017, inat2018 or imagenet")
    p.add_argument(
        "--data-dir",
        required=True,
        help="folder with the official annotation files / class folders",
    )
    p.add_argument(
        "--skip-missing",
        action="store_true",
        help="train without images that are referenced but absent",
    )
    p.add_argument(
        "--no-check-files", action="store_true", help="do not check that every image exists"
    )
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("weights", help="print effective numbers and class-balanced weights")
    p.add_argument("counts", nargs="+", type=float, help="training images per class")
    p.add_argument("--beta", type=float, nargs="+", default=[0.9, 0.99, 0.999, 0.9999])
    p.set_defaults(func=_cmd_weights)

    p = sub.add_parser(
        "demo", help="offline demo: long-tailed digits, softmax vs class-balanced focal"
    )
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per loss (default 3)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in --out")
    _bool_flag(p, "progress", "progress bars (default: yes)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("plot", help="plot effective numbers, or one or several runs side by side")
    p.add_argument("what", choices=["effective-number", "run"])
    p.add_argument(
        "--run",
        nargs="+",
        help="run folder(s) (for 'run'); several: per-class accuracy and error curves side by side",
    )
    p.add_argument("--output", required=True, help="PNG file (for 'run': a folder)")
    p.add_argument("--beta", type=float, nargs="+", default=[0.9, 0.99, 0.999, 0.9999])
    p.add_argument("--max-samples", type=int, default=10_000)
    p.set_defaults(func=_cmd_plot)

    _add_sweep_parser(sub)
    _add_report_parser(sub)
    _add_submit_parser(sub)
    return parser


# ---------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------


def _train_config(args: argparse.Namespace):
    from .config import TrainConfig, config_from_sources

    names = {f for f in TrainConfig.__dataclass_fields__}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return config_from_sources(args.config, overrides)


def _cmd_train(args) -> int:
    from .engine.trainer import train

    cfg = _train_config(args)
    metrics = train(cfg, log=_info)
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 alone reports
        return 0
    _info(
        f"final: error {metrics['error_percent']:.2f}% (accuracy {metrics['accuracy']:.4f}) after "
        f"{metrics['epoch']} epochs; results in {cfg.out}"
    )
    return 0


def _cmd_evaluate(args) -> int:
    from .engine.evaluate import evaluate_run

    metrics = evaluate_run(args.run, test_data=args.test_data, device=args.device)
    keys = (
        "accuracy",
        "error_percent",
        "top5_error_percent",
        "many_shot_accuracy",
        "medium_shot_accuracy",
        "few_shot_accuracy",
    )
    print(json.dumps({k: metrics.get(k) for k in keys if k in metrics}, indent=2))
    if args.output:
        from .data.safe_io import atomic_write_json

        atomic_write_json(args.output, metrics)
    return 0


def _cmd_make_lt(args) -> int:
    from .config import TrainConfig
    from .data.safe_io import atomic_write_json
    from .engine.trainer import prepare_data

    cfg = TrainConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        train_data=args.train_data,
        test_data=args.test_data or args.train_data,
        imbalance_factor=args.imbalance_factor,
        profile=args.profile,
        seed=args.seed,
        download=True if args.download is None else args.download,
    ).resolved()
    data = prepare_data(cfg)
    output = Path(args.output)
    if output.suffix == ".npz":
        import numpy as np

        from .data.safe_io import atomic_save

        atomic_save(
            output,
            lambda tmp: np.savez(
                open(tmp, "wb"),
                x=data.train.images,
                y=data.train.labels,
                indices=data.indices,
                class_names=np.array(data.train.class_names),
            ),
        )
    else:
        atomic_write_json(
            output,
            {
                "dataset": cfg.dataset,
                "imbalance_factor": cfg.imbalance_factor,
                "profile": cfg.profile,
                "seed": cfg.seed,
                "counts": data.counts.tolist(),
                "class_names": data.train.class_names,
                "indices": data.indices.tolist(),
            },
        )
    if args.plot:
        from .plots import plot_class_distribution

        plot_class_distribution(
            args.plot, data.counts, title=f"{cfg.dataset} IF {cfg.imbalance_factor:g}"
        )
    _info(
        f"{cfg.dataset} IF {cfg.imbalance_factor:g} ({cfg.profile}): {int(data.counts.sum())} images, counts {data.counts.tolist()[:10]}{' ...' if len(data.counts) > 10 else ''} -> {output}"
    )
    return 0


def _cmd_prepare(args) -> int:
    import time

    from .data import inat

    if args.dataset not in inat.LARGE_DATASETS:
        raise ValueError(
            f"unknown dataset {args.dataset!r}: expected one of {', '.join(inat.LARGE_DATASETS)}"
        )
    tick = time.perf_counter()
    layout = inat.prepare(
        args.dataset,
        args.data_dir,
        skip_missing=args.skip_missing,
        check_files=not args.no_check_files,
        log=_info,
    )
    _info(
        f"{args.dataset}: {len(layout.train_samples)} training and {len(layout.val_samples)} validation images, "
        f"{layout.num_classes} classes ({layout.num_skipped} skipped) in {time.perf_counter() - tick:.1f} s; "
        f"written to {inat.prepared_dir(args.dataset, args.data_dir)}"
    )
    return 0


def _cmd_weights(args) -> int:
    from .weights import class_balanced_weights, effective_number

    columns = [  # computed (and checked) before anything is printed
        (effective_number(args.counts, b), class_balanced_weights(args.counts, b))
        for b in args.beta
    ]
    header = f"{'class':>5} {'n':>10}" + "".join(
        f" {'E(b=' + format(b, 'g') + ')':>14} {'w(b=' + format(b, 'g') + ')':>12}"
        for b in args.beta
    )
    print(header)
    for i, n in enumerate(args.counts):
        row = f"{i:>5} {n:>10g}"
        for e, w in columns:
            row += f" {e[i].item():>14.4f} {w[i].item():>12.4f}"
        print(row)
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(
        args.out,
        epochs=args.epochs,
        seed=args.seed,
        seeds=args.seeds,
        overwrite=args.overwrite,
        progress=args.progress is not False,
        log=_info,
    )
    return 0


def _cmd_plot(args) -> int:
    from . import plots

    if args.what == "effective-number":
        path = plots.plot_effective_number(
            args.output, betas=tuple(args.beta), max_samples=args.max_samples
        )
        _info(f"wrote {path}")
        return 0
    if not args.run:
        raise ValueError("plot run needs --run RUN_FOLDER [RUN_FOLDER ...]")
    runs = {}
    for folder in map(Path, args.run):
        metrics_path = folder / "metrics.json"
        if not metrics_path.is_file():
            raise FileNotFoundError(f"no metrics.json in {folder}: is it a finished run folder?")
        history_path = folder / "history.json"
        history = json.loads(history_path.read_text()) if history_path.is_file() else []
        name = folder.name if folder.name not in runs else str(folder)
        runs[name] = (json.loads(metrics_path.read_text()), history)
    counts = next(iter(runs.values()))[0]["train_counts"]
    if any(m["train_counts"] != counts for m, _ in runs.values()):
        raise ValueError(
            "the runs must share their training set: expected equal train_counts, got different ones"
        )
    out = Path(args.output)
    plots.plot_class_distribution(out / "class_distribution.png", counts)
    plots.plot_per_class_accuracy(
        out / "per_class_accuracy.png",
        {
            name: [0.0 if v is None else v for v in m["per_class_accuracy"]]
            for name, (m, _) in runs.items()
        },
        counts=counts,
    )
    curves = {
        name: ([h["epoch"] for h in hist], [h["error_percent"] for h in hist])
        for name, (_, hist) in runs.items()
        if len(hist) >= 2
    }
    if curves:
        plots.plot_error_curves(out / "error_curve.png", curves)
    _info(f"wrote plots to {out}")
    return 0


# ---------------------------------------------------------------------------
# sweep, report, submit (one self-contained block)
# ---------------------------------------------------------------------------


def _add_sweep_parser(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a grid of training runs (resumable; local, Ray or SLURM), then results.csv "
        "and report.md",
        description="Expand a sweep file ([base] + [[grid]] blocks of lists) into runs; skip "
        "finished runs, resume unfinished ones, start the others. Several launchers may work "
        "on one sweep folder at once: each run is claimed.",
    )
    p.add_argument("--config", help="sweep TOML file (see configs/sweeps/)")
    p.add_argument(
        "--status",
        metavar="SWEEP_DIR",
        help="print the state of every run of this sweep folder and exit",
    )
    p.add_argument(
        "--out", help="sweep folder (default: [sweep] out of the file, else runs/sweeps/NAME)"
    )
    p.add_argument(
        "--launcher",
        choices=["local", "ray", "slurm"],
        default="local",
        help="where runs execute: this machine (default), a Ray cluster, or SLURM job arrays",
    )
    p.add_argument(
        "--jobs",
        type=int,
        help="local: runs at a time (default 1); each gets max(1, CPUs // jobs) threads and, "
        "when CUDA_VISIBLE_DEVICES lists several GPUs, one of them in turn",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="list the runs and what would happen; start none"
    )
    p.add_argument(
        "--extend",
        action="store_true",
        help="add the runs a changed sweep file adds to an existing sweep folder",
    )
    p.add_argument("--no-report", action="store_true", help="write results.csv but not report.md")
    p.add_argument(
        "--stale-after",
        type=float,
        default=120.0,
        help="seconds without a heartbeat after which a run's claim is taken over (default 120)",
    )
    _add_cluster_arguments(p)
    p.set_defaults(func=_cmd_sweep)


def _add_cluster_arguments(p) -> None:
    p.add_argument("--gpus-per-run", type=float, help="ray / slurm: GPUs per run (default 0)")
    p.add_argument("--cpus-per-run", type=int, help="ray / slurm: CPUs per run (default 1)")
    p.add_argument(
        "--ray-address",
        help="ray: the cluster (default: $RAY_ADDRESS, else a local Ray started for the sweep)",
    )
    p.add_argument("--slurm-partition", help="slurm: partition")
    p.add_argument(
        "--slurm-time", help="slurm: time limit per task, MINUTES or HH:MM:SS (default 60)"
    )
    p.add_argument(
        "--slurm-array-parallelism",
        type=int,
        help="slurm: array tasks running at once (default 256)",
    )
    p.add_argument(
        "--slurm-option",
        action="append",
        metavar="KEY=VALUE",
        help="slurm: any other sbatch option, e.g. account=lab or qos=high (repeatable)",
    )


def _launch_options(args):
    from .launch import LaunchOptions, check_launch_flags
    from .launch.slurm import parse_slurm_options, parse_slurm_time

    names = ("jobs", "gpus_per_run", "cpus_per_run", "ray_address", "slurm_partition")
    names += ("slurm_time", "slurm_array_parallelism", "slurm_option")
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    check_launch_flags(args.launcher, given)
    options = LaunchOptions()
    for name, value in given.items():
        if name == "slurm_time":
            value = parse_slurm_time(value)
        elif name == "slurm_option":
            name, value = "slurm_options", parse_slurm_options(value)
        setattr(options, name, value)
    return options


def _cmd_sweep(args) -> int:
    from .launch import make_launcher
    from .launch.sweep import run_sweep, sweep_status

    if args.status:
        for line in sweep_status(args.status, stale_after=args.stale_after):
            print(line)
        return 0
    if not args.config:
        raise ValueError("sweep needs --config FILE (or --status SWEEP_DIR)")
    try:
        launcher = make_launcher(args.launcher, _launch_options(args))
    except ImportError as exc:
        print(f"classbalanced: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    result = run_sweep(
        args.config,
        out=args.out,
        launcher=launcher,
        dry_run=args.dry_run,
        extend=args.extend,
        report=not args.no_report,
        stale_after=args.stale_after,
    )
    return result.exit_code


def _add_report_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write report.md of a sweep folder: results vs the paper's Table 2 / Table 3",
        description="Tables of mean ± std last-epoch error over seeds against the published "
        "numbers, a beta x gamma heat map and error curves per column.",
    )
    p.add_argument("sweep_dir", metavar="SWEEP_DIR", help="folder written by `classbalanced sweep`")
    p.add_argument(
        "--refresh",
        action="store_true",
        help="rebuild results.csv from the run folders first (interrupted or running sweeps)",
    )
    p.add_argument("--no-figures", action="store_true", help="tables only")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args) -> int:
    from .reproduce.report import write_report

    path = write_report(args.sweep_dir, refresh=args.refresh, figures=not args.no_figures)
    _info(f"wrote {path}")
    return 0


def _add_submit_parser(sub) -> None:
    p = sub.add_parser(
        "submit",
        help="submit one (multi-node DDP) training run to SLURM: torchrun on every node",
        description="classbalanced submit --launcher slurm --nodes 2 --gpus-per-node 8 -- "
        "train --config configs/inat2018_cb_focal.toml --out runs/inat18",
    )
    p.add_argument("--launcher", choices=["slurm"], default="slurm", help="slurm (the default)")
    p.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
    p.add_argument(
        "--gpus-per-node", type=int, default=0, help="GPUs per node = processes per node"
    )
    p.add_argument(
        "--procs-per-node",
        type=int,
        help="processes per node (default: --gpus-per-node, at least 1; CPU runs use gloo)",
    )
    p.add_argument("--cpus-per-node", type=int, default=1, help="CPUs per node (default 1)")
    p.add_argument("--slurm-partition", help="partition")
    p.add_argument("--slurm-time", default="60", help="time limit, MINUTES or HH:MM:SS")
    p.add_argument(
        "--slurm-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other sbatch option, e.g. account=lab (repeatable)",
    )
    p.add_argument("--logs", help="folder for SLURM's logs (default: runs/slurm/JOBID)")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- train ARGS...")
    p.set_defaults(func=_cmd_submit)


def _cmd_submit(args) -> int:
    from .launch.slurm import parse_slurm_options, parse_slurm_time, submit_training

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        return submit_training(
            command,
            nodes=args.nodes,
            gpus_per_node=args.gpus_per_node,
            procs_per_node=args.procs_per_node,
            cpus_per_node=args.cpus_per_node,
            partition=args.slurm_partition,
            time_minutes=parse_slurm_time(args.slurm_time),
            options=parse_slurm_options(args.slurm_option),
            logs=args.logs,
            wait=not args.no_wait,
            log=_info,
        )
    except ImportError as exc:
        print(f"classbalanced: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .engine.trainer import NonFiniteLoss, TrainingInterrupted

    try:
        return args.func(args)
    except TrainingInterrupted as exc:
        print(f"classbalanced: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("classbalanced: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except NonFiniteLoss as exc:
        print(f"classbalanced: error: {exc}", file=sys.stderr)
        return 1
    except MemoryError:
        print(
            "classbalanced: error: out of memory (is a data file larger than expected?)",
            file=sys.stderr,
        )
        return 1
    except (ValueError, TypeError, OSError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"classbalanced: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
