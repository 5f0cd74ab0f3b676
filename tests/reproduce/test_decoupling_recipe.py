"""The strict recipe check of report's decoupling section: a real finished stage-one run and
its cRT run, relabelled as the release's ImageNet-LT ResNeXt-50 recipe, get the published
numbers; each single departing setting takes them away and is named."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from classbalanced.config import TrainConfig
from classbalanced.data.lists import BENCHMARKS
from classbalanced.decouple import DecoupleOptions, decouple
from classbalanced.engine.run_folder import DECOUPLE_FILE
from classbalanced.engine.trainer import train
from classbalanced.reproduce.decoupling import decoupling_lines
from classbalanced.reproduce.published import decoupling_recipe, published_decoupling

RECIPE = decoupling_recipe("imagenet_lt")


def _quiet(*_):
    return None


def _counts() -> list[int]:
    """Per-class sizes of ImageNet-LT's training list: 1000 classes, 115,846 images, 1280 to 5."""
    b = BENCHMARKS["imagenet_lt"]
    rest = b.num_train - b.max_per_class - b.min_per_class
    n = b.num_classes - 2
    counts = [rest // n + (i < rest % n) for i in range(n)]
    return [b.max_per_class, *counts, b.min_per_class]


def _edit(path: Path, **fields) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text(encoding="utf-8")), **fields}))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("recipe")
    cfg = TrainConfig(
        dataset="digits", imbalance_factor=10, model="simple_cnn", epochs=1, batch_size=64,
        pad=1, flip=False, eval_every=1, device="cpu", progress=False, out=str(root / "joint"),
    )  # fmt: skip
    train(cfg, log=_quiet)
    opts = DecoupleOptions(method="crt", out=str(root / "crt"), device="cpu", epochs=1)
    decouple(root / "joint", opts, log=_quiet)
    return root


def _as_release(root: Path) -> None:
    """Relabel both runs with every setting of the release's recipe."""
    for run in ("joint", "crt"):
        _edit(
            root / run / "metrics.json",
            dataset="imagenet_lt", model="resnext50", epochs=90, train_counts=_counts(),
            imbalance_factor=1.0, loss="softmax", beta=0.0,
        )  # fmt: skip
        _edit(root / run / "config.json", dataset="imagenet_lt", model="resnext50", epochs=90,
              **RECIPE["stage_one"])  # fmt: skip
    settings = json.loads((root / "crt" / DECOUPLE_FILE).read_text(encoding="utf-8"))
    stage_two = RECIPE["stage_two"]["crt"]
    settings["options"] = {**settings["options"], **stage_two}
    settings.update(stage_two)  # decouple writes what it used at the top level
    (root / "crt" / DECOUPLE_FILE).write_text(json.dumps(settings))


def _published_cell(text: str, method: str) -> str:
    row = next(line for line in text.splitlines() if re.match(rf"\| [^|]+ \| {method} \|", line))
    return [c.strip() for c in row.strip("|").split("|")][6]


def _cells(method: str) -> str:
    pub = published_decoupling("imagenet_lt", "resnext50", method, 90)
    return " / ".join(f"{pub[g]:.1f}" for g in ("all", "many", "medium", "few"))


STAGE_ONE = [(k, v) for k, v in RECIPE["stage_one"].items()]
STAGE_TWO = [(k, v) for k, v in RECIPE["stage_two"]["crt"].items()]


def _other(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value * 2 + 1
    return value + "_other"


def test_the_release_s_recipe_gets_the_published_numbers(runs):
    _as_release(runs)
    text = "\n".join(decoupling_lines(runs))
    assert _published_cell(text, "crt") == _cells("crt")
    assert _published_cell(text, "joint") == _cells("joint")
    assert "your recipe, not the release" not in text


@pytest.mark.parametrize(("key", "want"), STAGE_ONE, ids=[k for k, _ in STAGE_ONE])
def test_each_stage_one_departure_removes_the_numbers(runs, key, want):
    _as_release(runs)
    for run in ("joint", "crt"):
        _edit(runs / run / "config.json", **{key: _other(want)})
    text = "\n".join(decoupling_lines(runs))
    assert _published_cell(text, "crt") == "your recipe"
    assert _published_cell(text, "joint") == "your recipe"
    assert "crt: your recipe, not the release's" in text
    assert f"stage one's {key} {_other(want)} (the release's: {want})" in text


@pytest.mark.parametrize(("key", "want"), STAGE_TWO, ids=[k for k, _ in STAGE_TWO])
def test_each_stage_two_departure_removes_the_numbers(runs, key, want):
    _as_release(runs)
    path = runs / "crt" / DECOUPLE_FILE
    settings = json.loads(path.read_text(encoding="utf-8"))
    settings["options"][key] = _other(want)
    settings.pop(key, None)  # the option alone now says what ran
    path.write_text(json.dumps(settings))
    text = "\n".join(decoupling_lines(runs))
    assert _published_cell(text, "crt") == "your recipe"
    assert _published_cell(text, "joint") == _cells("joint")  # stage one still the release's
    assert f"stage two's {key} {_other(want)} (the release's: {want})" in text
    # a setting the run does not record departs too
    del settings["options"][key]
    path.write_text(json.dumps(settings))
    text = "\n".join(decoupling_lines(runs))
    assert _published_cell(text, "crt") == "your recipe"
    assert f"stage two's {key} not recorded (the release's: {want})" in text


@pytest.mark.parametrize("change", ["drop_rare_image", "other_classes"])
def test_another_training_list_removes_the_numbers(runs, change):
    _as_release(runs)
    counts = _counts()
    counts = counts[:-1] + [4] if change == "drop_rare_image" else counts[:-1]
    for run in ("joint", "crt"):
        _edit(runs / run / "metrics.json", train_counts=counts)
    text = "\n".join(decoupling_lines(runs))
    assert _published_cell(text, "crt") == "your recipe"
    key = "smallest" if change == "drop_rare_image" else "classes"
    assert f"stage one's training set {key}" in text


def test_the_recipe_s_stage_one_is_the_preset_s():
    from classbalanced.config import config_from_sources

    cfg = config_from_sources("imagenet_lt_resnext50_softmax").resolved()
    assert (cfg.dataset, cfg.model, cfg.epochs) == ("imagenet_lt", "resnext50", 90)
    assert {k: getattr(cfg, k) for k in RECIPE["stage_one"]} == RECIPE["stage_one"]
    assert cfg.decay_epochs == [] and not cfg.nesterov and not cfg.no_decay_bias_and_norm
    assert published_decoupling(cfg.dataset, cfg.model, "joint", cfg.epochs) is not None
