"""The paper's published numbers as data (``published.json``, shipped with the package).

Table 2 (ResNet-32 on long-tailed CIFAR-10/100, test error % for imbalance
factors 200/100/50/20/10/1), Table 3 (ResNet-50 on iNaturalist 2017/2018 and
ImageNet, top-1/top-5 error %), later work on CIFAR at imbalance factor 100
(CE-DRW, LDAM-DRW, logit-adjusted loss), and the decoupled classifiers of Kang et
al. (ICLR 2020) on ImageNet-LT, Places-LT and iNaturalist 2018 (top-1 accuracy % overall
and, where published, on many / medium / few-shot classes; :func:`published_decoupling`).

Method names: ``softmax``, ``sigmoid``, ``focal`` (with ``gamma``) for the
unweighted baselines (beta = 0), ``class_balanced`` for the paper's best
class-balanced loss of each column (its loss, beta and gamma come from
:func:`paper_cb_setting`), and ``ce_drw``, ``ldam_drw``, ``logit_adjusted`` for
the later work.

>>> published_error("cifar10", 100, "softmax")
29.64
>>> published_error("cifar100", 10, "focal", gamma=0.5)
44.3
>>> published_error("cifar10", 100, "class_balanced")
25.43
>>> paper_cb_setting("cifar10", 100)
{'loss': 'focal', 'beta': 0.9999, 'gamma': 1.0}
>>> published_error("inat2018", None, "class_balanced")
38.88
>>> published_error("cifar100", 100, "ldam_drw")
57.96
>>> print(published_error("digits", 10, "softmax"))
None
>>> published_decoupling("imagenet_lt", "resnext50", "crt")
{'all': 49.6, 'many': 61.8, 'medium': 46.2, 'few': 27.4}
"""

from __future__ import annotations

import copy
import functools
import json
import math
from importlib import resources
from typing import Any

__all__ = [
    "IMBALANCE_FACTORS",
    "BASELINE_METHODS",
    "LATER_METHODS",
    "FOCAL_GAMMAS",
    "published_data",
    "table2",
    "table3",
    "later_work",
    "published_error",
    "published_large",
    "paper_cb_setting",
    "normalize_dataset",
    "DECOUPLING_METHODS",
    "published_decoupling",
    "decoupling_tables",
    "decoupling_recipe",
]

#: columns of Table 2, in the paper's order
IMBALANCE_FACTORS = (200, 100, 50, 20, 10, 1)
#: gamma values of Table 2's focal-loss rows
FOCAL_GAMMAS = (0.5, 1.0, 2.0)
BASELINE_METHODS = ("softmax", "sigmoid", "focal")
CB_METHOD = "class_balanced"
LATER_METHODS = ("ce_drw", "ldam_drw", "logit_adjusted")
#: rows of the decoupling table: the stage-one classifier (``joint``), the nearest class
#: mean classifier (``ncm``, published only; not implemented here) and the stage-two
#: methods of :mod:`classbalanced.decouple`
DECOUPLING_METHODS = ("joint", "ncm", "crt", "tau_norm", "lws")
_ALIASES = {"cb": CB_METHOD, "class-balanced": CB_METHOD, "cb_focal": CB_METHOD}


@functools.lru_cache(maxsize=1)
def _load() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("published.json").read_text(encoding="utf-8")
    return json.loads(text)


def published_data() -> dict[str, Any]:
    """A copy of the whole ``published.json`` document."""
    return copy.deepcopy(_load())


def normalize_dataset(name: str) -> str:
    """``"CIFAR-10"`` -> ``"cifar10"``, ``"iNat_2018"`` -> ``"inat2018"``."""
    if not isinstance(name, str):
        raise TypeError(f"dataset must be a str, got {name!r}")
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


def _method(loss: str) -> str:
    if not isinstance(loss, str):
        raise TypeError(f"loss must be a str, got {loss!r}")
    method = _ALIASES.get(loss.lower(), loss.lower())
    known = (*BASELINE_METHODS, CB_METHOD, *LATER_METHODS)
    if method not in known:
        raise ValueError(f"unknown method {loss!r}: expected one of {', '.join(known)}")
    return method


def _if_index(imbalance_factor: float | None) -> int | None:
    if imbalance_factor is None:
        return None
    if isinstance(imbalance_factor, bool) or not isinstance(imbalance_factor, (int, float)):
        raise TypeError(f"imbalance_factor must be a number, got {imbalance_factor!r}")
    for i, value in enumerate(_load()["table2"]["imbalance_factors"]):
        if math.isclose(float(imbalance_factor), value):
            return i
    return None


def _focal_row(gamma: float | None) -> str | None:
    if gamma is None:
        raise ValueError("the focal rows of Table 2 need gamma (0.5, 1 or 2)")
    for value in FOCAL_GAMMAS:
        if math.isclose(float(gamma), value):
            return f"focal_g{value:g}"
    return None


def table2() -> list[dict[str, Any]]:
    """Every cell of Table 2 as a dict, in the paper's row then column order.

    Keys: ``dataset``, ``imbalance_factor``, ``method`` (softmax / sigmoid / focal /
    class_balanced), ``loss``, ``beta`` (0.0 for the baselines; None where the
    paper gives none, i.e. IF 1), ``gamma`` (None where the loss has none),
    ``error_percent``.

    >>> cells = table2()
    >>> len(cells), cells[0]["error_percent"], cells[-1]["loss"]
    (72, 34.32, 'sigmoid')
    """
    t2 = _load()["table2"]
    factors = t2["imbalance_factors"]
    cells = []
    for row, by_dataset in t2["rows"].items():
        for dataset, errors in by_dataset.items():
            for i, (factor, error) in enumerate(zip(factors, errors, strict=True)):
                if row == CB_METHOD:
                    setting = t2["class_balanced_setting"][dataset]
                    loss, beta, gamma = (setting[k][i] for k in ("loss", "beta", "gamma"))
                    method = CB_METHOD
                elif row.startswith("focal_g"):
                    loss, beta, gamma, method = "focal", 0.0, float(row[len("focal_g") :]), "focal"
                else:
                    loss, beta, gamma, method = row, 0.0, None, row
                cells.append(
                    {
                        "dataset": dataset,
                        "imbalance_factor": factor,
                        "method": method,
                        "loss": loss,
                        "beta": beta,
                        "gamma": gamma,
                        "error_percent": error,
                    }
                )
    return cells


def table3() -> list[dict[str, Any]]:
    """Table 3: ``dataset``, ``method`` (softmax / class_balanced), ``loss``, ``beta``,
    ``gamma``, ``top1_error_percent``, ``top5_error_percent``.

    >>> [(r["dataset"], r["top1_error_percent"]) for r in table3()][:2]
    [('inat2017', 45.38), ('inat2018', 42.86)]
    """
    t3 = _load()["table3"]
    cb = t3["class_balanced_setting"]
    rows = []
    for method, by_dataset in t3["rows"].items():
        setting = cb if method == CB_METHOD else {"loss": "softmax", "beta": 0.0, "gamma": None}
        for dataset, (top1, top5) in by_dataset.items():
            rows.append(
                {
                    "dataset": dataset,
                    "method": method,
                    **setting,
                    "top1_error_percent": top1,
                    "top5_error_percent": top5,
                }
            )
    return rows


def later_work() -> list[dict[str, Any]]:
    """Later results on long-tailed CIFAR at IF 100: ``dataset``, ``imbalance_factor``,
    ``method``, ``error_percent``.

    >>> [r["error_percent"] for r in later_work() if r["dataset"] == "cifar10"]
    [25.14, 22.97, 22.33]
    """
    later = _load()["later_work"]
    return [
        {
            "dataset": dataset,
            "imbalance_factor": later["imbalance_factor"],
            "method": method,
            "error_percent": error,
        }
        for method, by_dataset in later["rows"].items()
        for dataset, error in by_dataset.items()
    ]


def published_large(dataset: str, loss: str) -> dict[str, float] | None:
    """Table 3's ``{"top1": ..., "top5": ...}`` error % for ``softmax`` or ``class_balanced``.

    >>> published_large("imagenet", "softmax")
    {'top1': 23.92, 'top5': 7.03}
    """
    method = _method(loss)
    row = _load()["table3"]["rows"].get(method, {}).get(normalize_dataset(dataset))
    return None if row is None else {"top1": row[0], "top5": row[1]}


def published_error(
    dataset: str, imbalance_factor: float | None, loss: str, gamma: float | None = None
) -> float | None:
    """The published test error % of one method, or None when the paper has no such cell.

    CIFAR (``cifar10`` / ``cifar100``): Table 2 at ``imbalance_factor`` (``focal``
    needs ``gamma``), and the later work at IF 100. iNaturalist / ImageNet: Table
    3's top-1 error (``imbalance_factor`` is ignored). Unknown method names raise
    ValueError.
    """
    method = _method(loss)
    name = normalize_dataset(dataset)
    data = _load()
    if name in data["table3"]["rows"]["softmax"]:
        large = published_large(name, method) if method in ("softmax", CB_METHOD) else None
        return None if large is None else large["top1"]
    if method in LATER_METHODS:
        later = data["later_work"]
        if imbalance_factor is None or not math.isclose(
            float(imbalance_factor), later["imbalance_factor"]
        ):
            return None
        return later["rows"][method].get(name)
    index = _if_index(imbalance_factor)
    if index is None:
        return None
    row = _focal_row(gamma) if method == "focal" else method
    if row is None:
        return None
    errors = data["table2"]["rows"][row].get(name)
    return None if errors is None else errors[index]


def paper_cb_setting(dataset: str, imbalance_factor: float | None) -> dict[str, Any] | None:
    """The loss / beta / gamma of the paper's best class-balanced result for a column.

    ``beta`` is None at IF 1 (all classes have the same count, so every beta gives
    weight 1: the unweighted loss); ``gamma`` is None for softmax and sigmoid. For
    iNaturalist / ImageNet: the class-balanced focal loss with beta 0.999, gamma 0.5.
    None when the paper has no such column.

    >>> paper_cb_setting("cifar100", 1)
    {'loss': 'sigmoid', 'beta': None, 'gamma': None}
    """
    name = normalize_dataset(dataset)
    data = _load()
    if name in data["table3"]["rows"][CB_METHOD]:
        return dict(data["table3"]["class_balanced_setting"])
    setting = data["table2"]["class_balanced_setting"].get(name)
    index = _if_index(imbalance_factor)
    if setting is None or index is None:
        return None
    return {key: setting[key][index] for key in ("loss", "beta", "gamma")}


def _decoupling_tables(dataset: str, model: str | None = None) -> list[dict[str, Any]]:
    """The decoupling tables of ``dataset`` (and ``model``), in ``published.json`` order."""
    if model is not None and not isinstance(model, str):
        raise TypeError(f"model must be a str, got {model!r}")
    name = normalize_dataset(dataset)
    return [
        t
        for t in _load()["decoupling"]["tables"]
        if normalize_dataset(t["dataset"]) == name and model in (None, t["model"])
    ]


def published_decoupling(
    dataset: str,
    model: str,
    method: str,
    epochs: int | None = None,
    pretrained: bool | None = None,
) -> dict[str, float | None] | None:
    """Top-1 accuracy % (``all``, ``many``, ``medium``, ``few``; None where the source gives
    no figure) of a decoupled classifier of Kang et al. (ICLR 2020), or None when nothing is
    published for that data set, network, method and stage-one ``epochs``.

    ``method``: one of :data:`DECOUPLING_METHODS` (``joint`` is the stage-one network's
    own classifier). ``epochs`` None takes the first table listed for the data set and
    network (90 epochs where the paper has two schedules); ``pretrained`` None takes either
    kind of network, True / False only one started from ImageNet weights / from scratch
    (Places-LT's is pretrained, the others are not). Published: ImageNet-LT with
    ResNeXt-50 and ResNet-50 (90 epochs), Places-LT with an ImageNet-pretrained ResNet-152
    (30 epochs), iNaturalist 2018 with ResNet-50 and ResNet-152 (90 and 200 epochs, overall
    accuracy only); :func:`decoupling_tables` names each one's source.

    >>> published_decoupling("ImageNet-LT", "resnext50", "joint")["few"]
    7.7
    >>> published_decoupling("inat2018", "resnet50", "crt", epochs=200)["all"]
    68.2
    >>> print(published_decoupling("imagenet_lt", "resnet152", "crt"))
    None
    >>> print(published_decoupling("places_lt", "resnet152", "crt", 30, pretrained=False))
    None
    """
    if not isinstance(method, str) or method.lower() not in DECOUPLING_METHODS:
        raise ValueError(
            f"unknown decoupling method {method!r}: expected one of {', '.join(DECOUPLING_METHODS)}"
        )
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int)):
        raise TypeError(f"epochs must be an int or None, got {epochs!r}")
    if pretrained is not None and not isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be a bool or None, got {pretrained!r}")
    if not isinstance(model, str):  # (None would match every table's network)
        raise TypeError(f"model must be a str, got {model!r}")
    model = model.lower()
    for table in _decoupling_tables(dataset, model):
        if epochs in (None, table["epochs"]) and pretrained in (None, _pretrained(table)):
            values = table["rows"].get(method.lower())
            columns = _load()["decoupling"]["columns"]
            return None if values is None else dict(zip(columns, values, strict=True))
    return None


def _pretrained(table: dict[str, Any]) -> bool:
    """Whether a decoupling table's network started from ImageNet weights."""
    return bool(table.get("pretrained", False))


def decoupling_tables(dataset: str) -> list[dict[str, Any]]:
    """The published decoupling tables of ``dataset``: ``model``, ``epochs`` (of stage one),
    ``pretrained`` (from ImageNet weights) and ``source`` (where the numbers were read) of
    each, in the order they are listed.

    >>> [(t["model"], t["epochs"]) for t in decoupling_tables("iNat-2018")]
    [('resnet50', 90), ('resnet50', 200), ('resnet152', 90), ('resnet152', 200)]
    >>> [t["pretrained"] for t in decoupling_tables("places_lt")]
    [True]
    >>> decoupling_tables("cifar10")
    []
    """
    keys = ("model", "epochs", "source")
    return [
        {**{k: t[k] for k in keys}, "pretrained": _pretrained(t)}
        for t in _decoupling_tables(dataset)
    ]


def decoupling_recipe(dataset: str) -> dict[str, Any] | None:
    """The recipe of the release (Kang et al., ICLR 2020) that ``dataset``'s published
    decoupling numbers are for, or None: ``stage_one`` (``config.json`` keys -> values),
    ``stage_two`` (method -> ``decouple.json`` keys -> values) and ``not_checked`` (the
    settings whose release value is not recorded here); iNaturalist 2018 also gives its
    ``train_images`` and ``classes`` (the list benchmarks' sizes live in
    :data:`classbalanced.data.lists.BENCHMARKS`).

    >>> r = decoupling_recipe("ImageNet-LT")
    >>> r["stage_one"]["lr_schedule"], r["stage_two"]["lws"]["epochs"]
    ('cosine', 5)
    >>> decoupling_recipe("places_lt")["stage_two"]["crt"]["lr"]
    0.1
    >>> print(decoupling_recipe("cifar10"))
    None
    """
    name = normalize_dataset(dataset)
    recipes = _load()["decoupling"]["recipes"]
    found = [v for k, v in recipes.items() if k != "description" and normalize_dataset(k) == name]
    return copy.deepcopy(found[0]) if found else None
