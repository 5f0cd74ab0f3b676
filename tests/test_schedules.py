import json

import pytest
import torch

from classbalanced.config import TrainConfig
from classbalanced.engine.trainer import train
from classbalanced.schedules import ReweightSchedule
from classbalanced.weights import class_balanced_weights

COUNTS = [500, 120, 30, 7]


def test_constant_is_class_balanced_every_epoch():
    s = ReweightSchedule("constant", COUNTS, 0.99)
    for epoch in (0, 5, 500):
        torch.testing.assert_close(s.weight_at(epoch), class_balanced_weights(COUNTS, 0.99))


def test_drw_switches_on_at_start_epoch():
    s = ReweightSchedule("drw", COUNTS, 0.9999, start_epoch=160)
    assert all(s.weight_at(e) is None for e in (0, 1, 159))
    for e in (160, 199):
        torch.testing.assert_close(s.weight_at(e), class_balanced_weights(COUNTS, 0.9999))


def test_ramp_grows_the_volume_geometrically():
    beta, start = 0.9999, 10
    s = ReweightSchedule("ramp", COUNTS, beta, start_epoch=start)
    assert s.beta_at(0) == 0.0 and s.beta_at(start) == beta and s.beta_at(50) == beta
    volumes = [1 / (1 - s.beta_at(e)) for e in range(start + 1)]
    ratios = [b / a for a, b in zip(volumes, volumes[1:], strict=False)]
    # N_e = N ** (e / start): constant ratio N ** (1 / start) between epochs
    assert ratios == pytest.approx([(1 / (1 - beta)) ** (1 / start)] * start, rel=1e-6)
    assert torch.equal(s.weight_at(0), torch.ones(4))
    # rare classes gain weight monotonically during the ramp
    rare = [float(s.weight_at(e)[-1]) for e in range(start + 1)]
    assert all(b >= a for a, b in zip(rare, rare[1:], strict=False))


def test_ramp_ends_exactly_at_beta():
    """1 - (1 - beta) ** 1 is not beta below 0.5 (0.09999999999999998 for 0.1)."""
    for beta in (0.1, 0.3, 0.9999):
        s = ReweightSchedule("ramp", COUNTS, beta, start_epoch=4)
        assert s.beta_at(4) == beta and s.beta_at(9) == beta
        assert torch.equal(s.weight_at(4), class_balanced_weights(COUNTS, beta))


def test_epochs_are_checked_and_numpy_integers_accepted():
    """A negative epoch gave the ramp a negative beta (then a confusing beta error), a
    float epoch passed, and a numpy integer start_epoch was refused as not an integer."""
    np = pytest.importorskip("numpy")
    s = ReweightSchedule("ramp", COUNTS, 0.99, start_epoch=np.int64(4))
    assert s.start_epoch == 4 and s.beta_at(np.int64(4)) == 0.99
    for kind in ("constant", "drw", "ramp"):
        schedule = ReweightSchedule(kind, COUNTS, 0.99, start_epoch=4)
        with pytest.raises(ValueError, match="epoch must be an integer >= 0, got -1"):
            schedule.weight_at(-1)
        with pytest.raises(TypeError, match="epoch must be an integer >= 0, got 3.5"):
            schedule.beta_at(3.5)
    with pytest.raises(TypeError, match="start_epoch must be an integer >= 0, got '4'"):
        ReweightSchedule("drw", COUNTS, 0.99, start_epoch="4")


@pytest.mark.parametrize(
    "kind, beta, start, error",
    [
        ("late", 0.9, 1, "unknown reweight schedule 'late'"),
        ("drw", 1.0, 1, "beta"),
        ("drw", 0.9, -1, "start_epoch"),
    ],
)
def test_bad_schedules(kind, beta, start, error):
    with pytest.raises(ValueError, match=error):
        ReweightSchedule(kind, COUNTS, beta, start_epoch=start)


def _run(tmp_path, name, **overrides):
    cfg = TrainConfig(
        dataset="digits",
        imbalance_factor=10,
        model="simple_cnn",
        loss="softmax",
        epochs=3,
        batch_size=64,
        pad=1,
        flip=False,
        eval_every=3,
        device="cpu",
        progress=False,
        out=str(tmp_path / name),
        **overrides,
    )
    train(cfg, log=lambda _: None)
    metrics = json.loads((tmp_path / name / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k not in ("train_images_per_second", "beta")}


@pytest.mark.slow
def test_trainer_applies_the_schedule(tmp_path):
    unweighted = _run(tmp_path, "plain", beta=0.0)
    weighted = _run(tmp_path, "cb", beta=0.999)
    with pytest.raises(ValueError, match="never switch on"):  # a silent no-op: refused
        _run(tmp_path, "drw_late", beta=0.999, reweight_schedule="drw", reweight_epoch=3)
    assert not (tmp_path / "drw_late").exists()
    at_once = _run(tmp_path, "drw_now", beta=0.999, reweight_schedule="drw", reweight_epoch=0)
    drop = ("reweight_schedule",)
    assert {k: v for k, v in at_once.items() if k not in drop} == weighted
    assert weighted["train_loss"] != unweighted["train_loss"]


def test_cosine_lr_matches_the_closed_form():
    """Warm-up (s + 1) / W, then base (1 + cos(pi (s - W) / (T - W))) / 2 in float64."""
    import math

    from classbalanced.schedules import LRSchedule

    base, warmup, epochs, spe = 0.2, 2, 9, 7
    s = LRSchedule(base, warmup, (), (), spe, kind="cosine", epochs=epochs)
    w, t = warmup * spe, epochs * spe
    for step in range(t + 1):
        if step < w:
            expected = base * (step + 1) / w
        else:
            expected = base * (1 + math.cos(math.pi * (step - w) / (t - w))) / 2
        assert s(step) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert s(w) == base and s(t) == 0.0 and s(t + 50) == 0.0  # to 0, never back up
    lrs = [s(k) for k in range(w, t + 1)]
    assert all(b < a for a, b in zip(lrs, lrs[1:], strict=False))


def test_lr_schedule_is_checked():
    from classbalanced.schedules import LRSchedule

    with pytest.raises(ValueError, match="unknown lr schedule 'linear'"):
        LRSchedule(0.1, 0, (), (), 10, kind="linear", epochs=5)
    with pytest.raises(ValueError, match="epochs > warmup_epochs, got 5 and 5"):
        LRSchedule(0.1, 5, (), (), 10, kind="cosine", epochs=5)


def test_config_cosine_has_no_step_decays():
    cfg = TrainConfig(dataset="digits", epochs=90, lr_schedule="cosine", warmup_epochs=0)
    resolved = cfg.resolved()
    assert (resolved.lr_schedule, resolved.decay_epochs, resolved.decay_factors) == (
        "cosine",
        [],
        [],
    )
    assert resolved.resolved().decay_epochs == []  # a saved config resolves to itself
    assert TrainConfig(dataset="digits", epochs=20).resolved().lr_schedule == "step"
    with pytest.raises(ValueError, match="decay_epochs applies to lr_schedule step only"):
        TrainConfig(dataset="digits", lr_schedule="cosine", decay_epochs=[3]).resolved()
    with pytest.raises(ValueError, match="lr_schedule cosine needs warmup_epochs < epochs"):
        TrainConfig(dataset="digits", epochs=3, lr_schedule="cosine", warmup_epochs=3).resolved()
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(dataset="digits", lr_schedule="linear").resolved()


def _logged_lrs(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder / "tensorboard")).Reload()
    return [e.value for e in events.Scalars("train/learning_rate")]


@pytest.mark.slow
def test_trainer_follows_the_cosine(tmp_path):
    base = 0.05
    _run(tmp_path, "cos", lr=base, lr_schedule="cosine", warmup_epochs=1, decay_epochs=None)
    _run(tmp_path, "step", lr=base, warmup_epochs=1, decay_epochs=[], decay_factors=[])
    cos, step = _logged_lrs(tmp_path / "cos"), _logged_lrs(tmp_path / "step")
    assert step == pytest.approx([base] * 3)
    # end of the warm-up: base; one step short of half way down (above base / 2); near 0
    assert cos[0] == pytest.approx(base) and 0.5 * base < cos[1] < 0.75 * base
    assert 0 < cos[2] < 0.1 * base
