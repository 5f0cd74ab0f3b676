"""--search parsing, the space checked against the base config, the seeded sampler."""

from __future__ import annotations

import math

import pytest
from tune_helpers import optuna

from classbalanced.tune.space import Dist, check_space, parse_search, suggest
from classbalanced.tune.study import reseed


@pytest.mark.parametrize(
    ("item", "key", "dist"),
    [
        ("beta=logit1m(0.9, 0.99999)", "beta", Dist("logit1m", (0.9, 0.99999))),
        ("beta=logit1m(0.9,0.99999)", "beta", Dist("logit1m", (0.9, 0.99999))),
        (" gamma = uniform( 0 , 2 ) ", "gamma", Dist("uniform", (0.0, 2.0))),
        ("lr=loguniform(1e-3, 0.3)", "lr", Dist("loguniform", (0.001, 0.3))),
        ("warmup-epochs=int(0, 5)", "warmup_epochs", Dist("int", (0, 5))),
        ("loss=choice(softmax, sigmoid,focal)", "loss", Dist("choice", ("softmax", "sigmoid", "focal"))),
        ("gamma=choice(0, 0.5, 2)", "gamma", Dist("choice", (0, 0.5, 2))),
    ],
)  # fmt: skip
def test_the_forms_parse(item, key, dist):
    assert parse_search([item]) == {key: dist}


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("betta=uniform(0, 1)", r"--search betta=uniform\(0, 1\): unknown key 'betta'; expected one of .*beta.*logit1m\(a, b\)"),
        ("out=uniform(0, 1)", r"unknown key 'out'"),
        ("beta=uniform(0.9)", r"expected uniform\(a, b\) with two finite numbers"),
        ("beta=uniform(0.9, 0.1)", r"expected a < b in uniform\(a, b\), got 0.9 and 0.1"),
        ("beta=logit1m(0.9, 1)", r"expected 0 <= a < b < 1 in logit1m\(a, b\)"),
        ("lr=loguniform(0, 1)", r"expected 0 < a in loguniform"),
        ("epochs=int(1.5, 3)", r"expected int\(a, b\) with two integers"),
        ("epochs=uniform(1, 3)", r"epochs is not a real setting; expected choice\(v1, v2, ...\) or int\(a, b\)"),
        ("beta=normal(0, 1)", r"unknown distribution 'normal'"),
        ("beta 0.9", r"expected KEY=DIST with DIST one of uniform\(a, b\)"),
        ("loss=choice()", r"expected choice\(v1, v2, ...\) with values"),
    ],
)  # fmt: skip
def test_a_bad_item_is_one_line_naming_it(item, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_search([item])
    assert "\n" not in str(info.value)


def test_a_key_twice_and_an_empty_search_are_refused():
    with pytest.raises(ValueError, match=r"key beta given twice"):
        parse_search(["beta=uniform(0, 0.5)", "beta=uniform(0.5, 0.9)"])
    with pytest.raises(ValueError, match=r"expected at least one KEY=DIST"):
        parse_search([])


def test_a_space_the_base_config_contradicts_is_refused():
    base = {"dataset": "digits", "epochs": 2}
    with pytest.raises(
        ValueError, match=r"the base config refuses beta = 1.5: beta must be in \[0, 1\)"
    ):
        check_space(parse_search(["beta=uniform(0.5, 1.5)"]), base)
    with pytest.raises(ValueError, match=r"the base config refuses loss = hinge: .*unknown loss"):
        check_space(parse_search(["loss=choice(softmax, hinge)"]), base)
    with pytest.raises(ValueError, match=r"no loss of the search reads gamma \(loss: softmax\)"):
        check_space(parse_search(["gamma=uniform(0, 2)"]), base)
    check_space(parse_search(["gamma=uniform(0, 2)"]), {**base, "loss": "focal"})  # accepted
    check_space(parse_search(["gamma=uniform(0, 2)", "loss=choice(softmax, focal)"]), base)


def test_logit1m_is_log_uniform_in_one_minus_beta():
    space = parse_search(["beta=logit1m(0.9, 0.9999)"])
    trial = optuna.trial.FixedTrial({"one_minus_beta": 0.001})
    assert suggest(trial, space)["beta"] == pytest.approx(0.999, abs=1e-15)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    logs = []
    for _ in range(400):
        t = study.ask()
        beta = suggest(t, space)["beta"]
        assert 0.9 <= beta <= 0.9999
        logs.append(-math.log10(1 - beta))  # uniform on [1, 4]
        study.tell(t, 0.0)
    assert sum(logs) / len(logs) == pytest.approx(2.5, abs=0.15)
    assert sum(1 for x in logs if x > 3) / len(logs) == pytest.approx(1 / 3, abs=0.07)


def _asked(seed: int, trials: int = 8) -> list[dict]:
    space = parse_search(
        ["beta=logit1m(0.9, 0.9999)", "gamma=uniform(0, 2)", "loss=choice(softmax, focal)"]
    )
    study = optuna.create_study(direction="maximize")
    asked = []
    for number in range(trials):
        reseed(study, seed, number, startup=3)
        trial = study.ask()
        values = suggest(trial, space)
        asked.append(values)
        study.tell(trial, values["gamma"] - abs(values["beta"] - 0.99))  # any fixed function
    return asked


def test_the_sampler_is_deterministic_for_a_seed_and_differs_across_seeds():
    assert _asked(3) == _asked(3)
    assert _asked(3) != _asked(4)


def test_the_folder_lock_orders_the_threads_of_one_process_too(tmp_path):
    """POSIX record locks belong to the process: two threads of one tune (--jobs 2) would
    both hold them at once, and ask Optuna for the same trial."""
    import threading
    import time

    from classbalanced.tune.study import folder_lock

    inside, most = [0], [0]

    def work():
        for _ in range(20):
            with folder_lock(tmp_path):
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                time.sleep(0.002)
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1


def test_the_tune_folder_takes_the_projects_writer_lock(tmp_path):
    """The tune folder's lock is :mod:`classbalanced.locking`'s, as a sweep folder's: held,
    it names its holder and refuses another writer (here the rewrite of a shared file; a
    flock refuses another open of the file in this process as in another); the new
    folder's record is written beside it; released, no lock file is left."""
    from classbalanced.locking import FolderBusy, lock_folder, read_lock
    from classbalanced.tune.study import check_folder, folder_lock

    out = tmp_path / "study"
    with folder_lock(out):
        assert read_lock(out)["command"] == "tune"
        check_folder(out, {"base": {}, "search": {}, "metric": "val_accuracy"}, extend=False)
        with pytest.raises(FolderBusy, match=r"study is being written by tune \(pid"):
            lock_folder(out, "report")
    assert sorted(p.name for p in out.iterdir()) == ["tune.json"]  # no lock file left


def test_a_folder_holding_only_a_lock_file_starts_a_study(tmp_path):
    """A first tune that stopped before writing anything leaves a lock file only (the old
    ``.tune.lock``, from before tune used :mod:`classbalanced.locking`): the folder is still
    new; any other file makes it a folder that is not a study."""
    from classbalanced.tune.study import check_folder

    record = {"base": {}, "search": {}, "metric": "val_accuracy"}
    out = tmp_path / "study"
    out.mkdir()
    (out / ".tune.lock").touch()
    check_folder(out, record, extend=False)
    assert (out / "tune.json").is_file()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").touch()
    with pytest.raises(ValueError, match="is not empty and holds no tune study"):
        check_folder(other, record, extend=False)
