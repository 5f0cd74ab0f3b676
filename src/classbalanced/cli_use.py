"""The commands over a trained run: ``evaluate`` (metrics, post-hoc adjustment),
``predict`` (CSV / JSONL rows) and ``export`` (TorchScript, ONNX, safetensors): their
parsers and the few lines that call :mod:`~classbalanced.use`.

:mod:`classbalanced.cli` adds these parsers to its own.
"""

from __future__ import annotations

import json
from pathlib import Path

from ._console import info as _info
from .cli_flags import (
    add_config_flag,
    add_run_safety_arguments,
    config_default,
    parse_number_tau,
    parse_tau,
)
from .engine.run_folder import lock_if_run, written_files
from .files import atomic_write_json, refuse_overwriting_inputs
from .use import evaluate_adjusted, export_model, load_run, predict_files
from .use.export import EXPORT_FORMATS

__all__ = ["add_evaluate_parser", "add_export_parser", "add_predict_parser"]


def add_evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a run's checkpoint on a test set")
    p.add_argument("run", help="run folder (or a checkpoint file inside one)")
    p.add_argument(
        "--test-data", help="evaluate on this .npz / class folder instead of the run's test set"
    )
    add_config_flag(p, "device", default=config_default("device"))
    p.add_argument("--output", help="also write the metrics to this JSON file")
    p.add_argument(
        "--adjust-tau",
        type=parse_tau,
        default=0.0,
        metavar="T|auto",
        help="post-hoc logit adjustment: subtract T * log(training prior) from the logits; "
        "auto: T chosen on --val-data (or the run's validation split) over 0..2",
    )
    p.add_argument("--val-data", help="validation .npz / class folder for --adjust-tau auto")
    add_run_safety_arguments(p, train=False)
    p.set_defaults(func=_cmd_evaluate)


def add_predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="predict images with a trained run (CSV / JSONL rows)")
    p.add_argument("run", help="run folder, a checkpoint in it, or an exported .safetensors")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, .npz files")
    p.add_argument("--top-k", type=int, help="classes per image (default 5, or all when fewer)")
    _add_number_tau(p, "post-hoc logit adjustment T (default 0: none)")
    p.add_argument("--batch-size", type=int, help="default: the run's evaluation batch size")
    p.add_argument("--output", help="FILE.csv or FILE.jsonl (default: CSV on stdout)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    add_config_flag(p, "device", default="cpu")
    p.set_defaults(func=_cmd_predict)


def add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="export a trained run: TorchScript, ONNX or safetensors")
    p.add_argument("run", help="run folder (or a checkpoint file inside one)")
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    p.add_argument("--output", required=True, help="the file to write")
    _add_number_tau(p, "include post-hoc logit adjustment T in the graph")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.set_defaults(func=_cmd_export)


def _add_number_tau(p, text: str) -> None:
    """``--adjust-tau T`` of predict and export: a number only (evaluate also takes auto)."""
    p.add_argument("--adjust-tau", type=parse_number_tau, default=0.0, metavar="T", help=text)


def _cmd_predict(args) -> int:
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
    written = export_model(
        load_run(args.run),
        args.format,
        args.output,
        adjust_tau=args.adjust_tau,
        overwrite=args.overwrite,
    )
    _info(f"wrote {', '.join(map(str, written))}")
    return 0


def _cmd_evaluate(args) -> int:
    run = Path(args.run)
    folder = run if run.is_dir() else run.parent.parent  # RUN/checkpoints/FILE
    inputs = [*written_files(folder), args.test_data, args.val_data]
    refuse_overwriting_inputs({"--output": args.output}, inputs)
    into = Path(args.output).parent if args.output else None  # a write into a run: its lock
    with lock_if_run(into, "evaluate --output", "--output"):
        return _evaluate_and_write(args)


def _evaluate_and_write(args) -> int:
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
        "num_test_images",
        "num_unreadable_test_images",
    )
    print(json.dumps({k: metrics.get(k) for k in keys if k in metrics}, indent=2))
    if args.output:
        atomic_write_json(args.output, metrics)
    return 0
