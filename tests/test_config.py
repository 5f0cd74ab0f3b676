"""TrainConfig: files (TOML / YAML), flag precedence, refusals, and resolved() scaling."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from classbalanced import cli
from classbalanced.config import TrainConfig, config_from_sources, load_config_file

TOML = """
dataset = "digits"
imbalance-factor = 20
loss = "focal"
beta = 0.999
gamma = 2.0
epochs = 30
batch_size = 64
decay_epochs = [20, 25]
flip = false
"""

YAML = """
dataset: digits
imbalance-factor: 20
loss: focal
beta: 0.999
gamma: 2.0
epochs: 30
batch_size: 64
decay_epochs: [20, 25]
flip: false
"""

EXPECTED = dict(
    dataset="digits",
    imbalance_factor=20,
    loss="focal",
    beta=0.999,
    gamma=2.0,
    epochs=30,
    batch_size=64,
    decay_epochs=[20, 25],
    flip=False,
)


@pytest.fixture(params=["toml", "yaml", "yml"])
def config_file(request, tmp_path):
    path = tmp_path / f"run.{request.param}"
    path.write_text(TOML if request.param == "toml" else YAML)
    return path


def test_files_load(config_file):
    cfg = config_from_sources(config_file)
    for key, value in EXPECTED.items():
        assert getattr(cfg, key) == value, key
    # everything else keeps its default
    defaults = TrainConfig()
    for key in ("model", "momentum", "weight_decay", "seed", "pad"):
        assert getattr(cfg, key) == getattr(defaults, key)
    assert load_config_file(config_file)["imbalance_factor"] == 20  # dashes -> underscores


def test_flags_override_file_values(config_file):
    cfg = config_from_sources(config_file, {"epochs": 7, "beta": 0.9})
    assert cfg.epochs == 7 and cfg.beta == 0.9
    assert cfg.gamma == 2.0  # not overridden: the file's value
    with pytest.warns(UserWarning, match="decay_epochs 20, 25 lie beyond a run of 7 epochs"):
        resolved = cfg.resolved()
    assert resolved.decay_epochs == [20, 25]  # from the file, not rescaled
    assert resolved.warmup_epochs == max(1, round(5 * 7 / 200))


def test_a_batch_flag_over_a_files_lr_is_a_loud_warning(tmp_path, recwarn):
    """(configs/imagenet_cb_focal.toml sets lr 0.4 for its batch of 1024: --batch-size 256
    kept lr 0.4, four times the recipe's 0.1 per 256 images, without a word.)"""
    path = tmp_path / "c.toml"
    path.write_text('dataset = "digits"\nbatch_size = 1024\nlr = 0.4\n')
    assert config_from_sources(path, {"batch_size": 256}).resolved().lr == 0.4  # kept, as given
    (warning,) = [w for w in recwarn if "lr" in str(w.message)]
    assert "lr 0.4 of" in str(warning.message) and "--batch-size 256" in str(warning.message)
    assert "pass --lr" in str(warning.message)
    recwarn.clear()
    config_from_sources(path, {"batch_size": 256, "lr": 0.1})  # both given: nothing to say
    config_from_sources(path, {"batch_size": 1024})
    (tmp_path / "n.toml").write_text('dataset = "digits"\nbatch_size = 1024\n')
    assert config_from_sources(tmp_path / "n.toml", {"batch_size": 256}).resolved().lr == 0.2
    assert not [w for w in recwarn if "lr" in str(w.message)]


def test_a_flag_overrides_the_file_through_the_cli(tmp_path, capsys):
    file_path = tmp_path / "from_file.npz"
    flag_path = tmp_path / "from_flag.npz"
    config = tmp_path / "c.toml"
    config.write_text(
        f'dataset = "npz"\ntrain_data = "{file_path}"\ntest_data = "{file_path}"\n'
        f'out = "{tmp_path / "run"}"\n'
    )
    code = cli.main(["train", "--config", str(config), "--train-data", str(flag_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert str(flag_path) in err and str(file_path) not in err  # the flag's file was looked for


@pytest.mark.parametrize("suffix", ["toml", "yaml"])
def test_unknown_keys_are_named(tmp_path, suffix, capsys):
    path = tmp_path / f"c.{suffix}"
    sep = " = " if suffix == "toml" else ": "
    path.write_text(f"epochs{sep}3\nlearning_rate{sep}0.1\nimbalance{sep}10\n")
    with pytest.raises(ValueError) as info:
        config_from_sources(path)
    message = str(info.value)
    assert "learning_rate" in message and "imbalance" in message
    assert "epochs," not in message.split(";")[0]  # the known key is not reported as unknown
    code = cli.main(["train", "--config", str(path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "learning_rate" in err and "imbalance" in err
    assert not (tmp_path / "run").exists()


def test_a_sweep_file_given_to_train_says_so(capsys):
    sweep = Path(__file__).resolve().parents[1] / "configs" / "sweeps" / "smoke.toml"
    assert cli.main(["train", "--config", str(sweep)]) == 2
    line = capsys.readouterr().err.strip()
    assert "unknown key(s)" in line and "base, grid, sweep" in line
    assert f"a sweep file: run it with classbalanced sweep --config {sweep}" in line


def test_unknown_keys_in_a_dict_are_named():
    with pytest.raises(ValueError, match="bogus_key"):
        TrainConfig.from_dict({"epochs": 3, "bogus_key": 1})


@pytest.mark.parametrize(
    "text",
    ["epochs = [\n", "= 3\n"],
    ids=["unterminated", "no key"],
)
def test_a_broken_toml_file_is_a_value_error(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match="bad.toml"):
        load_config_file(path)


def test_other_file_kinds_and_missing_files_are_refused(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match="toml"):
        load_config_file(path)
    with pytest.raises(FileNotFoundError):
        load_config_file(tmp_path / "missing.toml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError):
        load_config_file(listing)


def test_a_binary_file_or_a_folder_as_config_file_is_named(tmp_path):
    binary = tmp_path / "c.toml"
    binary.write_bytes(b"\x7fELF\x02\x01\xd0\xff")
    with pytest.raises(
        ValueError, match=r"config file .*c\.toml is not UTF-8 text.*expected a TOML"
    ):
        load_config_file(binary)
    (tmp_path / "d.yaml").mkdir()
    with pytest.raises(ValueError, match=r"config file .*d\.yaml is a folder: expected a file"):
        load_config_file(tmp_path / "d.yaml")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("c.toml", "imbalance-factor = 5\nimbalance_factor = 50\n"),
        ("c.yaml", "imbalance-factor: 5\nimbalance_factor: 50\n"),
        ("c.yaml", "beta: 0.9\nbeta: 0.99\n"),
    ],
    ids=["toml dash and underscore", "yaml dash and underscore", "yaml twice"],
)
def test_a_key_given_twice_in_a_file_is_refused_not_resolved_silently(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=r"c\.(toml|yaml).* (imbalance_factor|beta) .*twice"):
        load_config_file(path)


def test_yaml_numbers_in_exponent_notation_are_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("weight_decay: 2e-4\nlr: 1E-1\nimbalance_factor: +1e2\nmomentum: .9e0\n")
    values = load_config_file(path)
    assert values == {"weight_decay": 2e-4, "lr": 0.1, "imbalance_factor": 100.0, "momentum": 0.9}
    assert config_from_sources(path).resolved().weight_decay == 2e-4


@pytest.mark.parametrize("inverse,factor", [(0.02, 50), (0.01, 100), (0.1, 10)])
def test_an_imbalance_factor_below_one_is_refused_with_the_inverse_hint(inverse, factor):
    with pytest.raises(ValueError) as info:
        TrainConfig(imbalance_factor=inverse).resolved()
    message = str(info.value)
    assert f"--imbalance-factor {factor}" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "changes,fragment",
    [
        ({"beta": 1.0}, "beta"),
        ({"beta": 1.5}, "beta"),
        ({"beta": -0.1}, "beta"),
        ({"beta": float("nan")}, "beta"),
        ({"gamma": -1.0}, "gamma"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": -3}, "epochs"),
        ({"epochs": 2.5}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": "128"}, "batch_size"),
        ({"imbalance_factor": 0}, "imbalance_factor"),
        ({"imbalance_factor": float("inf")}, "imbalance_factor"),
        ({"lr": 0.0}, "lr"),
        ({"decay_epochs": [180, 160]}, "decay_epochs"),
        ({"decay_epochs": [160], "decay_factors": [0.1, 0.01]}, "same length"),
        ({"dataset": "mnist"}, "dataset"),
        ({"dataset": "npz"}, "--train-data"),
        # beyond float32, the training dtype: an overflow inside PyTorch, not a one-line error
        ({"lr": 1e39}, "lr must be at most 3.403e+38"),
        ({"weight_decay": 1e308}, "weight_decay must be at most"),
        ({"momentum": -1e308}, "momentum must be at most"),
        ({"gamma": 1e39}, "gamma must be at most"),
        ({"decay_epochs": [1, 2], "decay_factors": [1e39, 1.0]}, "decay_factors"),
        ({"lr": 1e30, "decay_epochs": [1, 2], "decay_factors": [1e10, 1.0]}, "lr x decay"),
        ({"loss": "ldam", "loss_options": {"s": 1e300}}, "loss_options.s must be at most"),
        # an empty folder path (an unset shell variable) meant the working folder
        ({"out": ""}, "out must be a folder path, got ''"),
        ({"data_dir": " "}, "data_dir must be a folder path, got ' '"),
        # permissions that contradict or lack their command (one was silently ignored)
        ({"resume": True, "overwrite": True}, "resume and overwrite: expected one of them"),
        ({"force": True}, "force (resume even if the config differs) needs resume"),
        # seeds feed torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        ({"seed": 2**32}, "seed must be an integer in [0, 4294967295]"),
    ],
)
def test_bad_values_are_refused_with_one_line(changes, fragment):
    with pytest.raises((ValueError, TypeError)) as info:
        TrainConfig(**changes).resolved()
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", [0.0, 0.5, 0.9999])
def test_good_betas_are_accepted(value):
    assert TrainConfig(beta=value).resolved().beta == value


# ---------------------------------------------------------------------------
# resolved(): the paper's recipe scaled with epochs and batch size
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "epochs,warmup,decay",
    [(200, 5, [160, 180]), (20, 1, [16, 18]), (10, 1, [8, 9]), (400, 10, [320, 360])],
)
def test_warmup_and_decay_epochs_scale_with_epochs(epochs, warmup, decay):
    cfg = TrainConfig(epochs=epochs).resolved()
    assert cfg.warmup_epochs == warmup
    assert cfg.decay_epochs == decay


@pytest.mark.parametrize(
    "factor,expected",
    [(100, [0.01, 1e-4]), (200, [0.01, 1e-4]), (1.5, [0.01, 1e-4]), (1, [0.1, 0.01])],
)
def test_decay_factors_depend_on_balance(factor, expected):
    assert TrainConfig(imbalance_factor=factor).resolved().decay_factors == expected


def test_default_imbalance_factor_is_100_for_cifar_and_1_otherwise():
    assert TrainConfig(dataset="cifar10").resolved().imbalance_factor == 100.0
    assert TrainConfig(dataset="cifar100").resolved().decay_factors == [0.01, 1e-4]
    digits = TrainConfig(dataset="digits").resolved()
    assert digits.imbalance_factor == 1.0
    assert digits.decay_factors == [0.1, 0.01]


@pytest.mark.parametrize("batch", [1, 32, 128, 256, 1000])
def test_lr_scales_with_the_batch_size(batch):
    assert TrainConfig(batch_size=batch).resolved().lr == pytest.approx(0.1 * batch / 128)


def test_explicit_values_are_kept():
    cfg = TrainConfig(
        epochs=20, lr=0.3, warmup_epochs=0, decay_epochs=[5], decay_factors=[0.5]
    ).resolved()
    assert (cfg.lr, cfg.warmup_epochs, cfg.decay_epochs, cfg.decay_factors) == (0.3, 0, [5], [0.5])


def test_resolved_does_not_modify_the_original():
    cfg = TrainConfig(epochs=20)
    cfg.resolved()
    assert cfg.lr is None and cfg.warmup_epochs is None and cfg.decay_epochs is None


# ---------------------------------------------------------------------------
# every key against its declared type, naming the key and the file
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line,key",
    [
        ('flip = "false"', "flip"),
        ("channels_last = 0", "channels_last"),
        ("train_data = 5", "train_data"),
        ('epochs = "ten"', "epochs"),
        ("decay_epochs = [1.5, 2]", "decay_epochs"),
        ("profile = 3", "profile"),
        ('profile = "linear"', "profile"),
        ('precision = "fp8"', "precision"),
        ('loss_options = {max_m = "big"}', "loss_options"),
        ("beta = true", "beta"),
    ],
)
def test_every_key_is_checked_against_its_type_naming_key_and_file(tmp_path, line, key, capsys):
    path = tmp_path / "typed.toml"
    path.write_text(f'loss = "ldam"\n{line}\n')
    with pytest.raises(ValueError) as info:
        config_from_sources(path)
    message = str(info.value)
    assert f"config key {key}" in message and str(path) in message, message
    code = cli.main(["train", "--config", str(path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and key in err and str(path) in err
    assert not (tmp_path / "run").exists()


def test_types_are_checked_for_keys_given_in_python_too():
    with pytest.raises(TypeError, match="config key flip: expected true or false, got 'no'"):
        TrainConfig(flip="no").resolved()


def test_names_are_checked_against_the_registries_at_config_time(tmp_path):
    for key, value in (("loss", "nope"), ("model", "nonsense"), ("dataset", "mnist")):
        with pytest.raises(ValueError, match=f"config key {key} in c.toml: unknown|{key} name"):
            TrainConfig.from_dict({key: value}, source="c.toml")
        with pytest.raises(ValueError, match=key):
            TrainConfig(**{key: value}).resolved()


def test_the_extra_field_is_gone_but_old_config_files_still_load():
    assert "extra" not in TrainConfig.__dataclass_fields__
    assert TrainConfig.from_dict({"extra": {}, "epochs": 3}).epochs == 3  # old config.json
    with pytest.raises(ValueError, match="unknown key.*extra"):
        TrainConfig.from_dict({"extra": {"lr": 1}})


def test_a_key_missing_from_an_old_run_counts_as_its_default():
    from classbalanced.config import config_differences

    new = TrainConfig().resolved().to_dict()
    old = {k: v for k, v in new.items() if k != "loss_options"} | {"extra": {}}
    assert config_differences(old, new) == []
    assert config_differences(old, new | {"loss_options": {"tau": 2.0}}) == ["loss_options"]


def test_loss_options_are_checked_against_the_loss():
    assert TrainConfig(loss="ldam", loss_options={"max_m": 0.3}).resolved().loss_options == {
        "max_m": 0.3
    }
    with pytest.raises(ValueError, match="loss 'softmax' has no option 'tau'.*none"):
        TrainConfig(loss_options={"tau": 1.0}).resolved()
    with pytest.raises(ValueError, match="has no option 'margin'.*max_m, s"):
        TrainConfig(loss="ldam", loss_options={"margin": 1.0}).resolved()


# ---------------------------------------------------------------------------
# schedules that never happen within the run are refused
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes,fragment",
    [
        ({"reweight_schedule": "drw", "reweight_epoch": 10}, "never switch on"),
        ({"reweight_schedule": "drw", "reweight_epoch": 50}, "never switch on"),
        ({"reweight_schedule": "ramp", "reweight_epoch": 11}, "would not reach"),
    ],
)
def test_a_schedule_longer_than_the_run_is_refused(changes, fragment):
    with pytest.raises(ValueError, match=fragment):
        TrainConfig(dataset="digits", epochs=10, **changes).resolved()


@pytest.mark.parametrize("schedule", ["drw", "ramp"])
def test_a_reweight_schedule_without_a_beta_is_refused_not_a_silent_no_op(schedule):
    """(beta 0 weights every class 1: the schedule switched 1 to 1.)"""
    with pytest.raises(ValueError, match=f"reweight_schedule {schedule} needs beta > 0"):
        TrainConfig(dataset="digits", epochs=10, reweight_schedule=schedule).resolved()
    TrainConfig(dataset="digits", epochs=10, reweight_schedule=schedule, beta=0.9).resolved()


def test_a_gamma_the_loss_does_not_read_is_a_loud_warning(recwarn):
    """--gamma with softmax (or ldam, ...) was recorded in config.json and silently unused."""
    for loss in ("softmax", "sigmoid", "ldam"):
        TrainConfig(dataset="digits", loss=loss, gamma=2.0).resolved()
    messages = [str(w.message) for w in recwarn if "gamma" in str(w.message)]
    assert messages == [
        f"gamma 2 is ignored by the {loss} loss (only focal losses read it)"
        for loss in ("softmax", "sigmoid", "ldam")
    ]
    recwarn.clear()
    TrainConfig(dataset="digits", loss="focal", gamma=2.0).resolved()
    TrainConfig(dataset="digits", loss="softmax").resolved()  # the default gamma: nothing said
    assert not [w for w in recwarn if "gamma" in str(w.message)]


@pytest.mark.parametrize("warmup", [10, 12])
def test_a_warm_up_longer_than_the_run_is_a_loud_warning(warmup, recwarn):
    cfg = TrainConfig(dataset="digits", epochs=10, warmup_epochs=warmup).resolved()
    assert cfg.warmup_epochs == warmup
    (warning,) = [w for w in recwarn if "warm-up" in str(w.message)]
    assert f"warm-up of {warmup} epochs does not end within a run of 10" in str(warning.message)


def test_explicit_decay_epochs_the_run_never_reaches_are_a_loud_warning(tmp_path, recwarn):
    """(A preset's decays, e.g. [30, 60, 80] of the 90-epoch recipes, are kept as given when
    --epochs shortens the run: the learning rate then silently never decayed.)"""
    path = tmp_path / "c.toml"
    path.write_text('dataset = "digits"\ndecay_epochs = [5, 30]\ndecay_factors = [0.1, 0.01]\n')
    cfg = config_from_sources(path, {"epochs": 10}).resolved()
    assert cfg.decay_epochs == [5, 30]
    (warning,) = [w for w in recwarn if "decay" in str(w.message)]
    assert "decay_epochs 30 lie beyond a run of 10 epochs" in str(warning.message)
    recwarn.clear()
    TrainConfig(dataset="digits", epochs=2).resolved()  # derived decays: scaled, never warned
    TrainConfig(dataset="digits", epochs=10, decay_epochs=[9], decay_factors=[0.1]).resolved()
    # a short run's saved config resolved again (resume, evaluate, decouple): its derived
    # decays [3, 4] include the last epoch, and that is the default, not a user's mistake
    saved = TrainConfig(dataset="digits", epochs=4).resolved()
    assert saved.decay_epochs == [3, 4]
    TrainConfig.from_dict(saved.to_dict()).resolved()
    assert not [w for w in recwarn if "decay" in str(w.message)]


def test_schedules_within_the_run_are_accepted():
    drw = dict(dataset="digits", epochs=10, beta=0.999, reweight_schedule="drw")
    assert TrainConfig(**drw, reweight_epoch=9).resolved().reweight_epoch == 9
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (
            TrainConfig(dataset="digits", epochs=10, warmup_epochs=9).resolved().warmup_epochs == 9
        )
    ramp = TrainConfig(**{**drw, "reweight_schedule": "ramp"}, reweight_epoch=10)
    assert ramp.resolved().reweight_epoch == 10
    # the default switch epoch (160 x epochs / 200) lies inside every run longer than one epoch
    assert TrainConfig(**{**drw, "epochs": 5}).resolved().reweight_epoch == 4


def test_pad_is_bounded():
    with pytest.raises(ValueError, match=r"pad must be an integer in \[0, 128\], got 100000"):
        TrainConfig(pad=100_000).resolved()
    assert TrainConfig(pad=128).resolved().pad == 128


def test_data_options_the_dataset_does_not_read_are_refused():
    with pytest.raises(
        ValueError, match="cifar10 does not read train_data, test_data.*--dataset npz"
    ):
        TrainConfig(train_data="x.npz", test_data="y.npz").resolved()
    with pytest.raises(ValueError, match="--dataset folder"):
        TrainConfig(train_data="images/train", test_data="images/test").resolved()
    with pytest.raises(ValueError, match="digits does not read image_size"):
        TrainConfig(dataset="digits", image_size=32).resolved()


def test_options_that_change_no_result_may_change_on_resume():
    from classbalanced.config import config_differences

    old = TrainConfig().to_dict()
    free = {
        "persistent_workers": False, "async_checkpoints": True, "sync_every": 5,
        "keep_checkpoints": 7, "eval_batch_size": 3, "cudnn_benchmark": True, "num_workers": 9,
        "download": False,
    }  # fmt: skip
    assert config_differences(old, {**old, **free}) == []
    refused = {"lr": 0.5, "sgd_impl": "foreach", "eval_every": 1, "channels_last": False}
    assert config_differences(old, {**old, **free, **refused}) == sorted(refused)


def test_a_run_on_nccl_resumes_on_the_cpu_with_gloo():
    """The device may change on resume, and NCCL needs CUDA: the backend must change with it
    (--force would lift every other check as well)."""
    from classbalanced.config import config_differences

    gpu = TrainConfig(device="cuda", dist_backend="nccl").to_dict()
    cpu = TrainConfig(device="cpu", dist_backend="gloo").to_dict()
    assert config_differences(gpu, cpu) == []


def test_a_run_saved_before_the_pipeline_options_resumes_only_with_its_own_pipeline():
    """Configs written before ``image_decode`` / ``worker_output`` existed ran the reduced-size
    decode with float output: a resume with today's defaults would switch pipelines."""
    from classbalanced.config import config_differences

    new = TrainConfig().to_dict()
    for dataset, differ in (("inat2018", ["image_decode", "worker_output"]), ("cifar10", [])):
        saved = {k: v for k, v in new.items() if k not in ("image_decode", "worker_output")}
        saved["dataset"] = dataset
        assert config_differences(saved, {**new, "dataset": dataset}) == differ
    old_pipeline = {**new, "dataset": "inat2018", "image_decode": "draft", "worker_output": "float"}
    assert config_differences({**saved, "dataset": "inat2018"}, old_pipeline) == []


@pytest.mark.parametrize(
    ("dataset", "changes", "reader"),
    [
        ("digits", {"image_decode": "device"}, "inat2018"),
        ("cifar10", {"worker_output": "float"}, "imagenet_lt"),
        ("npz", {"num_workers": 8}, "inat2018"),
        ("folder", {"persistent_workers": False}, "places_lt"),
        ("digits", {"data_dir": "/data/cifar"}, "cifar10"),
        ("npz", {"download": False}, "cifar100"),
    ],
)
def test_pipeline_and_folder_options_a_dataset_ignores_are_refused(dataset, changes, reader):
    """(They used to be accepted and ignored: the loader workers and image decoding belong to
    the image-file data sets, the data folder to CIFAR and those, the download to CIFAR.)"""
    files = {"train_data": "a.npz", "test_data": "b.npz"} if dataset in ("npz", "folder") else {}
    with pytest.raises(ValueError, match=f"{dataset} does not read {next(iter(changes))}"):
        TrainConfig(dataset=dataset, **files, **changes).resolved()
    TrainConfig(dataset=reader, **changes).resolved()  # a data set that reads it


def test_a_sampler_beta_without_the_class_balanced_sampler_is_refused_not_ignored():
    with pytest.raises(ValueError, match="sampler_beta 0.99 needs sampler = class_balanced"):
        TrainConfig(dataset="digits", sampler_beta=0.99).resolved()
    cfg = TrainConfig(dataset="digits", sampler="class_balanced", sampler_beta=0.99).resolved()
    assert cfg.sampler_beta == 0.99


def test_a_leading_tilde_in_a_path_is_the_home_folder(tmp_path, monkeypatch):
    """From a config file (no shell expands it there) `data_dir = "~/data"` read and
    downloaded into a folder named '~' under the working folder."""
    from classbalanced.config import PATH_KEYS

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home = str(tmp_path / "home")
    path = tmp_path / "c.toml"
    path.write_text('dataset = "npz"\ntrain_data = "~/a.npz"\n')
    cfg = config_from_sources(path, {"test_data": "~/b.npz", "out": "~"})
    assert (cfg.train_data, cfg.test_data, cfg.out) == (f"{home}/a.npz", f"{home}/b.npz", home)
    path.write_text('dataset = "list"\ndata_dir = "~/data"\ntrain_list = "~/train.txt"\n')
    cfg = config_from_sources(path)
    assert (cfg.data_dir, cfg.train_list) == (f"{home}/data", f"{home}/train.txt")
    assert TrainConfig(data_dir="data/~x").data_dir == "data/~x"  # not a leading ~
    assert {"data_dir", "out", "train_list"} <= set(PATH_KEYS)


def test_a_model_name_is_saved_in_one_spelling(tmp_path):
    """Model names are case-insensitive: `ResNet32` built resnet32 but was saved as typed, so
    `report` put its runs in another group than resnet32's, without published numbers."""
    path = tmp_path / "c.toml"
    path.write_text('dataset = "digits"\nmodel = "Simple_CNN"\n')
    assert config_from_sources(path).model == "simple_cnn"
    assert config_from_sources(path, {"model": "ResNet32"}).resolved().model == "resnet32"
    assert TrainConfig(model="CIFAR_ResNet110_V2").model == "cifar_resnet110_v2"
