"""The ``train`` command's flags, generated from :class:`~classbalanced.config.TrainConfig`,
and the argument types the commands share.

Each field gives one flag: ``--`` plus the key with dashes (or the field's ``flag``), its
help text (with the registries' names filled in), its group, and a type from its
annotation: ``bool`` fields get ``--x/--no-x`` (a key named ``no_x``: ``--no-x/--x``),
``Literal`` fields their choices, list fields several values, dict fields repeated
``KEY=NUMBER``. Every default is ``None``: only the flags a user gives override the config
file. :mod:`classbalanced.cli` builds its parsers with these.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing

from .config import GROUPS, TrainConfig, field_types
from .data.registry import available_datasets
from .losses import available_losses, loss_options
from .models.registry import available_models

__all__ = [
    "EXIT_USAGE",
    "NegativeFlag",
    "add_config_arguments",
    "add_config_flag",
    "add_run_safety_arguments",
    "bool_flag",
    "config_default",
    "flag",
    "flag_kwargs",
    "help_names",
    "parse_key_value",
    "parse_number_tau",
    "parse_positive_seconds",
    "parse_tau",
]

#: the exit status of a usage error (bad input): one line on stderr
EXIT_USAGE = 2


def bool_flag(parser, name: str, help: str) -> None:
    parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None, help=help)


def parse_key_value(text: str) -> tuple[str, float]:
    """``KEY=NUMBER`` (a ``--loss-option``) -> ``(key, number)``."""
    key, sep, value = text.partition("=")
    try:
        if not sep or not key:
            raise ValueError
        return key.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected KEY=NUMBER, got {text!r}") from None


def flag(name: str) -> str:
    """The command-line flag of argument or config key ``name``: ``--imbalance-factor``."""
    return "--" + name.replace("_", "-")


def parse_positive_seconds(text: str) -> float:
    """A positive, finite number of seconds (``--stale-after``)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def help_names() -> dict[str, str]:
    """The registries' names, for the ``{datasets}``, ``{models}``, ... of the fields' help."""
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


def flag_kwargs(f, tp) -> dict:
    """argparse keywords for config field ``f`` of type ``tp`` (every default None: only
    the flags a user gives override the config file)."""
    if f.metadata.get("action"):
        return {"action": f.metadata["action"], "default": None}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        (tp,) = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        negative = f.name.startswith("no_")
        return {
            "action": NegativeFlag if negative else argparse.BooleanOptionalAction,
            "default": None,
        }
    if origin is typing.Literal:
        return {"choices": args}
    if origin is list:
        return {"type": args[0], "nargs": "+"}
    if origin is dict:
        return {"type": parse_key_value, "action": "append", "metavar": f.metadata.get("metavar")}
    return {"type": tp}


class NegativeFlag(argparse.Action):
    """``--no-X`` (true) / ``--X`` (false) for a yes/no key already named ``no_X``, where
    argparse's own pair would read ``--no-X`` / ``--no-no-X``."""

    def __init__(self, option_strings, dest, default=None, help=None):
        (flag,) = option_strings
        super().__init__([flag, "--" + flag[len("--no-") :]], dest, 0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, option_string == self.option_strings[0])

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


def config_default(name: str):
    return TrainConfig.__dataclass_fields__[name].default


def add_config_flag(parser, name: str, **overrides) -> None:
    """The flag of config key ``name`` (type, choices and help from its field)."""
    f = TrainConfig.__dataclass_fields__[name]
    kwargs = flag_kwargs(f, field_types()[name])
    kwargs.update(overrides)
    spelled = f.metadata.get("flag", flag(name))
    parser.add_argument(
        spelled, dest=name, help=f.metadata["help"].format(**help_names()), **kwargs
    )
    if kwargs.get("action") is NegativeFlag:  # the spelling argparse gave it before, unlisted
        legacy = "--no-" + spelled[2:]
        parser.add_argument(
            legacy, dest=name, action="store_false", default=None, help=argparse.SUPPRESS
        )


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """One flag per :class:`~classbalanced.config.TrainConfig` field, generated from its
    type and metadata (help, group), grouped as the fields are."""
    groups = {key: p.add_argument_group(title) for key, title in GROUPS.items()}
    for f in dataclasses.fields(TrainConfig):
        add_config_flag(groups[f.metadata["group"]], f.name)
    p.add_argument(
        "--config",
        help="TOML or YAML file of settings, or a bundled preset's name (classbalanced "
        "presets); flags override it",
    )


def parse_tau(text: str) -> float | str:
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


def parse_number_tau(text: str) -> float:
    value = parse_tau(text)
    if isinstance(value, str):  # auto
        raise argparse.ArgumentTypeError("expected a number >= 0 (auto is for evaluate)")
    return value


def add_run_safety_arguments(p: argparse.ArgumentParser, *, train: bool) -> None:
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
