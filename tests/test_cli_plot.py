import json

from matplotlib.image import imread

from classbalanced.cli import main


def _fake_run(folder, accuracies, counts=(50, 10, 2)):
    folder.mkdir(parents=True)
    metrics = {"train_counts": list(counts), "per_class_accuracy": accuracies}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    history = [{"epoch": e, "error_percent": 50.0 - e} for e in (2, 4, 6)]
    (folder / "history.json").write_text(json.dumps(history))
    return folder


def test_plot_two_runs_side_by_side(tmp_path):
    a = _fake_run(tmp_path / "softmax", [0.9, 0.5, None])
    b = _fake_run(tmp_path / "cb_focal", [0.8, 0.7, 0.4])
    assert main(["plot", "run", "--run", str(a), str(b), "--output", str(tmp_path / "plots")]) == 0
    for name in ("class_distribution.png", "per_class_accuracy.png", "error_curve.png"):
        image = imread(tmp_path / "plots" / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.std() > 0


def test_an_older_error_curve_is_not_passed_off_as_this_plots(tmp_path, capsys):
    a = _fake_run(tmp_path / "a", [0.9, 0.5, 0.1])
    out = str(tmp_path / "plots")
    assert main(["plot", "run", "--run", str(a), "--output", out]) == 0
    assert "wrote class_distribution.png, per_class_accuracy.png, error_curve.png" in (
        capsys.readouterr().err
    )
    (a / "history.json").write_text(json.dumps([{"epoch": 6, "error_percent": 40.0}]))
    assert main(["plot", "run", "--run", str(a), "--output", out]) == 0
    err = capsys.readouterr().err
    assert "wrote class_distribution.png, per_class_accuracy.png to" in err
    assert f"no error curve (no run has two evaluations): {out}/error_curve.png is an older" in err


def test_plot_refuses_runs_of_different_data(tmp_path, capsys):
    a = _fake_run(tmp_path / "a", [0.9, 0.5, 0.1])
    b = _fake_run(tmp_path / "b", [0.9, 0.5, 0.1], counts=(40, 10, 2))
    assert main(["plot", "run", "--run", str(a), str(b), "--output", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("classbalanced: error: the runs must share their training set")
        and err.count("\n") == 1
    )


def test_plot_effective_number(tmp_path):
    out = tmp_path / "e.png"
    assert main(["plot", "effective-number", "--output", str(out), "--beta", "0.9", "0.999"]) == 0
    assert imread(out).shape[:2] == (480, 640)


def test_plot_run_may_write_again_into_a_plots_folder_inside_the_run(tmp_path):
    run = _fake_run(tmp_path / "run", [0.9, 0.5, 0.1])
    argv = ["plot", "run", "--run", str(run), "--output", str(run / "plots")]
    assert main(argv) == 0
    first = (run / "plots" / "per_class_accuracy.png").read_bytes()
    assert main(argv) == 0  # its own earlier output is not an input
    assert (run / "plots" / "per_class_accuracy.png").read_bytes() == first


def _refused(capsys, argv, fragment, tmp_path):
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("classbalanced: error:") and err.count("\n") == 1, err
    assert fragment in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing drawn


def test_flags_of_the_other_plot_are_refused_not_ignored(tmp_path, capsys):
    """(--run with effective-number, --beta / --max-samples with run used to be ignored.)"""
    run = _fake_run(tmp_path / "run", [0.9, 0.5, 0.1])
    out = str(tmp_path / "e.png")
    argv = ["plot", "effective-number", "--output", out, "--run", str(run)]
    _refused(capsys, argv, "--run applies to plot run, not effective-number", tmp_path)
    for extra in (["--beta", "0.9"], ["--max-samples", "100"]):
        argv = ["plot", "run", "--run", str(run), "--output", str(tmp_path / "p"), *extra]
        _refused(capsys, argv, f"{extra[0]} applies to plot effective-number, not run", tmp_path)


def test_the_same_run_twice_is_refused(tmp_path, capsys):
    """(The second replaced the first: one run drawn where two were asked for.)"""
    run = _fake_run(tmp_path / "run", [0.9, 0.5, 0.1])
    argv = ["plot", "run", "--run", str(run), str(tmp_path / "." / "run"), "--output"]
    _refused(capsys, [*argv, str(tmp_path / "p")], "names the run", tmp_path)


def test_a_class_without_test_images_is_drawn_as_missing_not_zero(tmp_path, monkeypatch):
    import math

    from classbalanced import plots

    seen = {}
    draw = plots.plot_per_class_accuracy

    def spy(path, runs, **kw):
        seen.update(runs)
        return draw(path, runs, **kw)

    monkeypatch.setattr(plots, "plot_per_class_accuracy", spy)
    run = _fake_run(tmp_path / "run", [0.9, None, 0.0])
    assert main(["plot", "run", "--run", str(run), "--output", str(tmp_path / "p")]) == 0
    accuracy = seen["run"]
    assert accuracy[0] == 0.9 and math.isnan(accuracy[1]) and accuracy[2] == 0.0
