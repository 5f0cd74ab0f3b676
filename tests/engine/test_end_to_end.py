"""End to end on a tiny CIFAR-10-format folder: metrics, subset, TensorBoard, determinism."""

import json
import pickle

import numpy as np
import pytest
import torch

from classbalanced.config import TrainConfig
from classbalanced.data.longtail import longtail_counts
from classbalanced.engine.checkpoint import latest_checkpoint, load_checkpoint
from classbalanced.engine.trainer import train
from classbalanced.models import build_model

PER_CLASS = 40
TIMING = {"train_images_per_second"}


def _write_cifar10(root, seed=0):
    """A learnable CIFAR-10-format folder: per-class colour templates plus noise."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    templates = rng.integers(40, 216, size=(10, 1, 1, 3))

    def images(labels):
        noise = rng.normal(0, 25, size=(len(labels), 32, 32, 3))
        x = np.clip(templates[labels] + noise, 0, 255).astype(np.uint8)
        return x.transpose(0, 3, 1, 2).reshape(len(labels), 3072)

    labels = rng.permutation(np.repeat(np.arange(10), PER_CLASS))
    for b, part in enumerate(np.array_split(labels, 5), start=1):
        batch = {
            b"batch_label": b"training",
            b"labels": part.tolist(),
            b"data": images(part),
            b"filenames": [],
        }
        (folder / f"data_batch_{b}").write_bytes(pickle.dumps(batch, protocol=2))
    test_labels = np.repeat(np.arange(10), 10)
    test = {
        b"batch_label": b"testing",
        b"labels": test_labels.tolist(),
        b"data": images(test_labels),
        b"filenames": [],
    }
    (folder / "test_batch").write_bytes(pickle.dumps(test, protocol=2))
    meta = {b"label_names": [f"c{i}".encode() for i in range(10)], b"num_cases_per_batch": 80}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    return _write_cifar10(tmp_path_factory.mktemp("cifar"))


def _cfg(cifar_dir, out, **overrides):
    values = dict(
        dataset="cifar10",
        data_dir=str(cifar_dir),
        download=False,
        imbalance_factor=4.0,
        model="resnet8",
        loss="focal",
        beta=0.99,
        gamma=1.0,
        epochs=3,
        batch_size=32,
        eval_every=1,
        device="cpu",
        progress=False,
        out=str(out),
    )
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def run(cifar_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "a"
    returned = train(_cfg(cifar_dir, out), log=lambda _: None)
    return out, returned


def test_metrics_file(run):
    out, returned = run
    m = json.loads((out / "metrics.json").read_text())
    assert m == json.loads(json.dumps(returned))
    assert 0 <= m["accuracy"] <= 1
    assert m["error_percent"] == pytest.approx(100 * (1 - m["accuracy"]))
    assert len(m["per_class_accuracy"]) == 10 and m["epoch"] == 3
    assert m["train_images_per_second"] > 0
    counts = np.array(m["train_counts"])
    # the three groups cover the classes by their training counts (> 100, 20-100, < 20)
    assert m["num_many_shot_classes"] == 0 and m["many_shot_accuracy"] is None
    assert m["num_medium_shot_classes"] == int(((counts >= 20) & (counts <= 100)).sum())
    assert m["num_few_shot_classes"] == int((counts < 20).sum()) > 0
    per_class = np.array(m["per_class_accuracy"])
    assert m["few_shot_accuracy"] == pytest.approx(per_class[counts < 20].mean())
    assert m["accuracy"] == pytest.approx(per_class.mean())  # balanced test set: 10 per class


def test_subset_follows_the_formula(run):
    out, _ = run
    subset = json.loads((out / "subset.json").read_text())
    assert subset["counts"] == longtail_counts(PER_CLASS, 10, 4.0)
    assert len(subset["indices"]) == sum(subset["counts"]) == len(set(subset["indices"]))
    config = json.loads((out / "config.json").read_text())
    assert config["warmup_epochs"] == 1 and config["decay_epochs"] == [
        2,
        3,
    ]  # 5, 160, 180 scaled to 3 epochs
    assert config["lr"] == pytest.approx(0.1 * 32 / 128)


def test_accuracy_matches_an_independent_evaluation(run, cifar_dir):
    out, _ = run
    state = load_checkpoint(latest_checkpoint(out / "checkpoints"))
    model = build_model("resnet8", 10)
    model.load_state_dict(state["model"])
    model.eval()
    with open(cifar_dir / "cifar-10-batches-py" / "test_batch", "rb") as f:
        test = pickle.load(f)
    x = np.asarray(test[b"data"], dtype=np.float32).reshape(-1, 3, 32, 32) / 128.0 - 1.0
    y = np.asarray(test[b"labels"])
    with torch.no_grad():
        predicted = model(torch.from_numpy(x)).argmax(1).numpy()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(float((predicted == y).mean()))
    assert metrics["num_test_images"] == len(y)


def test_tensorboard_scalars(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = run
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in (
        "train/learning_rate",
        "train/network_loss",
        "train/regularization_loss",
        "train/epoch",
        "test/accuracy",
    ):
        assert tag in tags
    assert {f"test_per_class_accuracy/class_{i:03d}" for i in range(10)} <= tags
    lr = [(e.step, e.value) for e in events.Scalars("train/learning_rate")]
    base = 0.1 * 32 / 128
    # end of epoch 1: warm-up done; epoch 2: base; epoch 3: x0.01 (decay epoch 2 of 3)
    assert [s for s, _ in lr] == [1, 2, 3]
    assert [v for _, v in lr] == pytest.approx([base, base, base * 0.01])
    accuracy = [e.value for e in events.Scalars("test/accuracy")]
    history = json.loads((out / "history.json").read_text())
    assert accuracy == pytest.approx([h["accuracy"] for h in history])
    assert all(e.value > 0 for e in events.Scalars("train/regularization_loss"))


def test_same_seed_same_metrics_other_seed_other_subset(run, cifar_dir, tmp_path):
    out, _ = run
    train(_cfg(cifar_dir, tmp_path / "b"), log=lambda _: None)
    first = {
        k: v for k, v in json.loads((out / "metrics.json").read_text()).items() if k not in TIMING
    }
    second = {
        k: v
        for k, v in json.loads((tmp_path / "b" / "metrics.json").read_text()).items()
        if k not in TIMING
    }
    assert first == second
    train(_cfg(cifar_dir, tmp_path / "c", seed=1, epochs=1), log=lambda _: None)
    a = json.loads((out / "subset.json").read_text())
    c = json.loads((tmp_path / "c" / "subset.json").read_text())
    assert a["counts"] == c["counts"] and a["indices"] != c["indices"]


def test_gradient_accumulation_equals_the_full_batch(cifar_dir, tmp_path):
    # without batch norm, 2 micro-batches of 16 accumulate exactly the gradient of one batch of 32
    common = dict(model="simple_cnn", epochs=1, loss="softmax", beta=0.0)
    train(_cfg(cifar_dir, tmp_path / "full", **common), log=lambda _: None)
    train(_cfg(cifar_dir, tmp_path / "accum", accumulate_steps=2, **common), log=lambda _: None)
    full = load_checkpoint(latest_checkpoint(tmp_path / "full" / "checkpoints"))
    accum = load_checkpoint(latest_checkpoint(tmp_path / "accum" / "checkpoints"))
    assert full["global_step"] == accum["global_step"]
    for name, tensor in full["model"].items():
        torch.testing.assert_close(accum["model"][name], tensor, rtol=1e-5, atol=1e-6)


def test_accumulation_over_more_batches_than_an_epoch_has_is_refused(tmp_path, capsys):
    from classbalanced import cli

    # digits IF 10 has 534 training images: one batch of 1024 (shrunk to the data) per epoch
    out = tmp_path / "run"
    argv = ["train", "--dataset", "digits", "--imbalance-factor", "10", "--model", "simple_cnn"]
    argv += [
        "--batch-size",
        "1024",
        "--accumulate-steps",
        "2",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--accumulate-steps 2 needs that many batches" in err
    assert not out.exists()  # refused before the folder gets its first byte


def test_ldam_trains_a_cosine_classifier_and_evaluates(cifar_dir, tmp_path):
    from classbalanced.engine.evaluate_run import evaluate_run

    out = tmp_path / "ldam"
    metrics = train(_cfg(cifar_dir, out, loss="ldam", beta=0.999, epochs=2), log=lambda _: None)
    state = load_checkpoint(latest_checkpoint(out / "checkpoints"))
    assert "fc.bias" not in state["model"] and state["model"]["fc.weight"].shape == (10, 64)
    again = evaluate_run(out, device="cpu")  # rebuilds the cosine head from the config
    assert again["accuracy"] == metrics["accuracy"]
