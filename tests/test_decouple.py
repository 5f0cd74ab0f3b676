"""Decoupled classifier learning (cRT, tau-normalisation, LWS) on finished runs.

Stage one runs once per module on tiny generated data: an in-memory .npz set (resnet8, with
batch norm) and a ``list`` dataset of JPEG files with a val and a test list.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from classbalanced.config import TrainConfig
from classbalanced.decouple import (
    ClassUniformSampler,
    DecoupleOptions,
    LWSHead,
    decouple,
    tau_normalize,
)
from classbalanced.engine import train
from classbalanced.engine.checkpoint import latest_checkpoint, load_checkpoint
from classbalanced.engine.evaluate_run import evaluate_run
from classbalanced.engine.run_folder import DECOUPLE_FILE

TRAIN = [24, 8, 3, 2]  # long-tailed
SIZE = 16


def _quiet(_msg: str) -> None:
    pass


def _templates(rng) -> np.ndarray:
    return rng.integers(30, 226, size=(len(TRAIN), 1, 1, 3)).astype(np.float64)


# --------------------------------------------------------------------------- the pieces


def test_tau_normalize_against_float64():
    w = torch.randn(7, 5, dtype=torch.float64)
    w[3] = 0.0  # a zero row stays zero
    for tau in (0.3, 1.0, 1.7):
        expected = w.clone()
        for i in range(7):
            norm = float(np.sqrt((w[i].numpy() ** 2).sum()))
            if norm > 0:
                expected[i] = w[i] / norm**tau
        assert torch.allclose(tau_normalize(w, tau), expected, rtol=1e-12, atol=0)
    assert torch.allclose(tau_normalize(w, 1.0)[[0, 1]].norm(dim=1), torch.ones(2, dtype=w.dtype))
    w32 = torch.randn(4, 3)
    assert torch.equal(tau_normalize(w32, 0.0), w32)  # tau = 0 is the identity, bit for bit
    with pytest.raises(ValueError, match=r"tau must be finite and >= 0, got -0.5"):
        tau_normalize(w32, -0.5)


def test_lws_head_scales_logits_and_folds():
    torch.manual_seed(0)
    linear = torch.nn.Linear(6, 4).double()
    head = LWSHead(linear)
    with torch.no_grad():
        head.scales.copy_(torch.tensor([0.5, 2.0, 1.0, 3.0]))
    f = torch.randn(5, 6, dtype=torch.float64)
    expected = (f @ linear.weight.T + linear.bias) * torch.tensor([0.5, 2.0, 1.0, 3.0]).double()
    assert torch.allclose(head(f), expected, rtol=1e-12)
    assert torch.allclose(head.folded().double()(f), expected, rtol=1e-12)
    assert [n for n, p in head.named_parameters() if p.requires_grad] == ["scales"]


def test_class_uniform_sampler():
    labels = np.array([0] * 500 + [1] * 40 + [2] * 3 + [4] * 1)  # class 3 absent
    sampler = ClassUniformSampler(labels, seed=3)
    draws = torch.cat([sampler.global_indices(e) for e in range(40)]).numpy()
    classes = np.bincount(labels[draws], minlength=5)
    assert classes[3] == 0
    expected = len(draws) / 4
    assert np.all(np.abs(classes[[0, 1, 2, 4]] - expected) < 5 * np.sqrt(expected))
    within = np.bincount(draws[labels[draws] == 2] - 540, minlength=3)  # uniform inside a class
    assert np.all(np.abs(within - within.sum() / 3) < 5 * np.sqrt(within.sum() / 3))
    assert torch.equal(sampler.global_indices(5), sampler.global_indices(5))
    assert not torch.equal(sampler.global_indices(5), sampler.global_indices(6))
    sampler.set_epoch(2)
    assert list(sampler) == sampler.global_indices(2).tolist() and len(sampler) == len(labels)


# --------------------------------------------------------------------------- stage one


@pytest.fixture(scope="module")
def npz_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("npz")
    rng = np.random.default_rng(0)
    templates = _templates(rng)
    for name, per_class in (("train", TRAIN), ("test", [6] * len(TRAIN))):
        y = np.repeat(np.arange(len(TRAIN)), per_class)
        x = np.clip(templates[y] + rng.normal(0, 25, (len(y), SIZE, SIZE, 3)), 0, 255)
        np.savez(root / f"{name}.npz", x=x.astype(np.uint8), y=y)
    cfg = TrainConfig(
        dataset="npz", train_data=str(root / "train.npz"), test_data=str(root / "test.npz"),
        model="resnet8", epochs=3, batch_size=8, eval_every=3, device="cpu", progress=False,
        out=str(root / "run"), seed=1,
    )  # fmt: skip
    train(cfg, log=_quiet)
    return root / "run"


def _jpeg(path: Path, colour, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.clip(np.asarray(colour) + rng.normal(0, 25, (SIZE, SIZE, 3)), 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(path, "JPEG", quality=95)


@pytest.fixture(scope="module")
def list_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lists")
    rng = np.random.default_rng(1)
    templates = _templates(rng)[:, 0, 0]
    seed = 0
    for split, per_class in (("train", TRAIN), ("val", [3] * 4), ("test", [4] * 4)):
        lines = []
        for label, n in enumerate(per_class):
            for j in range(n):
                seed += 1
                rel = f"images/{split}/c{label}/{j:05d}.jpg"
                _jpeg(root / rel, templates[label], seed)
                lines.append(f"{rel} {label}\n")
        (root / f"{split}.txt").write_text("".join(lines))
    from classbalanced.data.prepare import prepare

    prepare(
        "list", root, log=_quiet, lists={s: root / f"{s}.txt" for s in ("train", "val", "test")}
    )
    cfg = TrainConfig(
        dataset="list", data_dir=str(root), model="resnet8", image_size=SIZE, epochs=2,
        batch_size=8, eval_every=2, num_workers=0, device="cpu", progress=False,
        out=str(root / "run"), seed=2,
    )  # fmt: skip
    train(cfg, log=_quiet)
    return root / "run"


def _state(folder: Path) -> dict:
    return load_checkpoint(latest_checkpoint(folder / "checkpoints"))["model"]


def _options(method: str, out: Path, **kw) -> DecoupleOptions:
    return DecoupleOptions(method=method, out=str(out), device="cpu", **kw)


# --------------------------------------------------------------------------- the methods


def test_crt_keeps_the_backbone_bit_identical(npz_run, tmp_path):
    before = _state(npz_run)
    metrics = decouple(npz_run, _options("crt", tmp_path / "crt", epochs=2), log=_quiet)
    after = _state(tmp_path / "crt")
    assert set(after) == set(before)
    for key in before:
        if key.startswith("fc."):
            assert not torch.equal(after[key], before[key])  # a new classifier
        else:  # weights and batch-norm statistics alike
            assert torch.equal(after[key], before[key]), key
    assert len(metrics["decouple"]["train_loss"]) == 2
    for key in ("accuracy", "many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy"):
        assert key in metrics
    # reported like any run: `evaluate` on the new folder gives the same numbers
    again = evaluate_run(tmp_path / "crt", device="cpu")
    assert again["accuracy"] == metrics["accuracy"]
    assert again["per_class_accuracy"] == metrics["per_class_accuracy"]
    written = json.loads((tmp_path / "crt" / "config.json").read_text())
    assert written["dataset"] == "npz" and written["out"] == str(tmp_path / "crt")
    settings = json.loads((tmp_path / "crt" / "decouple.json").read_text())
    assert settings["method"] == "crt" and settings["stage_one"] == str(npz_run)


def test_crt_with_a_class_balanced_loss(npz_run, tmp_path):
    opts = _options("crt", tmp_path / "cb", epochs=1, loss="focal", beta=0.999, gamma=0.5)
    metrics = decouple(npz_run, opts, log=_quiet)
    assert metrics["decouple"]["options"]["loss"] == "focal"
    # the prior bias of the sigmoid-family losses starts the new classifier: -log(C - 1)
    # before training; after one epoch it has moved but the backbone has not
    before, after = _state(npz_run), _state(tmp_path / "cb")
    assert all(torch.equal(after[k], v) for k, v in before.items() if not k.startswith("fc."))


def test_tau_zero_is_the_identity(npz_run, tmp_path):
    metrics = decouple(npz_run, _options("tau_norm", tmp_path / "t0", tau=0.0), log=_quiet)
    assert all(torch.equal(_state(tmp_path / "t0")[k], v) for k, v in _state(npz_run).items())
    stage_one = evaluate_run(npz_run, device="cpu")
    assert metrics["per_class_accuracy"] == stage_one["per_class_accuracy"]
    assert metrics["decouple"]["tau"] == 0.0


def test_tau_needs_a_validation_split(npz_run, tmp_path):
    with pytest.raises(
        ValueError, match=r"npz has no validation split apart from the evaluated test split"
    ):
        decouple(npz_run, _options("tau_norm", tmp_path / "t"), log=_quiet)


def _split_features(run: Path, split: str):
    """Stage-one features and fc of a list split, computed here independently, in float64."""
    from classbalanced.data.loaders import build_transforms, mean_std
    from classbalanced.data.prepared import load_prepared
    from classbalanced.models.registry import build_model

    cfg = json.loads((run / "config.json").read_text())
    layout = load_prepared("list", cfg["data_dir"])
    model = build_model("resnet8", 4, in_channels=3)
    model.load_state_dict(_state(run))
    model.eval()
    fc, model.fc = model.fc, torch.nn.Identity()
    transform = build_transforms(False, SIZE, *mean_std("list"))
    x = torch.stack(
        [transform(Image.open(layout.root / r).convert("RGB")) for r, _ in layout.splits[split]]
    )
    with torch.no_grad():
        feats = model(x).double()
    labels = torch.tensor([label for _, label in layout.splits[split]])
    return feats, labels, fc.weight.detach().double(), fc.bias.detach().double()


@pytest.mark.parametrize("tau_bias", ["keep", "drop"])
def test_tau_is_chosen_on_the_val_split(list_run, tmp_path, tau_bias):
    """``drop``: the logits of Kang et al.'s release, ``W f`` without the bias."""
    taus = [0.0, 0.5, 1.0, 1.5, 2.0]
    opts = _options("tau_norm", tmp_path / "tau", taus=taus, tau_bias=tau_bias)
    metrics = decouple(list_run, opts, log=_quiet)
    info = metrics["decouple"]
    assert info["tau_chosen_on"] == "val" and info["evaluated_split"] == "test"
    assert info["tau_bias"] == tau_bias
    feats, labels, w, b = _split_features(list_run, "val")
    b = b if tau_bias == "keep" else torch.zeros_like(b)
    assert torch.equal(_state(tmp_path / "tau")["fc.bias"], b.float())
    expected = []
    for tau in taus:
        norms = w.norm(dim=1, keepdim=True)
        logits = feats @ (w / norms**tau).T + b
        expected.append(float((logits.argmax(1) == labels).double().mean()))
    assert [r["accuracy"] for r in info["tau_search"]] == pytest.approx(expected)
    assert info["tau"] == taus[int(np.argmax(expected))]  # the first best
    # the reported numbers are those of the test list, re-evaluated independently
    again = evaluate_run(tmp_path / "tau", device="cpu")
    assert metrics["num_test_images"] == 16 and again["accuracy"] == metrics["accuracy"]


def _val_fingerprint(data_dir: Path) -> dict:
    """Count + SHA-256 of the val list's ``path<TAB>label`` lines, as stage one's splits."""
    import hashlib

    lines = [line.split() for line in (data_dir / "val.txt").read_text().splitlines()]
    text = "".join(f"{path}\t{label}\n" for path, label in lines)
    return {"images": len(lines), "sha256": hashlib.sha256(text.encode()).hexdigest()}


def _prepare_lists(data_dir: Path) -> None:
    from classbalanced.data.prepare import prepare

    lists = {s: data_dir / f"{s}.txt" for s in ("train", "val", "test")}
    prepare("list", data_dir, log=_quiet, lists=lists)


def test_the_split_tau_is_chosen_on_is_fingerprinted(list_run, tmp_path):
    """decouple.json (and the output's run.json) record the val split tau was chosen on, as
    stage one records its splits; the record follows the val data."""
    data_dir = Path(json.loads((list_run / "config.json").read_text())["data_dir"]).absolute()

    def tau_data(out: Path, **kw) -> dict | None:
        decouple(list_run, _options("tau_norm", out, **kw), log=_quiet)
        settings = json.loads((out / "decouple.json").read_text(encoding="utf-8"))
        record = json.loads((out / "run.json").read_text(encoding="utf-8"))["data"]
        assert settings.get("tau_data") == record.get("val")
        return settings.get("tau_data")

    before = tau_data(tmp_path / "a", taus=[0.0, 1.0])
    assert before == {"source": str(data_dir), "fingerprint": _val_fingerprint(data_dir)}
    assert tau_data(tmp_path / "given", tau=0.5) is None  # no split chosen on
    original = (data_dir / "val.txt").read_text()
    first, *rest = original.splitlines(keepends=True)
    path, label = first.split()
    try:  # the first val image under another label: the val data changed, train and test not
        (data_dir / "val.txt").write_text(f"{path} {(int(label) + 1) % 4}\n" + "".join(rest))
        _prepare_lists(data_dir)
        changed = _val_fingerprint(data_dir)
        after = tau_data(tmp_path / "b", taus=[0.0, 1.0])
    finally:
        (data_dir / "val.txt").write_text(original)
        _prepare_lists(data_dir)
    assert after == {"source": str(data_dir), "fingerprint": changed}
    assert changed["sha256"] != before["fingerprint"]["sha256"] and changed["images"] == 12
    # a damaged val record is refused like a damaged train or test one
    manifest = json.loads((tmp_path / "a" / "run.json").read_text(encoding="utf-8"))
    del manifest["data"]["val"]["fingerprint"]
    (tmp_path / "a" / "run.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ValueError, match=r"data record lacks val.source / val.fingerprint"):
        evaluate_run(tmp_path / "a", device="cpu")


def test_lws_trains_only_the_scales(list_run, tmp_path):
    metrics = decouple(list_run, _options("lws", tmp_path / "lws", epochs=2, lr=0.5), log=_quiet)
    scales = torch.tensor(metrics["decouple"]["scales"], dtype=torch.float32)
    assert scales.shape == (4,) and not torch.equal(scales, torch.ones(4))
    before, after = _state(list_run), _state(tmp_path / "lws")
    assert torch.allclose(after["fc.weight"], before["fc.weight"] * scales[:, None])
    assert torch.allclose(after["fc.bias"], before["fc.bias"] * scales)
    assert all(torch.equal(after[k], v) for k, v in before.items() if not k.startswith("fc."))
    assert evaluate_run(tmp_path / "lws", device="cpu")["accuracy"] == metrics["accuracy"]


def test_image_files_go_through_the_trainers_pipeline(list_run, tmp_path):
    from classbalanced.decouple.data import file_data as _file_data
    from classbalanced.decouple.stage_one import load_stage_one as _load_run
    from classbalanced.engine.distributed import DistContext
    from classbalanced.engine.run_data import train_pipeline

    run = _load_run(list_run)
    data = _file_data(run, torch.device("cpu"), eval_batch=5, num_workers=0, accept_change=False)
    stream = data.stream(8, None)
    transform, collate, _ = train_pipeline(run.cfg, DistContext())
    assert type(stream.dataset.transform) is type(transform) and stream.collate is collate
    assert stream.persistent is False  # num_workers=0 here; the run's setting otherwise
    # the evaluation batches are the trainer's: tau = 0 gives the stage-one run's numbers
    metrics = decouple(list_run, _options("tau_norm", tmp_path / "t0", tau=0.0), log=_quiet)
    stage_one = json.loads((list_run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["per_class_accuracy"] == stage_one["per_class_accuracy"]


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs(npz_run, tmp_path):
    with pytest.raises(
        ValueError, match=r"unknown method 'nope': expected one of crt, tau_norm, lws"
    ):
        decouple(npz_run, _options("nope", tmp_path / "x"), log=_quiet)
    with pytest.raises(ValueError, match=r"is the stage-one run: expected another folder"):
        decouple(npz_run, _options("crt", npz_run), log=_quiet)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"is not empty and holds no run"):
        decouple(npz_run, _options("crt", tmp_path / "full"), log=_quiet)
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"
    decouple(npz_run, _options("tau_norm", tmp_path / "done", tau=1.0), log=_quiet)
    with pytest.raises(ValueError, match=r"already holds a run: pass --overwrite"):
        decouple(npz_run, _options("tau_norm", tmp_path / "done", tau=1.0), log=_quiet)
    decouple(npz_run, _options("tau_norm", tmp_path / "done", tau=1.0, overwrite=True), log=_quiet)
    with pytest.raises(ValueError, match=r"stage-two loss 'ldam' needs a cosine classifier"):
        decouple(npz_run, _options("crt", tmp_path / "l", loss="ldam"), log=_quiet)
    with pytest.raises(ValueError, match=r"is not a classbalanced run folder: it has no run.json"):
        decouple(tmp_path, _options("crt", tmp_path / "y"), log=_quiet)
    (npz_run / "metrics.json").rename(tmp_path / "m.json")  # an unfinished run
    try:
        with pytest.raises(ValueError, match=r"has no metrics.json: expected a finished run"):
            decouple(npz_run, _options("crt", tmp_path / "z"), log=_quiet)
    finally:
        (tmp_path / "m.json").rename(npz_run / "metrics.json")


def test_cli_decouple(npz_run, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "classbalanced", "decouple", str(npz_run), "--device", "cpu"]
    ok = subprocess.run(
        [*cmd, "--method", "lws", "--epochs", "1", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert (
        "lws on " in ok.stderr
        and "test error" in ok.stderr
        and (tmp_path / "o" / "metrics.json").is_file()
    )
    bad = subprocess.run(
        [*cmd, "--method", "tau_norm", "--out", str(tmp_path / "p")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "pass --tau VALUE" in bad.stderr


def test_a_decouple_output_cannot_be_resumed_as_a_training_run(npz_run, tmp_path, capsys):
    from classbalanced import cli

    out = tmp_path / "t"
    decouple(npz_run, _options("tau_norm", out, tau=0.5), log=_quiet)
    config = json.loads((npz_run / "config.json").read_text(encoding="utf-8"))
    argv = ["train", "--dataset", "npz", "--train-data", config["train_data"]]
    argv += ["--test-data", config["test_data"], "--resume", "--force", "--out", str(out)]
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "classbalanced decouple" in err and "resume" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


# --------------------------------------------------------------------------- the report


def _table(text: str) -> dict[str, list[str]]:
    """method -> cells of the decoupling table in a report's markdown."""
    section = text[text.index("## Decoupled classifiers") :]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", line[1:-1])] for line in rows[1:]]
    return {c[1]: c for c in cells}


def _ours(metrics: dict) -> str:
    keys = ("accuracy", "many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy")
    return " / ".join("-" if metrics[k] is None else f"{100 * metrics[k]:.1f}" for k in keys)


def _relabel(run: Path, **fields) -> None:
    """Rewrite the data set / network / epochs a decouple run's metrics.json records."""
    path = run / "metrics.json"
    path.write_text(json.dumps({**json.loads(path.read_text(encoding="utf-8")), **fields}))


def _cells(pub: dict) -> str:
    return " / ".join(
        "-" if pub[g] is None else f"{pub[g]:.1f}" for g in ("all", "many", "medium", "few")
    )


def test_report_puts_decouple_runs_beside_the_published_numbers(npz_run, tmp_path):
    from classbalanced.reproduce.decoupling import decoupling_lines
    from classbalanced.reproduce.published import published_decoupling
    from classbalanced.reproduce.report import write_report

    out = tmp_path / "stage_two"
    crt = decouple(npz_run, _options("crt", out / "crt", epochs=1), log=_quiet)
    opts = _options("tau_norm", out / "tau", tau=0.5, tau_bias="drop")  # the release's
    tau = decouple(npz_run, opts, log=_quiet)
    # a folder holding only decouple runs (no plan.json, no results.csv) is reported
    text = write_report(out).read_text(encoding="utf-8")
    assert "Decoupling Representation and Classifier for Long-Tailed Recognition" in text
    assert "Where the published numbers were read" not in text  # nothing for npz data
    table = _table(text)
    assert list(table) == ["joint", "crt", "tau_norm"]  # stage one once, then paper order
    assert table["joint"][0] == str(npz_run)  # outside the report folder: its whole path
    joint = json.loads((npz_run / "metrics.json").read_text(encoding="utf-8"))
    for method, metrics in (("joint", joint), ("crt", crt), ("tau_norm", tau)):
        assert table[method][4] == str(joint["epochs"])  # stage one's epochs, on every row
        assert table[method][5] == _ours(metrics)
        assert table[method][6:] == ["-", "-"]  # nothing published for this data set

    # labelled as the release's setting: published cells, diff and the source appear
    for name in ("crt", "tau"):
        _relabel(out / name, dataset="imagenet_lt", model="resnext50", epochs=90)
    text = "\n".join(decoupling_lines(out))
    table = _table(text)
    for method, metrics in (("crt", crt), ("tau_norm", tau)):
        pub = published_decoupling("imagenet_lt", "resnext50", method, 90)
        assert table[method][6] == _cells(pub)
        assert table[method][7] == f"{100 * metrics['accuracy'] - pub['all']:+.1f}"
    assert table["joint"][6] == "-"  # stage one is still the npz run
    assert "github.com/facebookresearch/classifier-balancing, README, Results: ImageNet_LT" in text
    assert "imagenet_lt, resnet50, 90 epochs: ImageNet-LT test list, ResNet-50" in text
    assert "CVPR 2021, Table 1" in text  # the second ImageNet-LT table's source
    assert "Published for imagenet_lt with resnet50, 90 epochs" in text  # not run: listed
    assert "Published for imagenet_lt with resnext50" not in text  # run: in the table

    # the same network trained for other epochs: no published cells, the table is listed
    for name in ("crt", "tau"):
        _relabel(out / name, epochs=200)
    text = "\n".join(decoupling_lines(out))
    assert _table(text)["crt"][6:] == ["-", "-"]
    assert "Published for imagenet_lt with resnext50, 90 epochs" in text
    assert "crt 49.6 / 61.8 / 46.2 / 27.4" in text

    # iNaturalist 2018 at 200 epochs: overall accuracy only, and the right schedule's row
    for name in ("crt", "tau"):
        _relabel(out / name, dataset="inat2018", model="resnet50")
    table = _table("\n".join(decoupling_lines(out)))
    pub = published_decoupling("inat2018", "resnet50", "crt", 200)
    assert pub["all"] != published_decoupling("inat2018", "resnet50", "crt", 90)["all"]
    assert table["crt"][6] == f"{pub['all']:.1f} / - / - / -"
    assert table["crt"][7] == f"{100 * crt['accuracy'] - pub['all']:+.1f}"

    # a method this version does not know (a later one) is listed, not fatal to the report
    path = out / "tau" / "decouple.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "method": "future_method"}))
    table = _table("\n".join(decoupling_lines(out)))
    assert table["future_method"][6:] == ["-", "-"] and table["crt"][1] == "crt"


def test_published_decoupling_lookups():
    from classbalanced.decouple import METHODS
    from classbalanced.reproduce.published import (
        DECOUPLING_METHODS,
        decoupling_tables,
        published_decoupling,
    )

    assert DECOUPLING_METHODS == ("joint", "ncm", *METHODS)  # the report's rows: ours and NCM
    rows = {m: published_decoupling("ImageNet-LT", "ResNeXt50", m) for m in DECOUPLING_METHODS}
    # the release's table: every method beats the joint classifier on few-shot classes
    assert all(rows[m]["few"] > rows["joint"]["few"] for m in DECOUPLING_METHODS[1:])
    assert rows["lws"] == {"all": 49.9, "many": 60.2, "medium": 47.2, "few": 30.3}
    for dataset in ("imagenet_lt", "places_lt", "inat2018"):
        for t in decoupling_tables(dataset):
            pubs = {m: published_decoupling(dataset, t["model"], m, t["epochs"]) for m in METHODS}
            joint = published_decoupling(dataset, t["model"], "joint", t["epochs"])
            # the paper's finding on every table: each stage-two method beats joint overall
            assert all(p["all"] > joint["all"] for p in pubs.values()), (dataset, t)
            if joint["few"] is not None:  # cRT gains the least of them on few-shot classes
                assert min(pubs, key=lambda m: pubs[m]["few"]) == "crt", (dataset, t)
    # 200 epochs beat 90 on iNaturalist 2018 for every method and network
    for model in ("resnet50", "resnet152"):
        for m in ("joint", *METHODS):
            longer = published_decoupling("inat2018", model, m, 200)["all"]
            assert longer > published_decoupling("inat2018", model, m, 90)["all"]
    assert published_decoupling("places_lt", "resnet152", "ncm", 30)["few"] == 27.3
    assert published_decoupling("places_lt", "resnet152", "crt", 90) is None  # other epochs
    assert published_decoupling("inat2018", "resnet50", "ncm") is None  # not in the source
    assert published_decoupling("imagenet_lt", "resnet152", "crt") is None
    with pytest.raises(ValueError, match="expected one of joint, ncm, crt, tau_norm, lws"):
        published_decoupling("imagenet_lt", "resnext50", "crt2")
    with pytest.raises(TypeError, match="epochs must be an int or None, got '90'"):
        published_decoupling("imagenet_lt", "resnext50", "crt", "90")
    # (no network matched any: the first table's numbers, ResNeXt-50's, for any network)
    with pytest.raises(TypeError, match="model must be a str, got None"):
        published_decoupling("imagenet_lt", None, "crt")


def _copy_run(run: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(run, to)
    return to


def test_a_run_in_fp16_decoupled_or_evaluated_on_the_cpu_is_announced_as_slow(npz_run, tmp_path):
    """Decouple and evaluate use the run's precision: fp16 on the CPU is one warning line."""
    run = _copy_run(npz_run, tmp_path / "s1")
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    lines: list[str] = []
    decouple(run, _options("tau_norm", tmp_path / "fp32", tau=0.0), log=lines.append)
    evaluate_run(tmp_path / "fp32", device="cpu", log=lines.append)
    assert not [line for line in lines if "slow" in line]
    (run / "config.json").write_text(json.dumps({**config, "precision": "fp16"}))
    decouple(run, _options("tau_norm", tmp_path / "fp16", tau=0.0), log=lines.append)
    evaluate_run(tmp_path / "fp16", device="cpu", log=lines.append)
    warned = [line for line in lines if "slow" in line]
    assert len(warned) == 2 and all(w.startswith("warning: ") for w in warned)
    assert all("CPU is very slow" in w and "bf16 or fp32" in w for w in warned)


def test_out_naming_the_stage_one_run_another_way_is_refused(npz_run, tmp_path):
    run = _copy_run(npz_run, tmp_path / "runs" / "s1")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    (tmp_path / "link").symlink_to(run)
    for out in (tmp_path / "runs" / ".." / "runs" / "s1", tmp_path / "link"):
        with pytest.raises(ValueError, match=r"is the stage-one run: expected another folder"):
            decouple(run, _options("tau_norm", out, tau=1.0, overwrite=True), log=_quiet)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_an_interrupted_run_is_refused(npz_run, tmp_path):
    """A run stopped by Ctrl-C after an evaluation has a metrics.json and a checkpoint, but
    its network is not the finished one."""
    import signal

    from classbalanced.engine.trainer import TrainingInterrupted

    cfg = json.loads((npz_run / "config.json").read_text(encoding="utf-8"))
    cfg.update(out=str(tmp_path / "run"), epochs=5, eval_every=1)

    def stop_after_the_first_evaluation(line: str) -> None:
        if line.startswith("epoch   1/5"):
            os.kill(os.getpid(), signal.SIGINT)  # caught by the trainer: checkpoint, stop

    with pytest.raises(TrainingInterrupted):
        train(TrainConfig.from_dict(cfg), log=stop_after_the_first_evaluation)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epoch"] == 1
    with pytest.raises(ValueError, match=r"run is unfinished \(evaluated up to epoch 1 of 5\)"):
        decouple(tmp_path / "run", _options("tau_norm", tmp_path / "t", tau=0.0), log=_quiet)
    assert not (tmp_path / "t").exists()
    # a corrupt newest checkpoint is named, without `train`'s --fallback-checkpoint
    assert len(list((tmp_path / "run" / "checkpoints").glob("*.pt"))) == 2
    newest = latest_checkpoint(tmp_path / "run" / "checkpoints")
    newest.write_bytes(newest.read_bytes()[:-1] + b"x")
    with pytest.raises(ValueError, match=r"is corrupt.*newest valid older checkpoint") as caught:
        decouple(tmp_path / "run", _options("tau_norm", tmp_path / "t", tau=0.0), log=_quiet)
    assert "--fallback-checkpoint" not in str(caught.value)


def _npz_files(folder: Path, seed: int, test_per_class: int = 6) -> None:
    rng = np.random.default_rng(seed)
    templates = _templates(rng)
    folder.mkdir(parents=True, exist_ok=True)
    for name, per_class in (("train", TRAIN), ("test", [test_per_class] * len(TRAIN))):
        y = np.repeat(np.arange(len(TRAIN)), per_class)
        x = np.clip(templates[y] + rng.normal(0, 25, (len(y), SIZE, SIZE, 3)), 0, 255)
        np.savez(folder / f"{name}.npz", x=x.astype(np.uint8), y=y)


@pytest.fixture(scope="module")
def relative_run(tmp_path_factory) -> Path:
    """A run trained from its data folder with relative data paths (as a user types them)."""
    root = tmp_path_factory.mktemp("relative")
    _npz_files(root / "data", seed=5)
    cwd = os.getcwd()
    os.chdir(root / "data")
    try:
        cfg = TrainConfig(
            dataset="npz", train_data="train.npz", test_data="test.npz", model="resnet8",
            epochs=1, batch_size=8, device="cpu", progress=False, out=str(root / "run"), seed=3,
        )  # fmt: skip
        train(cfg, log=_quiet)
    finally:
        os.chdir(cwd)
    return root / "run"


def test_decouple_reads_the_runs_recorded_data_from_any_folder(relative_run, tmp_path, monkeypatch):
    _npz_files(tmp_path, seed=99, test_per_class=2)  # other data under the same names here
    monkeypatch.chdir(tmp_path)
    metrics = decouple(relative_run, _options("tau_norm", tmp_path / "t0", tau=0.0), log=_quiet)
    stage_one = json.loads((relative_run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["num_test_images"] == stage_one["num_test_images"] == 24
    assert metrics["per_class_accuracy"] == stage_one["per_class_accuracy"]
    assert evaluate_run(tmp_path / "t0", device="cpu")["accuracy"] == metrics["accuracy"]


def test_data_changed_since_stage_one_is_refused(relative_run, tmp_path):
    data = relative_run.parent / "data"
    for name in ("test", "train"):
        original = (data / f"{name}.npz").read_bytes()
        arrays = dict(np.load(data / f"{name}.npz"))
        arrays["x"] = 255 - arrays["x"]  # same classes and counts, other images
        np.savez(data / f"{name}.npz", **arrays)
        try:
            with pytest.raises(ValueError, match=rf"the data changed since .*{name} data"):
                decouple(relative_run, _options("tau_norm", tmp_path / name, tau=0.0), log=_quiet)
            assert not (tmp_path / name).exists()
            if name == "test":  # accepted on request: the output records the data it used
                from classbalanced.cli import main

                args = ["decouple", str(relative_run), "--method", "tau_norm", "--tau", "0"]
                args += ["--out", str(tmp_path / name), "--device", "cpu"]
                assert main([*args, "--accept-data-change"]) == 0
                evaluate_run(tmp_path / name, device="cpu")  # no --accept-data-change needed
        finally:
            (data / f"{name}.npz").write_bytes(original)


def test_a_batch_larger_than_the_training_set_still_trains(list_run, tmp_path):
    """37 training images, batch 64: the batch shrinks to the data (as in memory), so the
    new classifier is trained, not left at its random initialisation."""
    metrics = decouple(
        list_run, _options("crt", tmp_path / "crt", epochs=1, batch_size=64), log=_quiet
    )
    info = metrics["decouple"]
    assert info["batch_size"] == 37 and info["train_loss"][0] > 0


def test_a_decouple_run_is_not_a_stage_one_run(npz_run, tmp_path):
    decouple(npz_run, _options("tau_norm", tmp_path / "t", tau=0.5), log=_quiet)
    with pytest.raises(ValueError, match=r"holds a tau_norm stage two of .*: decouple .* itself"):
        decouple(tmp_path / "t", _options("crt", tmp_path / "again"), log=_quiet)


def test_decouple_under_torchrun_is_refused(npz_run, tmp_path, monkeypatch):
    """Each of torchrun's processes would run all of stage two and write the same folder."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ValueError, match=r"decouple runs in one process: .* WORLD_SIZE=2"):
        decouple(npz_run, _options("tau_norm", tmp_path / "t", tau=0.5), log=_quiet)
    assert not (tmp_path / "t").exists()
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun with one process is one process
    monkeypatch.setenv("RANK", "0")
    decouple(npz_run, _options("tau_norm", tmp_path / "t", tau=0.5), log=_quiet)


def test_report_leaves_out_a_stage_one_run_retrained_since(npz_run, tmp_path):
    from classbalanced.reproduce.decoupling import decoupling_rows

    run = _copy_run(npz_run, tmp_path / "s1")
    decouple(run, _options("tau_norm", tmp_path / "s1_tau", tau=0.5), log=_quiet)
    rows, notes = decoupling_rows(tmp_path)
    assert [r["method"] for r in rows] == ["joint", "tau_norm"] and notes == []
    assert rows[0]["name"] == "s1"  # named like the other rows: relative to the report folder
    cfg = json.loads((run / "config.json").read_text(encoding="utf-8"))
    cfg.update(out=str(run), epochs=1, eval_every=1, warmup_epochs=0, seed=7, overwrite=True)
    train(TrainConfig.from_dict(cfg), log=_quiet)  # stage one replaced by another network
    rows, notes = decoupling_rows(tmp_path)
    assert [r["method"] for r in rows] == ["tau_norm"]  # no joint row of another network
    assert len(notes) == 1 and "changed since it was decoupled" in notes[0]


def test_options_of_another_method_are_refused(npz_run, tmp_path):
    """Silently ignored, they would also be recorded in decouple.json as if used."""
    cases = [
        ("tau_norm", {"tau": 1.0, "loss": "focal"}, r"--loss applies to crt and lws, not tau_norm"),
        ("tau_norm", {"tau": 1.0, "epochs": 3}, r"--epochs applies to crt and lws"),
        ("tau_norm", {"tau": 1.0, "taus": [0.5, 1.0]}, r"--tau and --taus: expected one of them"),
        ("crt", {"tau": 1.0}, r"--tau applies to tau_norm, not crt"),
        ("lws", {"taus": [0.5]}, r"--taus applies to tau_norm, not lws"),
        ("crt", {"tau_bias": "drop"}, r"--tau-bias applies to tau_norm, not crt"),
        ("tau_norm", {"tau": 1.0, "tau_bias": "none"}, r"tau_bias must be keep or drop"),
    ]
    for method, kw, message in cases:
        with pytest.raises(ValueError, match=message):
            decouple(npz_run, _options(method, tmp_path / "x", **kw), log=_quiet)
    assert not (tmp_path / "x").exists()


def test_the_tau_grid_is_searched_in_order_smallest_first_on_ties(list_run, tmp_path):
    opts = _options("tau_norm", tmp_path / "tau", taus=[2.0, 0.5, 0.5, 0.0])
    info = decouple(list_run, opts, log=_quiet)["decouple"]
    assert [r["tau"] for r in info["tau_search"]] == [0.0, 0.5, 2.0]
    best = max(r["accuracy"] for r in info["tau_search"])
    assert info["tau"] == min(r["tau"] for r in info["tau_search"] if r["accuracy"] == best)


def test_report_skips_a_damaged_decouple_run_with_a_note(npz_run, tmp_path):
    from classbalanced.reproduce.decoupling import decoupling_rows

    decouple(npz_run, _options("tau_norm", tmp_path / "good", tau=0.5), log=_quiet)
    decouple(npz_run, _options("tau_norm", tmp_path / "bad", tau=1.0), log=_quiet)
    path = tmp_path / "bad" / "metrics.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "accuracy": "oops"}))
    rows, notes = decoupling_rows(tmp_path)
    assert [r["name"] for r in rows if r["method"] == "tau_norm"] == ["good"]
    assert notes == [
        "bad: metrics.json is damaged (accuracy is 'oops', expected a finite number), skipped"
    ]
    path.write_text(json.dumps({**json.loads(path.read_text()), "accuracy": float("nan")}))
    rows, notes = decoupling_rows(tmp_path)  # (NaN was printed as 'nan', its diff too)
    assert [r["name"] for r in rows if r["method"] == "tau_norm"] == ["good"]
    assert notes == [
        "bad: metrics.json is damaged (accuracy is nan, expected a finite number), skipped"
    ]
    stage_one = _copy_run(npz_run, tmp_path / "s1")  # a damaged stage one: no joint row
    decouple(stage_one, _options("tau_norm", tmp_path / "s1_t", tau=0.5), log=_quiet)
    path = stage_one / "metrics.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "few_shot_accuracy": [1]}))
    rows, notes = decoupling_rows(tmp_path)
    assert "s1" not in [r["name"] for r in rows]
    assert "s1: metrics.json damaged, no joint row" in notes


def _spy_on_training(monkeypatch) -> list[dict]:
    """Record what each stage-two training is given: its loss and the labels it trains on."""
    import classbalanced.decouple.fitting as module

    seen, fit = [], module.fit

    def spy(head, params, backbone, stream, loss_fn, ctx):
        labels = [y for e in range(ctx["options"].epochs) for _, y in stream.epoch(e)]
        seen.append({"loss_fn": loss_fn, "labels": torch.cat(labels).cpu().numpy()})
        return fit(head, params, backbone, stream, loss_fn, ctx)

    monkeypatch.setattr(module, "fit", spy)
    return seen


def test_crt_and_lws_train_on_class_balanced_batches(npz_run, tmp_path, monkeypatch):
    seen = _spy_on_training(monkeypatch)
    for method in ("crt", "lws"):
        for sampler in ("class_uniform", "shuffle"):
            opts = _options(method, tmp_path / f"{method}_{sampler}", epochs=4, sampler=sampler)
            decouple(npz_run, opts, log=_quiet)
    for record, sampler in zip(seen, ["class_uniform", "shuffle"] * 2, strict=True):
        drawn = np.bincount(record["labels"], minlength=len(TRAIN))
        n = drawn.sum()  # 4 epochs of 37 images (batch 8: 4 full batches each)
        if sampler == "class_uniform":  # each class a quarter, binomial spread
            assert np.all(np.abs(drawn - n / 4) < 4 * np.sqrt(n * 3 / 16)), drawn
        else:  # the training set's own long tail, each image once per epoch
            assert drawn[0] > 0.5 * n and drawn[3] <= 4 * TRAIN[3], drawn


def test_stage_two_uses_the_class_balanced_loss_asked_for(npz_run, tmp_path, monkeypatch):
    from classbalanced.losses import build_loss

    seen = _spy_on_training(monkeypatch)
    opts = _options("crt", tmp_path / "cb", epochs=1, loss="focal", beta=0.999, gamma=0.5)
    decouple(npz_run, opts, log=_quiet)
    counts = json.loads((npz_run / "subset.json").read_text())["counts"]
    logits, y = torch.randn(16, 4, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 4
    expected = build_loss("focal", counts, beta=0.999, gamma=0.5)(logits, y)
    assert torch.allclose(seen[0]["loss_fn"](logits, y), expected)
    assert not torch.allclose(expected, build_loss("softmax", counts)(logits, y))


def test_a_stage_one_trained_with_a_class_balanced_loss(npz_run, tmp_path):
    cfg = json.loads((npz_run / "config.json").read_text(encoding="utf-8"))
    cfg.update(out=str(tmp_path / "cb"), loss="focal", beta=0.999, gamma=0.5, epochs=1)
    cfg.update(eval_every=1, warmup_epochs=0)
    train(TrainConfig.from_dict(cfg), log=_quiet)
    metrics = decouple(tmp_path / "cb", _options("tau_norm", tmp_path / "t0", tau=0.0), log=_quiet)
    stage_one = json.loads((tmp_path / "cb" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["per_class_accuracy"] == stage_one["per_class_accuracy"]
    assert metrics["loss"] == "focal" and metrics["beta"] == 0.999  # the stage-one settings
    before = _state(tmp_path / "cb")
    decouple(tmp_path / "cb", _options("crt", tmp_path / "crt", epochs=1), log=_quiet)
    after = _state(tmp_path / "crt")
    assert all(torch.equal(after[k], v) for k, v in before.items() if not k.startswith("fc."))


def test_report_does_not_replace_a_users_report_md(npz_run, tmp_path):
    from classbalanced.reproduce.report import write_report

    decouple(npz_run, _options("tau_norm", tmp_path / "t", tau=0.5), log=_quiet)
    write_report(tmp_path)
    write_report(tmp_path)  # its own report.md is replaced
    mine = tmp_path / "notes" / "report.md"
    decouple(npz_run, _options("tau_norm", tmp_path / "notes" / "t", tau=0.5), log=_quiet)
    mine.write_text("# My notes on these runs\n")
    with pytest.raises(ValueError, match=r"report.md exists and is not a report of classbalanced"):
        write_report(tmp_path / "notes")
    assert mine.read_text() == "# My notes on these runs\n"


def test_a_bad_stage_two_loss_is_refused_before_the_data_load(npz_run, tmp_path, monkeypatch):
    import classbalanced.decouple.data as module

    def no_data(*args):
        raise AssertionError("the data were loaded before the loss was checked")

    monkeypatch.setattr(module, "memory_data", no_data)
    with pytest.raises(ValueError, match=r"unknown loss 'nope'"):
        decouple(npz_run, _options("crt", tmp_path / "x", loss="nope"), log=_quiet)


def test_a_missing_folder_or_a_file_is_named_as_such(npz_run, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope does not exist: expected a finished run"):
        decouple(tmp_path / "nope", _options("crt", tmp_path / "x"), log=_quiet)
    with pytest.raises(ValueError, match=r"metrics.json is a file: expected a finished run folder"):
        decouple(npz_run / "metrics.json", _options("crt", tmp_path / "x"), log=_quiet)


def test_report_of_a_folder_without_sweep_or_decouple_runs_says_what_it_looked_for(
    npz_run, tmp_path
):
    from classbalanced.reproduce.report import write_report

    _copy_run(npz_run, tmp_path / "runs" / "s1")  # an ordinary run only
    with pytest.raises(FileNotFoundError, match=r"no results.csv .* and no decouple run"):
        write_report(tmp_path / "runs")
    assert not (tmp_path / "runs" / "report.md").exists()


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"lr": 1e39}, "lr must be > 0 and at most 3.403e+38"),
        ({"lr": float("nan")}, "lr must be > 0"),
        ({"weight_decay": 1e308}, "weight_decay must be >= 0 and at most 3.403e+38"),
        ({"momentum": float("nan")}, "momentum must be in [0, 1)"),
        ({"momentum": -0.5}, "momentum must be in [0, 1)"),
        ({"momentum": 1.0}, "momentum must be in [0, 1), got 1.0"),
        ({"gamma": 1e39}, "gamma must be >= 0 and at most"),
    ],
)
def test_stage_two_numbers_beyond_float32_are_refused_with_one_line(changes, fragment):
    """(1e39 used to reach SGD and end as PyTorch's 'cannot be converted to float')."""
    with pytest.raises(ValueError) as info:
        DecoupleOptions(method="crt", out="x", **changes).validate()
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_num_workers_for_a_run_held_in_memory_is_refused_not_ignored(npz_run, tmp_path):
    with pytest.raises(ValueError, match="--num-workers applies to image-file data sets, not npz"):
        decouple(npz_run, _options("crt", tmp_path / "w", num_workers=2), log=_quiet)
    assert not (tmp_path / "w").exists()


class _NoBiasNet(torch.nn.Module):
    """A registered model whose classifier has no bias (``nn.Linear(..., bias=False)``)."""

    def __init__(self, num_classes: int, *, in_channels: int = 3) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in_channels * 64, 8))
        self.fc = torch.nn.Linear(8, num_classes, bias=False)

    def forward(self, x):
        return self.fc(self.body(x))


def test_a_classifier_without_bias_stays_without_bias(tmp_path):
    """cRT gave it a bias: a checkpoint that `evaluate` could not load into the run's model;
    the tau search added ``None`` to its logits."""
    import contextlib

    from classbalanced.decouple.data import StageTwoData as _Data
    from classbalanced.decouple.fitting import tau_norm as _tau_norm
    from classbalanced.models.registry import MODEL_REGISTRY, register_model

    rng = np.random.default_rng(0)
    for name, per_class in (("train", [8, 4, 2]), ("test", [3, 3, 3])):
        y = np.repeat(np.arange(3), per_class)
        x = rng.integers(0, 256, (len(y), 8, 8, 3), dtype=np.uint8)
        np.savez(tmp_path / f"{name}.npz", x=x, y=y)
    register_model("test_no_bias", _NoBiasNet)
    try:
        cfg = TrainConfig(
            dataset="npz", train_data=str(tmp_path / "train.npz"), model="test_no_bias",
            test_data=str(tmp_path / "test.npz"), epochs=1, batch_size=4, device="cpu",
            progress=False, out=str(tmp_path / "run"),
        )  # fmt: skip
        train(cfg, log=_quiet)
        for method in ("crt", "lws"):
            opts = _options(method, tmp_path / method, epochs=1)
            metrics = decouple(tmp_path / "run", opts, log=_quiet)
            assert set(_state(tmp_path / method)) == set(_state(tmp_path / "run"))
            again = evaluate_run(tmp_path / method, device="cpu")
            assert again["per_class_accuracy"] == metrics["per_class_accuracy"]
    finally:
        MODEL_REGISTRY.pop("test_no_bias")
    fc = torch.nn.Linear(5, 3, bias=False)
    feats = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(12) % 3
    data = _Data(labels.numpy(), None, lambda split: iter([(feats, labels)]), "test", "val", {})
    ctx = {"options": _options("tau_norm", tmp_path / "t"), "cast": contextlib.nullcontext()}
    head, info = _tau_norm(None, torch.nn.Identity(), fc, data, {**ctx, "log": _quiet})
    assert head.bias is None
    for row in info["tau_search"]:  # each tau's accuracy: argmax of f . w_i / ||w_i||^tau
        w = fc.weight.detach().double()
        logits = feats.double() @ (w / w.norm(dim=1, keepdim=True) ** row["tau"]).T
        assert row["accuracy"] == float((logits.argmax(1) == labels).double().mean())


def test_published_numbers_only_beside_runs_of_kang_et_als_recipe(npz_run, tmp_path):
    """Kang et al.'s numbers are for softmax cross-entropy (beta 0) with shuffled batches in
    stage one and with class-balanced batches in cRT / LWS (and an ImageNet-pretrained
    network on Places-LT): they used to appear beside a run of any loss and sampler."""
    from classbalanced.reproduce.decoupling import decoupling_lines
    from classbalanced.reproduce.published import published_decoupling

    out = tmp_path / "two"
    decouple(npz_run, _options("tau_norm", out / "tau", tau=0.5, tau_bias="drop"), log=_quiet)
    # crt and lws runs: its copies, their decouple.json as `decouple` writes it for
    # `crt --loss focal --beta 0.9` and `lws --sampler shuffle` (the report reads nothing else)
    settings = json.loads((out / "tau" / DECOUPLE_FILE).read_text(encoding="utf-8"))
    options = {**settings["options"], "tau": None, "tau_bias": "keep"}
    for name, method, changed in (
        ("focal", "crt", {"loss": "focal", "beta": 0.9}),
        ("shuffle|lws", "lws", {"sampler": "shuffle"}),  # '|': escaped in the table
    ):
        _copy_run(out / "tau", out / name)
        written = {**settings, "method": method}
        written["options"] = {**options, "method": method, **changed}
        (out / name / DECOUPLE_FILE).write_text(json.dumps(written), encoding="utf-8")
    assert DecoupleOptions(**{**written["options"], "out": "x"}) == _options(
        "lws", "x", sampler="shuffle"
    )  # (the options as written: those of a real run)
    for name in ("focal", "shuffle|lws", "tau"):
        _relabel(out / name, dataset="imagenet_lt", model="resnext50", epochs=90)

    def published_cells() -> dict[str, str]:
        return {m: cells[6] for m, cells in _table(text).items()}

    text = "\n".join(decoupling_lines(out))
    pub = published_decoupling("imagenet_lt", "resnext50", "tau_norm", 90)
    assert published_cells() == {"joint": "-", "crt": "-", "tau_norm": _cells(pub), "lws": "-"}
    assert "focal: stage two's loss focal, beta 0.9" in text
    assert "shuffle|lws: stage two's sampler shuffle" in text
    assert _table(text)["lws"][0] == r"shuffle\|lws" and len(_table(text)["lws"]) == 8
    # a stage one trained with another loss (or sampler): no published stage-two row either
    _relabel(out / "tau", loss="sigmoid", beta=0.99)
    text = "\n".join(decoupling_lines(out))
    assert (
        published_cells()["tau_norm"] == "-" and "tau: stage one's loss sigmoid, beta 0.99" in text
    )
    _relabel(out / "tau", loss="softmax", beta=0.0)
    config = json.loads((out / "tau" / "config.json").read_text(encoding="utf-8"))
    (out / "tau" / "config.json").write_text(json.dumps({**config, "sampler": "class_balanced"}))
    text = "\n".join(decoupling_lines(out))
    assert published_cells()["tau_norm"] == "-"
    assert "tau: stage one's sampler class_balanced" in text
    # Places-LT's numbers are those of an ImageNet-pretrained network
    (out / "tau" / "config.json").write_text(json.dumps(config))
    _relabel(out / "tau", dataset="places_lt", model="resnet152", epochs=30)
    text = "\n".join(decoupling_lines(out))
    assert published_cells()["tau_norm"] == "-" and "tau: stage one not ImageNet-pretrained" in text
    (out / "tau" / "config.json").write_text(json.dumps({**config, "pretrained": True}))
    text = "\n".join(decoupling_lines(out))
    pub = published_decoupling("places_lt", "resnet152", "tau_norm", 30)
    assert published_cells()["tau_norm"] == _cells(pub)
    # the benchmark's own training set: --imbalance-factor 10 sub-samples it
    _relabel(out / "tau", imbalance_factor=10.0)
    text = "\n".join(decoupling_lines(out))
    assert published_cells()["tau_norm"] == "-"
    assert "tau: stage one's training set sub-sampled (imbalance factor 10)" in text
    # tau-normalised logits with the bias kept (our default): not the release's recipe
    _relabel(out / "tau", imbalance_factor=1.0)
    text = "\n".join(decoupling_lines(out))
    assert published_cells()["tau_norm"] == _cells(pub)
    written = json.loads((out / "tau" / DECOUPLE_FILE).read_text(encoding="utf-8"))
    written["options"]["tau_bias"] = "keep"
    (out / "tau" / DECOUPLE_FILE).write_text(json.dumps(written), encoding="utf-8")
    text = "\n".join(decoupling_lines(out))
    assert (
        published_cells()["tau_norm"] == "-" and "tau: tau_norm keeps the classifier's bias" in text
    )


@pytest.mark.parametrize(
    ("split", "kw", "message"),
    [
        ("val", {}, r"no readable image in the val split to choose tau on"),
        ("test", {"tau": 0.0}, r"no readable image in the test split to evaluate"),
    ],
)
def test_a_split_without_a_readable_image_is_named(list_run, tmp_path, split, kw, message):
    """(Its images moved away since `prepare`: the tau search ended in torch.cat's 'expected
    a non-empty list of Tensors', an internal error; the evaluation wrote a run with a test
    error of 100% on 0 images.)"""
    import warnings

    data_dir = Path(json.loads((list_run / "config.json").read_text())["data_dir"])
    images = data_dir / "images" / split
    images.rename(tmp_path / split)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one 'skipping unreadable image' per image
            with pytest.raises(ValueError, match=message):
                decouple(list_run, _options("tau_norm", tmp_path / "t", **kw), log=_quiet)
    finally:
        (tmp_path / split).rename(images)
    assert not (tmp_path / "t").exists()


def test_stage_two_weight_decay_spares_the_biases_stage_one_spares(npz_run, tmp_path, monkeypatch):
    """The prior-initialised bias of a sigmoid-family classifier is not decayed (Cui et al.,
    Sec. 3; the trainer's parameter groups), nor every bias with the run's
    --no-decay-bias-and-norm; cRT decayed the whole new classifier."""
    import classbalanced.decouple.fitting as module

    seen = []

    class Seen(Exception):
        pass

    def spy(head, groups, *rest):  # what the optimiser would decay, and nothing trained
        decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
        seen.append({name: decay.get(id(p)) for name, p in head.named_parameters()})
        raise Seen

    monkeypatch.setattr(module, "fit", spy)
    run = _copy_run(npz_run, tmp_path / "s1")
    cases = [
        (npz_run, "crt", {"loss": "focal", "beta": 0.9}),
        (npz_run, "crt", {}),
        (npz_run, "lws", {}),
        (run, "crt", {}),  # made a run of the large-scale recipe below
    ]
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    (run / "config.json").write_text(json.dumps({**config, "no_decay_bias_and_norm": True}))
    for stage_one, method, kw in cases:
        with pytest.raises(Seen):
            opts = _options(method, tmp_path / "x", weight_decay=0.01, **kw)
            decouple(stage_one, opts, log=_quiet)
    assert seen == [
        {"weight": 0.01, "bias": 0.0},  # focal: the prior bias is not decayed
        {"weight": 0.01, "bias": 0.01},  # softmax: as stage one, everything is
        {"scales": 0.01, "linear.weight": None, "linear.bias": None},  # LWS: s alone trains
        {"weight": 0.01, "bias": 0.0},  # --no-decay-bias-and-norm: no bias decayed
    ]


# --------------------------------------------------------------------------- the release's defaults


def _ctx_for(method: str, dataset: str, **given):
    from types import SimpleNamespace

    from classbalanced.decouple.stage_two import context

    cfg = SimpleNamespace(dataset=dataset, lr=0.05, weight_decay=1e-4, batch_size=8)
    run = SimpleNamespace(cfg=cfg)
    data = SimpleNamespace(labels=np.zeros(100))
    return context(run, DecoupleOptions(method=method, out="x", **given), data)


@pytest.mark.parametrize(
    ("method", "dataset", "epochs", "lr"),
    [
        ("crt", "imagenet_lt", 10, 0.2),
        ("crt", "places_lt", 10, 0.1),
        ("crt", "inat2018", 30, 0.2),
        ("lws", "imagenet_lt", 5, 0.2),
        ("lws", "inat2018", 5, 0.2),
        ("lws", "places_lt", 5, 0.1),
        ("crt", "npz", 10, 0.05),  # elsewhere: the stage-one run's lr
    ],
)
def test_stage_two_defaults_are_the_releases(method, dataset, epochs, lr):
    ctx = _ctx_for(method, dataset)
    assert (ctx["epochs"], ctx["lr"], ctx["backbone_bn"]) == (epochs, lr, "eval")
    given = _ctx_for(method, dataset, epochs=3, lr=0.7)
    assert (given["epochs"], given["lr"]) == (3, 0.7)  # a given value wins
    assert DecoupleOptions(method=method, out="x").sampler == "class_aware"


def test_decouple_help_states_the_per_method_epochs():
    env = dict(os.environ, COLUMNS="300")
    out = subprocess.run(
        [sys.executable, "-m", "classbalanced", "decouple", "--help"],
        capture_output=True, text=True, env=env, timeout=120,
    ).stdout  # fmt: skip
    line = next(line for line in out.splitlines() if "--epochs" in line and "crt" in line)
    assert "crt 10 (30 on iNaturalist 2018), lws 5" in line
    assert "class_aware" in out and "--backbone-bn" in out


def test_every_stage_two_sampler_name_has_a_sampler():
    from classbalanced.decouple.options import SAMPLERS
    from classbalanced.decouple.samplers import SAMPLER_BUILDERS, stage_two_sampler
    from classbalanced.sampling import ClassAwareSampler, ClassUniformSampler

    assert set(SAMPLER_BUILDERS) == set(SAMPLERS)
    labels = [0, 0, 0, 1]
    assert isinstance(stage_two_sampler("class_aware", labels, 0), ClassAwareSampler)
    assert stage_two_sampler("class_aware", labels, 0).per_class == 4  # the release's
    assert isinstance(stage_two_sampler("class_uniform", labels, 0), ClassUniformSampler)
    assert stage_two_sampler("shuffle", labels, 0) is None


def test_crt_trains_on_the_class_aware_draw_by_default(npz_run, tmp_path, monkeypatch):
    seen = _spy_on_training(monkeypatch)
    decouple(npz_run, _options("crt", tmp_path / "crt", epochs=2), log=_quiet)
    drawn = np.bincount(seen[0]["labels"], minlength=len(TRAIN))
    # 2 epochs of max(TRAIN) x 4 = 96 draws, batch 8: 12 batches each, every class a quarter
    assert drawn.tolist() == [48] * 4


def test_backbone_bn_eval_keeps_the_backbone_and_train_moves_its_statistics(npz_run, tmp_path):
    before = _state(npz_run)
    for mode in ("eval", "train"):
        opts = _options("crt", tmp_path / mode, epochs=1, backbone_bn=mode)
        metrics = decouple(npz_run, opts, log=_quiet)
        assert metrics["decouple"]["backbone_bn"] == mode
        after = _state(tmp_path / mode)
        backbone = [k for k in before if not k.startswith("fc.")]
        same = [k for k in backbone if torch.equal(after[k], before[k])]
        if mode == "eval":
            assert same == backbone  # every tensor bit-identical
        else:  # the weights stay, batch norm's running statistics move
            moved = set(backbone) - set(same)
            assert moved and all("running_" in k or "num_batches" in k for k in moved), moved
            assert evaluate_run(tmp_path / mode, device="cpu")["accuracy"] == metrics["accuracy"]


def test_the_epoch_kept_is_the_best_on_val_or_the_last(list_run, npz_run, tmp_path):
    info = decouple(list_run, _options("crt", tmp_path / "c", epochs=4, lr=1.0), log=_quiet)[
        "decouple"
    ]
    scores = info["val_accuracy"]
    assert len(scores) == 4 and info["epoch_chosen_on"] == "val"
    assert info["epoch_kept"] == int(np.argmax(scores)) + 1  # the first best
    feats, labels, _, _ = _split_features(list_run, "val")
    kept = _state(tmp_path / "c")
    logits = feats @ kept["fc.weight"].double().T + kept["fc.bias"].double()
    assert float((logits.argmax(1) == labels).double().mean()) == pytest.approx(max(scores))
    record = json.loads((tmp_path / "c" / "run.json").read_text(encoding="utf-8"))["data"]
    assert record["val"] == info["epoch_data"] and info["epoch_data"]["fingerprint"]["images"] == 12
    info = decouple(npz_run, _options("lws", tmp_path / "l", epochs=2), log=_quiet)["decouple"]
    assert info["epoch_kept"] == 2 and info["epoch_chosen_on"] == "last (no validation list)"
    assert info["epochs"] == 2 and "val_accuracy" not in info
