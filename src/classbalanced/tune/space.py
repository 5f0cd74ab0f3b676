"""The search space of ``classbalanced tune``: ``KEY=DIST`` items, parsed and checked.

Distributions (spaces inside the parentheses are optional):

* ``uniform(a, b)``: a real number in ``[a, b]``;
* ``loguniform(a, b)``: ``log x`` uniform, ``0 < a < b``;
* ``logit1m(a, b)``: ``beta`` with ``log(1 - beta)`` uniform over ``[log(1 - b), log(1 - a)]``,
  ``0 <= a < b < 1``: the scale on which beta matters (0.9, 0.99, 0.999 are equally far
  apart; the effective number ``(1 - beta^n) / (1 - beta)`` saturates at ``1 / (1 - beta)``);
* ``int(a, b)``: an integer in ``[a, b]``;
* ``choice(v1, v2, ...)``: one of the values (numbers, true / false, or names).

Keys are the :class:`~classbalanced.config.TrainConfig` settings of the model, loss and
optimisation groups that hold one value (``beta``, ``gamma``, ``loss``, ``lr``, ...).

>>> space = parse_search(["beta=logit1m(0.9, 0.9999)", "loss=choice(softmax,focal)"])
>>> space["beta"]
Dist(kind='logit1m', args=(0.9, 0.9999))
>>> space["loss"].args
('softmax', 'focal')
>>> parse_search(["beta=normal(0, 1)"])
Traceback (most recent call last):
...
ValueError: --search beta=normal(0, 1): unknown distribution 'normal'; expected KEY=DIST with DIST one of uniform(a, b), loguniform(a, b), logit1m(a, b), int(a, b), choice(v1, v2, ...)
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
import warnings
from dataclasses import dataclass
from typing import Any

from ..config import TrainConfig, field_types
from ..losses import loss_uses_gamma

__all__ = ["DISTRIBUTIONS", "Dist", "check_space", "parse_search", "searchable_keys", "suggest"]

#: the distributions and how each is written (the one list every message shows)
DISTRIBUTIONS = {
    "uniform": "uniform(a, b)",
    "loguniform": "loguniform(a, b)",
    "logit1m": "logit1m(a, b)",
    "int": "int(a, b)",
    "choice": "choice(v1, v2, ...)",
}
_FORMS = ", ".join(DISTRIBUTIONS.values())
_ITEM = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*([A-Za-z0-9_]+)\s*\((.*)\)\s*$", re.S)
_SEARCH_GROUPS = ("model", "loss", "optimisation")


@dataclass(frozen=True)
class Dist:
    """One distribution: ``kind`` (a key of :data:`DISTRIBUTIONS`) and its arguments."""

    kind: str
    args: tuple

    def text(self) -> str:
        """As written on the command line, canonically (``logit1m(0.9, 0.9999)``)."""
        return f"{self.kind}({', '.join(_word(a) for a in self.args)})"

    def corners(self) -> list:
        """The values a config must accept: both ends of a range, every choice."""
        return list(self.args)


def _word(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def searchable_keys() -> list[str]:
    """The config keys ``--search`` takes: one-valued settings of the model, loss and
    optimisation groups."""
    keys = []
    for f in dataclasses.fields(TrainConfig):
        tp = field_types()[f.name]
        inner = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        scalar = all(a in (int, float, str, bool) or typing.get_origin(a) is typing.Literal
                     for a in inner)  # fmt: skip
        if f.metadata.get("group") in _SEARCH_GROUPS and scalar:
            keys.append(f.name)
    return keys


def _value(text: str) -> Any:
    text = text.strip().strip("'\"")
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _numbers(item: str, kind: str, args: list, integer: bool) -> tuple:
    form = DISTRIBUTIONS[kind]
    if len(args) != 2 or not all(
        isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in args
    ):
        raise ValueError(f"--search {item}: expected {form} with two finite numbers, got {args}")
    a, b = args
    if integer and not all(isinstance(x, int) for x in args):
        raise ValueError(f"--search {item}: expected int(a, b) with two integers, got {args}")
    if not a < b if kind != "int" else not a <= b:
        raise ValueError(f"--search {item}: expected a < b in {form}, got {a} and {b}")
    if kind == "loguniform" and a <= 0:
        raise ValueError(f"--search {item}: expected 0 < a in loguniform(a, b), got {a}")
    if kind == "logit1m" and not (0 <= a and b < 1):
        raise ValueError(f"--search {item}: expected 0 <= a < b < 1 in logit1m(a, b), got {a}, {b}")
    return (a, b) if integer else (float(a), float(b))


def parse_item(item: str) -> tuple[str, Dist]:
    """``KEY=DIST`` -> ``(key, Dist)``; a one-line ValueError naming the item and the forms."""
    match = _ITEM.match(item)
    if match is None:
        raise ValueError(f"--search {item}: expected KEY=DIST with DIST one of {_FORMS}")
    key, kind, inner = match.group(1).replace("-", "_"), match.group(2), match.group(3)
    keys = searchable_keys()
    if key not in keys:
        raise ValueError(
            f"--search {item}: unknown key {key!r}; expected one of {', '.join(keys)} "
            f"(KEY=DIST with DIST one of {_FORMS})"
        )
    if kind not in DISTRIBUTIONS:
        raise ValueError(
            f"--search {item}: unknown distribution {kind!r}; expected KEY=DIST with DIST one "
            f"of {_FORMS}"
        )
    args = [_value(a) for a in inner.split(",")] if inner.strip() else []
    if kind == "choice":
        if not args or any(a == "" for a in args):
            raise ValueError(f"--search {item}: expected choice(v1, v2, ...) with values")
        if len(set(map(repr, args))) != len(args):
            raise ValueError(f"--search {item}: a value given twice in choice(...): {args}")
        dist = Dist(kind, tuple(args))
    else:
        dist = Dist(kind, _numbers(item, kind, args, kind == "int"))
    _check_kind(item, key, dist)
    return key, dist


def _check_kind(item: str, key: str, dist: Dist) -> None:
    tp = field_types()[key]
    inner = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    if dist.kind == "choice":
        return  # the values are checked against the config (check_space)
    numeric = {int} if dist.kind == "int" else {float}
    if not numeric & set(inner) and not (dist.kind == "int" and float in inner):
        raise ValueError(
            f"--search {item}: {key} is not a {'real' if float in numeric else 'integer'} "
            f"setting; expected choice(v1, v2, ...) or "
            f"{'int(a, b)' if int in inner else 'uniform(a, b) / loguniform(a, b)'}"
        )


def parse_search(items: list[str]) -> dict[str, Dist]:
    """``--search`` items -> ``{key: Dist}`` in the order given; a key twice is refused."""
    space: dict[str, Dist] = {}
    for item in items:
        key, dist = parse_item(item)
        if key in space:
            raise ValueError(f"--search {item}: key {key} given twice (expected it once)")
        space[key] = dist
    if not space:
        raise ValueError(f"--search: expected at least one KEY=DIST item ({_FORMS})")
    return space


def check_space(space: dict[str, Dist], base: dict[str, Any]) -> None:
    """Refuse a space the base config (its keys ``base``) contradicts: every corner of every
    distribution must make a valid config, and a searched gamma needs a loss that reads it."""

    for key, dist in space.items():
        for value in dist.corners():
            values = {**base, key: value}
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    TrainConfig.from_dict(values, source="the base config").resolved()
            except (ValueError, TypeError) as exc:
                raise ValueError(
                    f"--search {key}={dist.text()}: the base config refuses {key} = "
                    f"{_word(value)}: {exc}"
                ) from None
    if "gamma" in space:
        losses = space["loss"].args if "loss" in space else (base.get("loss", "softmax"),)
        if not any(loss_uses_gamma(str(loss)) for loss in losses):
            raise ValueError(
                f"--search gamma={space['gamma'].text()}: no loss of the search reads gamma "
                f"(loss: {', '.join(map(str, losses))}); expected a focal loss in the base config "
                "or in --search loss=choice(...)"
            )


def suggest(trial, space: dict[str, Dist]) -> dict[str, Any]:
    """The trial's values of the searched keys (Optuna's ``suggest_*``); ``logit1m`` is
    suggested as ``one_minus_KEY`` on a log scale."""
    values: dict[str, Any] = {}
    for key, dist in space.items():
        a, b = (dist.args + (None, None))[:2]
        if dist.kind == "uniform":
            values[key] = trial.suggest_float(key, a, b)
        elif dist.kind == "loguniform":
            values[key] = trial.suggest_float(key, a, b, log=True)
        elif dist.kind == "logit1m":
            values[key] = 1.0 - trial.suggest_float(f"one_minus_{key}", 1.0 - b, 1.0 - a, log=True)
        elif dist.kind == "int":
            values[key] = trial.suggest_int(key, a, b)
        else:
            values[key] = trial.suggest_categorical(key, list(dist.args))
    return values
