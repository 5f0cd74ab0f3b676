"""Command line: ``classbalanced <command>`` (also ``python -m classbalanced``).

Argument parsing, subcommands and one-line errors; the work happens in the
library. Every user mistake ends as one line ``classbalanced: error: <what>``
(``classbalanced COMMAND: error: ...`` for malformed flags) on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from collections.abc import Sequence
from contextlib import nullcontext as _nothing
from pathlib import Path

from . import __version__
from ._console import count
from ._console import info as _info
from .locking import lock_folder

__all__ = ["main", "build_parser"]

EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _bool_flag(parser, name: str, help: str) -> None:
    parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None, help=help)


def _key_value(text: str) -> tuple[str, float]:
    """``KEY=NUMBER`` (a ``--loss-option``) -> ``(key, number)``."""
    key, sep, value = text.partition("=")
    try:
        if not sep or not key:
            raise ValueError
        return key.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected KEY=NUMBER, got {text!r}") from None


def _flag(name: str) -> str:
    """The command-line flag of argument or config key ``name``: ``--imbalance-factor``."""
    return "--" + name.replace("_", "-")


def _positive_seconds(text: str) -> float:
    """A positive, finite number of seconds (``--stale-after``)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _help_names() -> dict[str, str]:
    """The registries' names, for the ``{datasets}``, ``{models}``, ... of the fields' help."""
    from .data.registry import available_datasets
    from .losses import available_losses, loss_options
    from .models.registry import available_models

    options = [
        f"{name}: " + ", ".join(f"{k}={v:g}" for k, v in loss_options(name).items())
        for name in available_losses()
        if loss_options(name)
    ]
    return {
        "datasets": ", ".join(available_datasets()),
        "models": ", ".join(available_models()),
        "losses": ", ".join(available_losses()),
        "loss_options": "; ".join(options) or "none",
    }


def _flag_kwargs(f, tp) -> dict:
    """argparse keywords for config field ``f`` of type ``tp`` (every default None: only
    the flags a user gives override the config file)."""
    import types
    import typing

    if f.metadata.get("action"):
        return {"action": f.metadata["action"], "default": None}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        (tp,) = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        negative = f.name.startswith("no_")
        return {
            "action": _NegativeFlag if negative else argparse.BooleanOptionalAction,
            "default": None,
        }
    if origin is typing.Literal:
        return {"choices": args}
    if origin is list:
        return {"type": args[0], "nargs": "+"}
    if origin is dict:
        return {"type": _key_value, "action": "append", "metavar": f.metadata.get("metavar")}
    return {"type": tp}


class _NegativeFlag(argparse.Action):
    """``--no-X`` (true) / ``--X`` (false) for a yes/no key already named ``no_X``, where
    argparse's own pair would read ``--no-X`` / ``--no-no-X``."""

    def __init__(self, option_strings, dest, default=None, help=None):
        (flag,) = option_strings
        super().__init__([flag, "--" + flag[len("--no-") :]], dest, 0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, option_string == self.option_strings[0])

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


def _config_default(name: str):
    from .config import TrainConfig

    return TrainConfig.__dataclass_fields__[name].default


def _add_config_flag(parser, name: str, **overrides) -> None:
    """The flag of config key ``name`` (type, choices and help from its field)."""
    from .config import TrainConfig, field_types

    f = TrainConfig.__dataclass_fields__[name]
    kwargs = _flag_kwargs(f, field_types()[name])
    kwargs.update(overrides)
    flag = f.metadata.get("flag", _flag(name))
    parser.add_argument(flag, dest=name, help=f.metadata["help"].format(**_help_names()), **kwargs)
    if kwargs.get("action") is _NegativeFlag:  # the spelling argparse gave it before, unlisted
        legacy = "--no-" + flag[2:]
        parser.add_argument(
            legacy, dest=name, action="store_false", default=None, help=argparse.SUPPRESS
        )


def _add_config_arguments(p: argparse.ArgumentParser) -> None:
    """One flag per :class:`~classbalanced.config.TrainConfig` field, generated from its
    type and metadata (help, group), grouped as the fields are."""
    import dataclasses

    from .config import GROUPS, TrainConfig

    groups = {key: p.add_argument_group(title) for key, title in GROUPS.items()}
    for f in dataclasses.fields(TrainConfig):
        _add_config_flag(groups[f.metadata["group"]], f.name)
    p.add_argument(
        "--config",
        help="TOML or YAML file of settings, or a bundled preset's name (classbalanced "
        "presets); flags override it",
    )


def _add_run_safety_arguments(p: argparse.ArgumentParser, *, train: bool) -> None:
    """Permissions for one command (not settings of the run, so not in TrainConfig)."""
    p.add_argument(
        "--accept-data-change",
        action="store_true",
        help="use the data even if it changed since the run was trained (its fingerprint differs)",
    )
    if train:
        p.add_argument(
            "--fallback-checkpoint",
            action="store_true",
            help="--resume from the newest valid checkpoint when the newest one is corrupt",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="classbalanced",
        description="Class-Balanced Loss: train and evaluate on long-tailed data.",
    )
    parser.add_argument("--version", action="version", version=f"classbalanced {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add_train_parser(sub)
    _add_evaluate_parser(sub)
    _add_predict_parser(sub)
    _add_export_parser(sub)
    _add_make_lt_parser(sub)
    _add_prepare_parser(sub)
    _add_decouple_parser(sub)
    _add_weights_parser(sub)
    _add_demo_parser(sub)
    _add_plot_parser(sub)
    _add_presets_parser(sub)

    _add_sweep_parser(sub)
    _add_report_parser(sub)
    _add_submit_parser(sub)
    _add_tune_parser(sub)
    return parser


def _add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train and evaluate a classifier")
    _add_config_arguments(p)
    _add_run_safety_arguments(p, train=True)
    p.set_defaults(func=_cmd_train)


def _add_evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a run's checkpoint on a test set")
    p.add_argument("run", help="run folder (or a checkpoint file inside one)")
    p.add_argument(
        "--test-data", help="evaluate on this .npz / class folder instead of the run's test set"
    )
    _add_config_flag(p, "device", default=_config_default("device"))
    p.add_argument("--output", help="also write the metrics to this JSON file")
    p.add_argument(
        "--adjust-tau",
        type=_tau,
        default=0.0,
        metavar="T|auto",
        help="post-hoc logit adjustment: subtract T * log(training prior) from the logits; "
        "auto: T chosen on --val-data (or the run's validation split) over 0..2",
    )
    p.add_argument("--val-data", help="validation .npz / class folder for --adjust-tau auto")
    _add_run_safety_arguments(p, train=False)
    p.set_defaults(func=_cmd_evaluate)


def _tau(text: str) -> float | str:
    """``--adjust-tau``: a finite number >= 0, or ``auto`` (evaluate)."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or auto, got {text!r}") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _number_tau(text: str) -> float:
    value = _tau(text)
    if isinstance(value, str):  # auto
        raise argparse.ArgumentTypeError("expected a number >= 0 (auto is for evaluate)")
    return value


def _add_predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="predict images with a trained run (CSV / JSONL rows)")
    p.add_argument("run", help="run folder, a checkpoint in it, or an exported .safetensors")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, .npz files")
    p.add_argument("--top-k", type=int, help="classes per image (default 5, or all when fewer)")
    p.add_argument(
        "--adjust-tau",
        type=_number_tau,
        default=0.0,
        metavar="T",
        help="post-hoc logit adjustment T (default 0: none)",
    )
    p.add_argument("--batch-size", type=int, help="default: the run's evaluation batch size")
    p.add_argument("--output", help="FILE.csv or FILE.jsonl (default: CSV on stdout)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    _add_config_flag(p, "device", default="cpu")
    p.set_defaults(func=_cmd_predict)


def _add_export_parser(sub) -> None:
    from .use.export import EXPORT_FORMATS

    p = sub.add_parser("export", help="export a trained run: TorchScript, ONNX or safetensors")
    p.add_argument("run", help="run folder (or a checkpoint file inside one)")
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    p.add_argument("--output", required=True, help="the file to write")
    p.add_argument(
        "--adjust-tau",
        type=_number_tau,
        default=0.0,
        metavar="T",
        help="include post-hoc logit adjustment T in the graph",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.set_defaults(func=_cmd_export)


def _cmd_predict(args) -> int:
    from .use import load_run, predict_files

    classifier = load_run(args.run, device=args.device)
    result = predict_files(
        classifier,
        args.inputs,
        output=args.output,
        top_k=args.top_k,
        adjust_tau=args.adjust_tau,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        log=_info,
    )
    if result["metrics"] is not None:
        keys = ("accuracy", "balanced_accuracy", "macro_f1", "ece", "num_test_images")
        _info(json.dumps({k: result["metrics"][k] for k in keys}, indent=2))
    if args.output:
        _info(f"{result['images']} predictions in {args.output}")
    return 0


def _cmd_export(args) -> int:
    from .use import export_model, load_run

    written = export_model(
        load_run(args.run),
        args.format,
        args.output,
        adjust_tau=args.adjust_tau,
        overwrite=args.overwrite,
    )
    _info(f"wrote {', '.join(map(str, written))}")
    return 0


def _add_make_lt_parser(sub) -> None:
    p = sub.add_parser(
        "make-lt", help="write a long-tailed subset (indices and counts) without training"
    )
    for name in ("dataset", "data_dir", "train_data", "test_data", "profile", "seed"):
        _add_config_flag(p, name, default=_config_default(name))
    p.add_argument(
        "--imbalance-factor", type=float, default=100.0, help="n_max / n_min >= 1 (default 100)"
    )
    p.add_argument(
        "--output", required=True, help="JSON file for indices and counts (.npz: also the images)"
    )
    p.add_argument("--plot", help="also write the class distribution as this PNG")
    _bool_flag(p, "download", "download missing CIFAR archives (default: yes)")
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
    _bool_flag(p, "progress", "progress bars (default: yes)")
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
    from .presets import Kind, describe, preset_names, preset_path

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
    from .decouple.options import BACKBONE_BN_MODES as DECOUPLE_BN_MODES
    from .decouple.options import EPOCHS_HELP as DECOUPLE_EPOCHS_HELP
    from .decouple.options import SAMPLERS as DECOUPLE_SAMPLERS

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
    _add_config_flag(p, "device", default=_config_default("device"))
    p.add_argument("--num-workers", type=int, help="image-file datasets (default: the run's)")
    p.add_argument("--overwrite", action="store_true", help="replace a run in --out")
    _add_run_safety_arguments(p, train=False)
    p.set_defaults(func=_cmd_decouple)


# ---------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------


def _train_config(args: argparse.Namespace):
    from .config import TrainConfig, config_from_sources

    names = {f for f in TrainConfig.__dataclass_fields__}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if "loss_options" in overrides:  # [(key, value), ...] from repeated --loss-option
        overrides["loss_options"] = dict(overrides["loss_options"])
    return config_from_sources(args.config, overrides)


def _cmd_decouple(args) -> int:
    from .decouple import DecoupleOptions, decouple

    names = DecoupleOptions.__dataclass_fields__
    options = DecoupleOptions(
        **{k: v for k, v in vars(args).items() if k in names and v is not None}
    )
    decouple(args.run, options, log=_info)
    return 0


def _cmd_train(args) -> int:
    from .config import warn_test_is_train
    from .engine.trainer import train

    cfg = _train_config(args)
    warn_test_is_train(cfg)
    for name in ("accept_data_change", "fallback_checkpoint"):
        if getattr(args, name) and not cfg.resume:
            raise ValueError(f"{_flag(name)} acts on --resume only: expected --resume with it")
    if cfg.train_list or cfg.val_list or cfg.test_list:  # list datasets: as prepared?
        from .data.lists import check_prepared_lists

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


def _cmd_evaluate(args) -> int:
    run = Path(args.run)
    folder = run if run.is_dir() else run.parent.parent  # RUN/checkpoints/FILE
    inputs = [*_run_files(folder), args.test_data, args.val_data]
    _refuse_overwriting_inputs({"--output": args.output}, inputs)
    into = Path(args.output).parent if args.output else None  # a write into a run: its lock
    with _lock_if_run(into, "evaluate --output", "--output"):
        return _evaluate_and_write(args)


def _lock_if_run(folder: Path | None, command: str, flag: str):
    """The writer lock of ``folder`` when it is a run folder (else nothing to lock)."""
    from .engine.run_folder import MANIFEST, lock_run

    if folder is not None and (folder / MANIFEST).is_file():
        return lock_run(folder, command, flag=flag)
    return _nothing()


def _evaluate_and_write(args) -> int:
    from .use import evaluate_adjusted

    metrics = evaluate_adjusted(
        args.run,
        args.adjust_tau,
        val_data=args.val_data,
        test_data=args.test_data,
        device=args.device,
        accept_data_change=args.accept_data_change,
    )
    keys = (
        "accuracy",
        "error_percent",
        "top5_error_percent",
        "balanced_accuracy",
        "macro_f1",
        "ece",
        "adjust_tau",
        "many_shot_accuracy",
        "medium_shot_accuracy",
        "few_shot_accuracy",
    )
    print(json.dumps({k: metrics.get(k) for k in keys if k in metrics}, indent=2))
    if args.output:
        from .files import atomic_write_json

        atomic_write_json(args.output, metrics)
    return 0


def _cmd_make_lt(args) -> int:
    from .config import TrainConfig
    from .engine.trainer import prepare_data
    from .files import atomic_write_json

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
    from .data.cifar import ARCHIVES

    cifar_files = [
        Path(cfg.data_dir) / n for a in ARCHIVES.values() for n in (a.filename, a.folder)
    ]
    _refuse_overwriting_inputs(
        {"--output": args.output, "--plot": args.plot},
        [cfg.train_data, cfg.test_data, *cifar_files],
    )
    data = prepare_data(cfg)
    output = Path(args.output)
    if output.suffix == ".npz":
        import numpy as np

        from .files import atomic_save

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

    from .data import prepared
    from .data.prepare import prepare

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

    _check_plot_flags(args)
    if args.what == "effective-number":
        given = {"betas": args.beta, "max_samples": args.max_samples}
        path = plots.plot_effective_number(
            args.output, **{k: v for k, v in given.items() if v is not None}
        )
        _info(f"wrote {path}")
        return 0
    runs = {}
    for folder in map(Path, args.run):
        name = folder.name if folder.name not in runs else str(folder)
        runs[name] = _run_for_plot(folder)
    counts = next(iter(runs.values()))[0]["train_counts"]
    if any(m["train_counts"] != counts for m, _ in runs.values()):
        raise ValueError(
            "the runs must share their training set: expected equal train_counts, got different ones"
        )
    names = ("class_distribution.png", "per_class_accuracy.png", "error_curve.png")
    _refuse_overwriting_inputs(
        {f"--output ({n})": str(Path(args.output) / n) for n in names},
        [f for run in args.run for f in _run_files(Path(run))],
    )
    out = Path(args.output)
    plots.plot_class_distribution(out / "class_distribution.png", counts)
    plots.plot_per_class_accuracy(
        out / "per_class_accuracy.png",
        {
            name: [math.nan if v is None else v for v in m["per_class_accuracy"]]  # no image
            for name, (m, _) in runs.items()
        },
        counts=counts,
    )
    curves = {
        name: ([h["epoch"] for h in hist], [h["error_percent"] for h in hist])
        for name, (_, hist) in runs.items()
        if len(hist) >= 2
    }
    written = list(names[:2])
    if curves:
        plots.plot_error_curves(out / "error_curve.png", curves)
        written.append(names[2])
    elif (out / names[2]).exists():  # not this plot's: say so rather than let it pass for one
        _info(f"no error curve (no run has two evaluations): {out / names[2]} is an older plot's")
    _info(f"wrote {', '.join(written)} to {out}")
    return 0


def _check_plot_flags(args) -> None:
    """Refuse the flags of the other plot (ignored otherwise) and a run named twice."""
    import os

    own = {"effective-number": ("beta", "max_samples"), "run": ("run",)}
    for what, names in own.items():
        for name in names:
            if what != args.what and getattr(args, name) is not None:
                raise ValueError(f"{_flag(name)} applies to plot {what}, not {args.what}")
    if args.what == "run" and not args.run:
        raise ValueError("plot run needs --run RUN_FOLDER [RUN_FOLDER ...]")
    seen = set()
    for folder in args.run or ():
        if os.path.realpath(folder) in seen:
            raise ValueError(f"--run names the run {folder} twice: expected different runs")
        seen.add(os.path.realpath(folder))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None


def _run_for_plot(folder: Path) -> tuple[dict, list]:
    """A run folder's metrics and history, checked to hold what ``plot run`` draws."""
    metrics_path = folder / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"no metrics.json in {folder}: is it a finished run folder?")
    metrics = _read_json(metrics_path)
    for key in ("train_counts", "per_class_accuracy"):
        if not isinstance(metrics, dict) or not isinstance(metrics.get(key), list):
            raise ValueError(
                f"{metrics_path} holds no {key} list: expected the metrics.json of a training "
                "run (a file written by `evaluate --output` is not one)"
            )
    history_path = folder / "history.json"
    history = _read_json(history_path) if history_path.is_file() else []
    if not isinstance(history, list) or not all(
        isinstance(h, dict) and isinstance(h.get("epoch"), int) and "error_percent" in h
        for h in history
    ):
        raise ValueError(
            f"{history_path} is not a run history: expected a list of entries with epoch "
            "and error_percent"
        )
    return metrics, history


def _run_files(folder: Path) -> list[Path]:
    """The files and folders a run wrote in ``folder`` (inputs of evaluate and plot run)."""
    from .engine.run_folder import written_files

    return written_files(folder)


def _refuse_overwriting_inputs(outputs: dict[str, str | None], inputs) -> None:
    """ValueError before anything is written when an output file is an existing folder,
    one of the command's inputs (files or folders), an existing file inside an input folder,
    or the path of another output. Paths are compared after resolving links, ``..`` and ``.``."""
    import os

    given = [str(p) for p in inputs if p]
    claimed: dict[str, str] = {}
    for flag, path in outputs.items():
        if not path:
            continue
        if os.path.isdir(path):
            raise ValueError(f"{flag} {path} is a folder: expected a file path")
        parent = Path(path).parent
        while not parent.exists() and parent != parent.parent:  # nearest existing: a folder
            parent = parent.parent
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"{flag} {path}: {parent} is a file, not a folder")
        target = os.path.realpath(path)
        for source in given:
            real = os.path.realpath(source)
            inside = target.startswith(real.rstrip(os.sep) + os.sep) and os.path.exists(target)
            if target == real or inside:
                raise ValueError(
                    f"{flag} {path} would overwrite the input {source}: expected an output path "
                    "outside the command's inputs"
                )
        if target in claimed and claimed[target] != flag:
            raise ValueError(f"{flag} and {claimed[target]} name the same file {path}")
        claimed[target] = flag


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"classbalanced: warning: {message}", file=sys.stderr if file is None else file)


# ---------------------------------------------------------------------------
# sweep, report, submit (one self-contained block)
# ---------------------------------------------------------------------------


def _add_sweep_parser(sub) -> None:
    from .launch import LAUNCHER_REGISTRY, available_launchers

    p = sub.add_parser(
        "sweep",
        help="run a grid of training runs (resumable; local, Ray or SLURM), then results.csv "
        "and report.md",
        description="Expand a sweep file ([base] + [[grid]] blocks of lists) into runs; skip "
        "finished runs, resume unfinished ones, start the others. Several launchers may work "
        "on one sweep folder at once: each run is claimed.",
    )
    p.add_argument(
        "--config", help="sweep TOML file, or a bundled grid's name (classbalanced presets)"
    )
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
        choices=available_launchers(),
        default="local",
        help="where runs execute: "
        + ", ".join(f"{k} ({v['description']})" for k, v in LAUNCHER_REGISTRY.info.items()),
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
        "--max-runs",
        type=int,
        help="refuse a sweep file whose grid has more runs than this (default 10000)",
    )
    p.add_argument(
        "--stale-after",
        type=_positive_seconds,
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
        "--slurm-time", help="slurm: time limit per task, MINUTES or [D-]HH:MM:SS (default 60)"
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


#: the launcher flags of ``sweep`` (``None`` unless given)
_LAUNCH_FLAGS: tuple[str, ...]
_LAUNCH_FLAGS = ("jobs", "gpus_per_run", "cpus_per_run", "ray_address", "slurm_partition")
_LAUNCH_FLAGS += ("slurm_time", "slurm_array_parallelism", "slurm_option")


def _launch_options(args):
    from .launch import LaunchOptions, check_launch_flags
    from .launch.slurm import parse_slurm_options, parse_slurm_time

    given = {n: getattr(args, n) for n in _LAUNCH_FLAGS if getattr(args, n) is not None}
    check_launch_flags(args.launcher, given)
    options = LaunchOptions()
    for name, value in given.items():
        if name == "slurm_time":
            value = parse_slurm_time(value)
        elif name == "slurm_option":
            name, value = "slurm_options", parse_slurm_options(value)
        setattr(options, name, value)
    return options


def _check_status_flags(args) -> None:
    """``sweep --status`` reads a folder and starts nothing: refuse the flags it would ignore."""
    given = [
        n for n in ("config", "out", "max_runs", *_LAUNCH_FLAGS) if getattr(args, n) is not None
    ]
    given += [n for n in ("dry_run", "extend", "no_report") if getattr(args, n)]
    given += ["launcher"] if args.launcher != "local" else []
    if given:
        raise ValueError(
            f"--status takes no {_flag(given[0])}: it prints the state of a sweep folder and "
            "starts nothing"
        )


def _cmd_sweep(args) -> int:
    from .launch import make_launcher
    from .launch.sweep import run_sweep, sweep_status

    if args.status:
        _check_status_flags(args)
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
        **({"max_runs": args.max_runs} if args.max_runs is not None else {}),
    )
    return result.exit_code


def _add_report_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write report.md of a sweep folder: results vs the paper's Table 2 / Table 3",
        description="Tables of mean ± std last-epoch error over seeds against the published "
        "numbers, a beta x gamma heat map and error curves per column.",
    )
    p.add_argument(
        "sweep_dir",
        metavar="SWEEP_DIR",
        help="folder written by `classbalanced sweep`, or one holding `classbalanced decouple` "
        "outputs (compared with Kang et al., ICLR 2020)",
    )
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
    p.add_argument(
        "--slurm-time", default="60", help="time limit, MINUTES or [D-]HH:MM:SS (default 60)"
    )
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


def _add_tune_parser(sub) -> None:
    p = sub.add_parser(
        "tune",
        help="choose beta, gamma, the loss ... on a validation split (Optuna; local or Ray)",
        description="An Optuna study in --out: trials are run folders under OUT/trials trained "
        "on the training set less a validation split and judged on it (the test set is "
        "evaluated once, for the best trial); trial 0 is the base config with beta = 0. "
        "Re-running resumes the study; several tune processes may share one folder.",
    )
    p.add_argument("--config", help="base config (TOML or YAML) of every trial")
    p.add_argument("--out", help="the study's folder")
    p.add_argument(
        "--trials", type=int, help="the study's total number of trials, trial 0 included"
    )
    p.add_argument(
        "--search",
        nargs="+",
        metavar="KEY=DIST",
        help="uniform(a, b), loguniform(a, b), logit1m(a, b) (1 - x log-uniform: beta), "
        "int(a, b), choice(v1, v2, ...); e.g. 'beta=logit1m(0.9, 0.9999)' 'gamma=uniform(0, 2)'",
    )
    p.add_argument("--metric", default="val_balanced_accuracy", help="objective (default "
                   "val_balanced_accuracy; val_loss is minimised)")  # fmt: skip
    p.add_argument("--val-fraction", type=float, help="hold out this part of the training set")
    p.add_argument("--launcher", choices=("local", "ray"), default="local")
    p.add_argument("--jobs", type=int, default=1, help="trials at a time (default 1; local: "
                   "each trainer gets CPUs // jobs threads; ray: tasks at a time)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed (default 0)")
    p.add_argument("--pruner", choices=("median", "asha", "none"), default="median")
    p.add_argument(
        "--refit", action="store_true", help="train the best values on the full training set"
    )
    p.add_argument("--extend", action="store_true", help="continue a folder of another search")
    p.add_argument("--status", metavar="DIR", help="print the trials of a tune folder and exit")
    p.add_argument("--stale-after", type=_positive_seconds, default=120.0,
                   help="seconds without a heartbeat after which a trial is taken over")  # fmt: skip
    for name in ("gpus_per_run", "cpus_per_run", "ray_address"):
        p.add_argument(_flag(name), type={"gpus_per_run": float, "cpus_per_run": int}.get(name, str),
                       help="ray: as for sweep")  # fmt: skip
    p.set_defaults(func=_cmd_tune)


def _cmd_tune(args) -> int:
    from .tune import TuneOptions, run_tune, tune_status

    try:
        return _tune(args, TuneOptions, run_tune, tune_status)
    except ImportError as exc:
        if "classbalanced[tune]" not in str(exc):  # a bug, not a missing extra
            raise
        return _usage_error(exc)


def _tune(args, TuneOptions, run_tune, tune_status) -> int:
    from .launch import LaunchOptions

    if args.status:
        for line in tune_status(args.status, stale_after=args.stale_after):
            print(line)
        return 0
    missing = [f for f in ("out", "trials", "search") if getattr(args, f) is None]
    if missing:
        raise ValueError(f"tune needs {_flag(missing[0])} (or --status DIR)")
    launch = LaunchOptions()
    for name in ("gpus_per_run", "cpus_per_run", "ray_address"):
        if getattr(args, name) is not None:
            if args.launcher != "ray":
                raise ValueError(f"{_flag(name)} does not apply to --launcher {args.launcher}")
            setattr(launch, name, getattr(args, name))
    options = TuneOptions(
        out=args.out, trials=args.trials, search=args.search, config=args.config,
        metric=args.metric, val_fraction=args.val_fraction, launcher=args.launcher,
        jobs=args.jobs, seed=args.seed, pruner=args.pruner, refit=args.refit,
        extend=args.extend, stale_after=args.stale_after, launch=launch,
    )  # fmt: skip
    best = run_tune(options, log=_info)
    if best is not None:
        test = best["test"]
        _info(
            f"best: {best['name']} ({best['metric']} {best['value']:.4f}; test accuracy "
            f"{test['accuracy']:.4f}, balanced {test['mean_class_accuracy']:.4f}); "
            f"{args.out}/report.md"
        )
    return 0


def _raised_by_a_check(exc: BaseException) -> bool:
    """Whether ``exc`` came from an explicit ``raise`` in classbalanced's code (a validation
    of an input), rather than from Python or a library failing inside our code (a bug)."""
    import linecache

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
    import tempfile
    import traceback

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
    from .engine.trainer import NonFiniteLoss, TrainingInterrupted

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
