"""Command line: ``classbalanced <command>`` (also ``python -m classbalanced``).

Argument parsing, subcommands and one-line errors; the work happens in the
library. Every user mistake ends as one line ``classbalanced: error: <what>``
(``classbalanced COMMAND: error: ...`` for malformed flags) on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import linecache
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Sequence
from contextlib import nullcontext as _nothing
from pathlib import Path

from . import __version__
from ._console import count
from ._console import info as _info
from .cli_flags import (
    EXIT_USAGE,
    add_config_arguments,
    add_config_flag,
    add_run_safety_arguments,
    bool_flag,
    config_default,
    flag,
)
from .cli_runs import add_report_parser, add_submit_parser, add_sweep_parser, add_tune_parser
from .cli_use import add_evaluate_parser, add_export_parser, add_predict_parser
from .config import TrainConfig, config_from_sources, warn_test_is_train
from .data import prepared
from .data.lists import check_prepared_lists
from .data.prepare import prepare
from .decouple import DecoupleOptions, decouple
from .decouple.options import BACKBONE_BN_MODES as DECOUPLE_BN_MODES
from .decouple.options import EPOCHS_HELP as DECOUPLE_EPOCHS_HELP
from .decouple.options import SAMPLERS as DECOUPLE_SAMPLERS
from .demo import run_demo
from .engine.subset_file import write_long_tailed_subset
from .engine.trainer import NonFiniteLoss, TrainingInterrupted, train
from .locking import lock_folder
from .presets import Kind, describe, preset_names, preset_path
from .use.plot_runs import plot_runs
from .weights import class_balanced_weights, effective_number

__all__ = ["main", "build_parser"]

EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="classbalanced",
        description="Class-Balanced Loss: train and evaluate on long-tailed data.",
    )
    parser.add_argument("--version", action="version", version=f"classbalanced {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add_train_parser(sub)
    add_evaluate_parser(sub)
    add_predict_parser(sub)
    add_export_parser(sub)
    _add_make_lt_parser(sub)
    _add_prepare_parser(sub)
    _add_decouple_parser(sub)
    _add_weights_parser(sub)
    _add_demo_parser(sub)
    _add_plot_parser(sub)
    _add_presets_parser(sub)

    add_sweep_parser(sub)
    add_report_parser(sub)
    add_submit_parser(sub)
    add_tune_parser(sub)
    return parser


def _add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train and evaluate a classifier")
    add_config_arguments(p)
    add_run_safety_arguments(p, train=True)
    p.set_defaults(func=_cmd_train)


def _add_make_lt_parser(sub) -> None:
    p = sub.add_parser(
        "make-lt", help="write a long-tailed subset (indices and counts) without training"
    )
    for name in ("dataset", "data_dir", "train_data", "test_data", "profile", "seed"):
        add_config_flag(p, name, default=config_default(name))
    p.add_argument(
        "--imbalance-factor", type=float, default=100.0, help="n_max / n_min >= 1 (default 100)"
    )
    p.add_argument(
        "--output", required=True, help="JSON file for indices and counts (.npz: also the images)"
    )
    p.add_argument("--plot", help="also write the class distribution as this PNG")
    bool_flag(p, "download", "download missing CIFAR archives (default: yes)")
    p.set_defaults(func=_cmd_make_lt)


def _add_prepare_parser(sub) -> None:
    p = sub.add_parser(
        "prepare",
        help="scan a large data set's annotations or list files once (iNaturalist, ImageNet, "
        "ImageNet-LT, Places-LT, lists): counts, class index, file check",
    )
    p.add_argument(
        "--dataset",
        required=True,
        help="inat2017, inat2018, imagenet, imagenet_lt, places_lt or list",
    )
    p.add_argument(
        "--data-dir",
        required=True,
        help="folder with the official annotation files / class folders (lists: the image root)",
    )
    _list_arguments(p)
    p.add_argument(
        "--resize",
        type=int,
        metavar="SHORT_SIDE",
        help="also write copies with this short side (e.g. 256) and train from them",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="--resize only: processes writing the copies (default 0: this one)",
    )
    p.add_argument(
        "--allow-size-mismatch",
        action="store_true",
        help="imagenet_lt / places_lt: accept a train list whose size differs from the published one",
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


def _add_weights_parser(sub) -> None:
    p = sub.add_parser("weights", help="print effective numbers and class-balanced weights")
    p.add_argument("counts", nargs="+", type=float, help="training images per class")
    p.add_argument(
        "--beta",
        type=float,
        nargs="+",
        default=[0.9, 0.99, 0.999, 0.9999],
        help="one column pair per beta (default 0.9 0.99 0.999 0.9999)",
    )
    p.set_defaults(func=_cmd_weights)


def _add_demo_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="offline demo: long-tailed digits, softmax vs class-balanced focal"
    )
    p.add_argument(
        "--out",
        default="runs/demo",
        help="a new or empty folder, or an earlier demo's (default runs/demo)",
    )
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default 60)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per loss (default 3)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in --out")
    bool_flag(p, "progress", "progress bars (default: yes)")
    p.set_defaults(func=_cmd_demo)


def _add_presets_parser(sub) -> None:
    p = sub.add_parser(
        "presets",
        help="list the bundled presets (train --config NAME, sweep --config NAME)",
        description="The paper's recipes and sweep grids shipped with the package, one line "
        "each: the name --config takes and what it reproduces.",
    )
    p.set_defaults(func=_cmd_presets)


def _cmd_presets(args) -> int:
    kinds: tuple[tuple[Kind, str], ...] = (
        ("train", "train --config NAME"),
        ("sweep", "sweep --config NAME"),
    )
    for kind, command in kinds:
        names = preset_names(kind)
        print(f"{command}:")
        width = max(map(len, names))
        for name in names:
            path = preset_path(name, kind)  # never None: a listed preset
            print(f"  {name:<{width}}  {describe(path) if path else ''}")
    return 0


def _add_plot_parser(sub) -> None:
    p = sub.add_parser("plot", help="plot effective numbers, or one or several runs side by side")
    p.add_argument("what", choices=["effective-number", "run"])
    p.add_argument(
        "--run",
        nargs="+",
        help="run folder(s) (for 'run'); several: per-class accuracy and error curves side by side",
    )
    p.add_argument("--output", required=True, help="PNG file (for 'run': a folder)")
    p.add_argument(
        "--beta",
        type=float,
        nargs="+",
        help="effective-number: one curve per beta (default 0.9 0.99 0.999 0.9999)",
    )
    p.add_argument(
        "--max-samples", type=int, help="effective-number: the largest n drawn (default 10000)"
    )
    p.set_defaults(func=_cmd_plot)


def _list_arguments(g) -> None:
    """``--train-list`` / ``--val-list`` / ``--test-list`` of ``prepare`` (list datasets)."""
    for split in ("train", "val", "test"):
        g.add_argument(
            f"--{split}-list",
            help=f"list datasets: the {split} list file, one 'relative/path label' per line",
        )


def _add_decouple_parser(sub) -> None:
    """``decouple RUN --method crt|tau_norm|lws --out OUT`` (Kang et al., ICLR 2020)."""
    p = sub.add_parser(
        "decouple",
        help="stage two on a finished run: classifier re-training (crt), tau-normalisation, LWS",
    )
    p.add_argument("run", help="a finished run folder (stage one)")
    p.add_argument("--method", required=True, help="crt, tau_norm or lws")
    p.add_argument("--out", required=True, help="folder for the stage-two run")
    p.add_argument(
        "--epochs",
        type=int,
        help=f"crt / lws epochs (default: {DECOUPLE_EPOCHS_HELP}, as the release)",
    )
    p.add_argument("--batch-size", type=int, help="crt / lws (default: the run's)")
    p.add_argument(
        "--lr",
        type=float,
        help="crt / lws start of the cosine schedule (default: 0.2 on ImageNet-LT and "
        "iNaturalist 2018, 0.1 on Places-LT, as the release; the run's elsewhere)",
    )
    p.add_argument("--weight-decay", type=float, help="crt / lws (default: the run's)")
    p.add_argument(
        "--loss", default="softmax", help="crt / lws loss: softmax (default), sigmoid, focal, ..."
    )
    p.add_argument(
        "--beta",
        type=float,
        default=0.0,
        help="crt / lws: class-balanced beta of that loss (default 0: unweighted)",
    )
    p.add_argument(
        "--gamma", type=float, default=1.0, help="crt / lws: focal gamma of that loss (default 1)"
    )
    p.add_argument(
        "--sampler",
        choices=DECOUPLE_SAMPLERS,
        help="crt / lws: class_aware (default: the release's, classes in turn, 4 images each), "
        "class_uniform (a class at random, then an image) or shuffle",
    )
    p.add_argument(
        "--backbone-bn",
        choices=DECOUPLE_BN_MODES,
        help="crt / lws: the backbone's batch norm while stage two trains: eval (default: "
        "statistics fixed, backbone bit-identical) or train (the release's)",
    )
    p.add_argument(
        "--taus",
        type=float,
        nargs="+",
        help="tau_norm: the grid searched on the val split (default 0, 0.1, ..., 2)",
    )
    p.add_argument("--tau", type=float, help="tau_norm: this tau, no search")
    p.add_argument(
        "--tau-bias",
        choices=("keep", "drop"),
        help="tau_norm: keep the classifier's bias (default: tau 0 is the run's classifier) "
        "or drop it, as Kang et al.'s release does",
    )
    add_config_flag(p, "device", default=config_default("device"))
    p.add_argument("--num-workers", type=int, help="image-file datasets (default: the run's)")
    p.add_argument("--overwrite", action="store_true", help="replace a run in --out")
    add_run_safety_arguments(p, train=False)
    p.set_defaults(func=_cmd_decouple)


# ---------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------


def _train_config(args: argparse.Namespace):
    names = {f for f in TrainConfig.__dataclass_fields__}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if "loss_options" in overrides:  # [(key, value), ...] from repeated --loss-option
        overrides["loss_options"] = dict(overrides["loss_options"])
    return config_from_sources(args.config, overrides)


def _cmd_decouple(args) -> int:
    names = DecoupleOptions.__dataclass_fields__
    options = DecoupleOptions(
        **{k: v for k, v in vars(args).items() if k in names and v is not None}
    )
    decouple(args.run, options, log=_info)
    return 0


def _cmd_train(args) -> int:
    cfg = _train_config(args)
    warn_test_is_train(cfg)
    for name in ("accept_data_change", "fallback_checkpoint"):
        if getattr(args, name) and not cfg.resume:
            raise ValueError(f"{flag(name)} acts on --resume only: expected --resume with it")
    if cfg.train_list or cfg.val_list or cfg.test_list:  # list datasets: as prepared?
        check_prepared_lists(
            cfg.dataset,
            cfg.data_dir,
            {"train": cfg.train_list, "val": cfg.val_list, "test": cfg.test_list},
        )
    metrics = train(
        cfg,
        log=_info,
        accept_data_change=args.accept_data_change,
        fallback_checkpoint=args.fallback_checkpoint,
    )
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 alone reports
        return 0
    if "error_percent" in metrics:
        test = f"error {metrics['error_percent']:.2f}% (accuracy {metrics['accuracy']:.4f})"
    else:  # --no-evaluate-test: the validation set only
        test = f"validation balanced accuracy {metrics['val_balanced_accuracy']:.4f}"
    _info(f"final: {test} after {count(metrics['epoch'], 'epoch')}; results in {cfg.out}")
    return 0


#: the settings of ``make-lt`` (TrainConfig keys)
_MAKE_LT_KEYS: tuple[str, ...]
_MAKE_LT_KEYS = ("dataset", "data_dir", "train_data", "test_data", "imbalance_factor")
_MAKE_LT_KEYS += ("profile", "seed", "download")


def _cmd_make_lt(args) -> int:
    settings = {k: getattr(args, k) for k in _MAKE_LT_KEYS}
    write_long_tailed_subset(args.output, plot=args.plot, log=_info, **settings)
    return 0


def _cmd_prepare(args) -> int:
    if args.dataset not in prepared.LARGE_DATASETS:
        raise ValueError(
            f"unknown dataset {args.dataset!r}: expected one of {', '.join(prepared.LARGE_DATASETS)}"
        )
    tick = time.perf_counter()
    out = prepared.prepared_dir(args.dataset, args.data_dir)  # its writer lock (in a data folder)
    with lock_folder(out, "prepare", flag="--data-dir") if out.parent.is_dir() else _nothing():
        layout = prepare(
            args.dataset,
            args.data_dir,
            skip_missing=args.skip_missing,
            check_files=not args.no_check_files,
            log=_info,
            lists={"train": args.train_list, "val": args.val_list, "test": args.test_list},
            allow_size_mismatch=args.allow_size_mismatch,
            resize=args.resize,
            workers=args.workers,
        )
    _info(
        f"{args.dataset}: {len(layout.train_samples)} training and {len(layout.val_samples)} "
        f"evaluation ({layout.eval_split}) images, "
        f"{layout.num_classes} classes ({layout.num_skipped} skipped) in {time.perf_counter() - tick:.1f} s; "
        f"written to {prepared.prepared_dir(args.dataset, args.data_dir)}"
    )
    return 0


def _cmd_weights(args) -> int:
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
    _check_plot_flags(args)
    if args.what == "run":
        plot_runs(args.run, args.output, log=_info)
        return 0
    from . import plots  # plotting

    given = {"betas": args.beta, "max_samples": args.max_samples}
    path = plots.plot_effective_number(
        args.output, **{k: v for k, v in given.items() if v is not None}
    )
    _info(f"wrote {path}")
    return 0


def _check_plot_flags(args) -> None:
    """Refuse the flags of the other plot (ignored otherwise)."""
    own = {"effective-number": ("beta", "max_samples"), "run": ("run",)}
    for what, names in own.items():
        for name in names:
            if what != args.what and getattr(args, name) is not None:
                raise ValueError(f"{flag(name)} applies to plot {what}, not {args.what}")
    if args.what == "run" and not args.run:
        raise ValueError("plot run needs --run RUN_FOLDER [RUN_FOLDER ...]")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"classbalanced: warning: {message}", file=sys.stderr if file is None else file)


def _raised_by_a_check(exc: BaseException) -> bool:
    """Whether ``exc`` came from an explicit ``raise`` in classbalanced's code (a validation
    of an input), rather than from Python or a library failing inside our code (a bug)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    filename = tb.tb_frame.f_code.co_filename
    if not Path(filename).resolve().is_relative_to(Path(__file__).resolve().parent):
        return False
    return linecache.getline(filename, tb.tb_lineno).strip().startswith("raise")


def _internal_error(exc: BaseException) -> int:
    """An unexpected exception: one short line, the full traceback in a temporary file."""
    text = "".join(traceback.format_exception(exc))
    summary = " ".join(str(exc).split())[:200]
    try:
        with tempfile.NamedTemporaryFile(
            "w", prefix="classbalanced-traceback-", suffix=".txt", delete=False
        ) as file:
            file.write(text)
        where = f"full traceback in {file.name}"
    except OSError:  # no room even for that: print it
        print(text, file=sys.stderr, end="")
        where = "traceback above"
    print(
        f"classbalanced: internal error (a bug, please report it): {type(exc).__name__}: "
        f"{summary} ({where})",
        file=sys.stderr,
    )
    return EXIT_INTERNAL


#: the longest error line printed (values are cut where they are echoed; this is the backstop)
MAX_MESSAGE = 2000


def _usage_error(exc: BaseException) -> int:
    message = " ".join(str(exc).split()) or type(exc).__name__
    if len(message) > MAX_MESSAGE:
        message = f"{message[:MAX_MESSAGE]}... ({len(message)} characters)"
    print(f"classbalanced: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; bad input ends as one line and exit 2, a bug as one line
    naming a file with the traceback and exit 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning  # one line, without the source line
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
    except (ValueError, OSError) as exc:  # bad values, missing or unreadable files
        return _usage_error(exc)
    except TypeError as exc:  # a check of an argument's type, or else a bug
        return _usage_error(exc) if _raised_by_a_check(exc) else _internal_error(exc)
    except Exception as exc:
        return _internal_error(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
