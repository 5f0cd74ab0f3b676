"""Tests for classbalanced.plots: PNG size and content, plotted data, validation, atomic writes."""

from __future__ import annotations

import math
import os
import re

import matplotlib
import matplotlib.image
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from classbalanced import plots
from classbalanced.plots import (
    plot_class_distribution,
    plot_effective_number,
    plot_error_curves,
    plot_heatmap,
    plot_per_class_accuracy,
)
from classbalanced.weights import effective_number

SMALL = {"figsize": (4, 3), "dpi": 40}  # 160 x 120 pixels: fast to render
COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
ACCURACY = {
    "softmax": np.linspace(0.95, 0.35, 10),
    "class-balanced": np.linspace(0.9, 0.55, 10),
}
CURVES = {
    "softmax": ([1, 2, 3, 4], [70.0, 50.0, 40.0, 35.0]),
    "cb focal": (np.arange(1, 5), torch.tensor([68.0, 45.0, 33.0, 30.0])),
}
GRID = [[25.4, 24.9, math.nan], [23.3, 22.8, 23.1]]
HEAT_LABELS = {"row_labels": [0.999, 0.9999], "col_labels": [0.5, 1.0, 2.0]}

# Each public function with arguments that draw something: name -> (function, args, kwargs).
CASES = {
    "effective_number": (plot_effective_number, (), {}),
    "class_distribution": (plot_class_distribution, (COUNTS,), {}),
    "class_distribution_named_log": (
        plot_class_distribution,
        (np.array(COUNTS),),
        {
            "class_names": [f"class {i}" for i in range(10)],
            "title": "CIFAR-10 IF 100",
            "log_scale": True,
        },
    ),
    "per_class_accuracy": (plot_per_class_accuracy, (ACCURACY,), {"counts": COUNTS}),
    "per_class_accuracy_lines": (
        plot_per_class_accuracy,
        ({"a": np.linspace(1.0, 0.0, 100), "b": np.linspace(0.5, 0.4, 100)},),
        {},
    ),
    "error_curves": (plot_error_curves, (CURVES,), {}),
    "heatmap": (plot_heatmap, (GRID,), {**HEAT_LABELS, "title": "CIFAR-10 IF 100"}),
}


def _read_png(path):
    image = matplotlib.image.imread(path)
    assert image.dtype == np.float32
    return image


@pytest.mark.parametrize("name", sorted(CASES))
def test_writes_non_blank_png_of_requested_pixel_size(tmp_path, name):
    function, args, kwargs = CASES[name]
    target = tmp_path / f"{name}.png"
    result = function(target, *args, **kwargs, figsize=(5, 2.5), dpi=30)
    assert result == target
    assert target.stat().st_size > 0
    with open(target, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    image = _read_png(target)
    assert image.shape[:2] == (75, 150)  # (height, width) = figsize[::-1] * dpi
    assert float(image[..., :3].var()) > 1e-4  # something was drawn
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left behind


def test_default_size_and_returns_path_for_str(tmp_path):
    target = plot_error_curves(str(tmp_path / "curves.png"), CURVES)
    assert target == tmp_path / "curves.png"
    assert _read_png(target).shape[:2] == (480, 640)


def test_creates_missing_parent_directories(tmp_path):
    target = tmp_path / "a" / "b" / "counts.png"
    assert plot_class_distribution(target, COUNTS, **SMALL) == target
    assert _read_png(target).shape[:2] == (120, 160)


def test_does_not_touch_pyplot_or_backend(tmp_path):
    backend = matplotlib.get_backend()
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot_heatmap(tmp_path / "h.png", GRID, **HEAT_LABELS, **SMALL)
    assert plt.get_fignums() == before
    assert matplotlib.get_backend() == backend


# --------------------------------------------------------------------------- #
# Plotted data
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("log_scale", [True, False])
def test_effective_number_lines_match_weights_module(log_scale):
    betas = (0.0, 0.9, 0.99, 0.999, 0.9999)
    figure = plots._figure_effective_number(
        betas=betas, max_samples=5000, log_scale=log_scale, **SMALL
    )
    assert isinstance(figure, Figure)
    (axes,) = figure.axes
    lines = {line.get_label(): line for line in axes.get_lines()}
    assert len(lines) == len(betas) + 1
    for beta in betas:
        line = lines[f"β = {beta:g}"]
        n = np.asarray(line.get_xdata(), dtype=np.float64)
        assert n[0] == 1 and n[-1] == 5000 and (np.diff(n) > 0).all()
        assert np.array_equal(n, np.rint(n))
        expected = effective_number(n, beta).numpy()
        np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-12)
        # independent of the weights module: the closed form of the paper
        np.testing.assert_allclose(line.get_ydata(), (1 - beta**n) / (1 - beta), rtol=1e-9)
    identity = lines["β → 1 (no overlap, E = n)"]
    np.testing.assert_array_equal(identity.get_xdata(), identity.get_ydata())
    expected_scale = "log" if log_scale else "linear"
    assert axes.get_xscale() == expected_scale and axes.get_yscale() == expected_scale


def test_effective_number_grid_is_geometric_on_log_axes():
    (axes,) = plots._figure_effective_number(betas=(0.9,), max_samples=10_000, **SMALL).axes
    n = np.asarray(axes.get_lines()[0].get_xdata(), dtype=np.float64)
    assert (n < 10).sum() == 9  # every small count present (integer grid)
    ratios = n[1:] / n[:-1]
    assert ratios[n[1:] > 20].max() <= 1.05  # dense over four decades, not clumped at the top
    assert n.size > 200


def test_class_distribution_bars_follow_given_order():
    counts = [3, 10, 1, 7]
    figure = plots._figure_class_distribution(counts, class_names=list("abcd"), **SMALL)
    (axes,) = figure.axes
    heights = [patch.get_height() for patch in axes.patches]
    assert heights == counts
    assert [label.get_text() for label in axes.get_xticklabels()] == list("abcd")
    assert axes.get_title() == "Training images per class"


def test_per_class_accuracy_grouped_bars_and_class_size_axis():
    figure = plots._figure_per_class_accuracy(ACCURACY, counts=COUNTS, **SMALL)
    axes, secondary = figure.axes
    heights = np.array([patch.get_height() for patch in axes.patches])
    np.testing.assert_allclose(heights, np.concatenate(list(ACCURACY.values())))
    np.testing.assert_array_equal(secondary.get_lines()[0].get_ydata(), COUNTS)
    assert secondary.get_yscale() == "log"  # imbalance 100 > 20
    (legend_box,) = figure.legends
    legend = [text.get_text() for text in legend_box.get_texts()]
    assert legend == ["softmax", "class-balanced", "training images"]


def test_per_class_accuracy_many_classes_uses_lines():
    runs = {"a": np.linspace(1.0, 0.0, 100)}
    (axes,) = plots._figure_per_class_accuracy(runs, **SMALL).axes
    (line,) = axes.get_lines()
    np.testing.assert_allclose(line.get_ydata(), runs["a"])
    assert not axes.patches


def test_error_curves_one_line_per_run():
    (axes,) = plots._figure_error_curves(CURVES, **SMALL).axes
    lines = {line.get_label(): line for line in axes.get_lines()}
    assert set(lines) == set(CURVES)
    for name, (epochs, errors) in CURVES.items():
        np.testing.assert_allclose(lines[name].get_xdata(), np.asarray(epochs, dtype=float))
        np.testing.assert_allclose(lines[name].get_ydata(), np.asarray(errors, dtype=float))


def test_heatmap_annotates_finite_cells_and_blanks_nan(tmp_path):
    figure = plots._figure_heatmap(GRID, **HEAT_LABELS, **SMALL)
    axes = figure.axes[0]
    texts = sorted(text.get_text() for text in axes.texts)
    assert texts == sorted(["25.40", "24.90", "23.30", "22.80", "23.10"])
    (image,) = axes.get_images()
    assert image.get_array().mask.tolist() == [[False, False, True], [False, False, False]]
    assert [t.get_text() for t in axes.get_xticklabels()] == ["0.5", "1.0", "2.0"]
    assert axes.get_xlabel() == "gamma" and axes.get_ylabel() == "beta"
    # rendered: the NaN cell (top right) is the white background, a finite cell is coloured
    target = plots._write_png(figure, tmp_path / "h.png")  # draws: layout is final afterwards
    pixels = _read_png(target)
    height = pixels.shape[0]

    def cell_pixels(col, row):
        x, y = axes.transData.transform((col + 0.3, row + 0.3))  # off-centre: avoid the annotation
        return pixels[int(height - y) - 1 : int(height - y) + 2, int(x) - 1 : int(x) + 2, :3]

    np.testing.assert_allclose(cell_pixels(2, 0), 1.0)
    assert float(np.abs(cell_pixels(0, 0) - 1.0).max()) > 0.2


def test_heatmap_all_nan_is_blank_but_drawn(tmp_path):
    target = plot_heatmap(
        tmp_path / "nan.png",
        [[math.nan, math.nan]],
        row_labels=["x"],
        col_labels=["a", "b"],
        **SMALL,
    )
    assert _read_png(target).shape[:2] == (120, 160)


# --------------------------------------------------------------------------- #
# Validation
# --------------------------------------------------------------------------- #

BAD_INPUTS = [
    # (function, args, kwargs, exception, message fragment)
    (
        plot_effective_number,
        (),
        {"betas": ()},
        ValueError,
        "expected betas to hold at least one beta",
    ),
    (plot_effective_number, (), {"betas": (0.9, 1.0)}, ValueError, "beta must be in"),
    (plot_effective_number, (), {"betas": (0.9, 0.9)}, ValueError, "expected distinct betas"),
    (plot_effective_number, (), {"betas": 0.9}, TypeError, "expected betas to be a sequence"),
    (plot_effective_number, (), {"max_samples": 1}, ValueError, "expected max_samples >= 2, got 1"),
    (plot_effective_number, (), {"log_scale": "yes"}, TypeError, "expected log_scale to be a bool"),
    (
        plot_class_distribution,
        ([],),
        {},
        ValueError,
        "expected counts to be a non-empty 1-D sequence, got shape (0,)",
    ),
    (
        plot_class_distribution,
        ([5, -1],),
        {},
        ValueError,
        "expected counts to hold non-negative counts, got -1 at index 1",
    ),
    (
        plot_class_distribution,
        ([5, math.nan],),
        {},
        ValueError,
        "expected counts to hold finite numbers, got nan at index 1",
    ),
    (
        plot_class_distribution,
        ([5, math.inf],),
        {},
        ValueError,
        "expected counts to hold finite numbers, got inf",
    ),
    (
        plot_class_distribution,
        ([5, 0],),
        {"log_scale": True},
        ValueError,
        "expected counts to hold counts > 0, got 0",
    ),
    (
        plot_class_distribution,
        ([[1, 2]],),
        {},
        ValueError,
        "expected counts to be a non-empty 1-D sequence, got shape (1, 2)",
    ),
    (
        plot_class_distribution,
        ("12",),
        {},
        TypeError,
        "expected counts to be a sequence of numbers, got '12'",
    ),
    (plot_class_distribution, (["a", "b"],), {}, TypeError, "expected counts to hold real numbers"),
    (
        plot_class_distribution,
        ([1, 2],),
        {"class_names": ["a"]},
        ValueError,
        "expected class_names to have 2 entries, got 1",
    ),
    (
        plot_class_distribution,
        ([1, 2],),
        {"figsize": (4, 0)},
        ValueError,
        "expected figsize to hold finite numbers > 0",
    ),
    (
        plot_class_distribution,
        ([1, 2],),
        {"figsize": 4},
        TypeError,
        "expected figsize to be a (width, height) pair",
    ),
    (
        plot_class_distribution,
        ([1, 2],),
        {"dpi": 0},
        ValueError,
        "expected dpi to be a finite number > 0, got 0.0",
    ),
    (
        plot_per_class_accuracy,
        ({},),
        {},
        ValueError,
        "expected runs to hold at least one run, got an empty mapping",
    ),
    (plot_per_class_accuracy, ([0.5],), {}, TypeError, "expected runs to be a mapping"),
    (
        plot_per_class_accuracy,
        ({"a": [0.5, 0.5], "b": [0.5]},),
        {},
        ValueError,
        "expected every run to hold 2 per-class accuracies, got 1 in run 'b'",
    ),
    (
        plot_per_class_accuracy,
        ({"a": [0.5, 1.5]},),
        {},
        ValueError,
        "expected runs['a'] to hold accuracies in [0, 1], got 1.5 at index 1",
    ),
    (
        plot_per_class_accuracy,
        ({"a": [0.5, 0.5]},),
        {"counts": [1, 2, 3]},
        ValueError,
        "expected counts to have 2 entries (one per class), got 3",
    ),
    (
        plot_per_class_accuracy,
        ({"a": [0.5, 0.5]},),
        {"counts": [1, -2]},
        ValueError,
        "expected counts to hold non-negative counts, got -2",
    ),
    (plot_error_curves, ({},), {}, ValueError, "expected runs to hold at least one run"),
    (
        plot_error_curves,
        ({"a": [1, 2, 3]},),
        {},
        TypeError,
        "expected runs['a'] to be an (epochs, error_percent) pair",
    ),
    (
        plot_error_curves,
        ({"a": ([1, 2], [3.0])},),
        {},
        ValueError,
        "expected as many errors as epochs in run 'a', got 1 errors for 2 epochs",
    ),
    (
        plot_error_curves,
        ({"a": ([2, 1], [3.0, 4.0])},),
        {},
        ValueError,
        "expected strictly increasing epochs in run 'a'",
    ),
    (
        plot_error_curves,
        ({"a": ([1, 2], [3.0, 140.0])},),
        {},
        ValueError,
        "expected error percentages in [0, 100] in run 'a', got 140.0",
    ),
    (
        plot_error_curves,
        ({"a": ([], [])},),
        {},
        ValueError,
        "expected epochs of run 'a' to be a non-empty 1-D sequence",
    ),
    (plot_error_curves, ({1: ([1], [3.0])},), {}, TypeError, "expected run names to be str, got 1"),
    (
        plot_heatmap,
        ([1.0, 2.0],),
        HEAT_LABELS,
        ValueError,
        "expected errors to be a non-empty 2-D grid, got shape (2,)",
    ),
    (
        plot_heatmap,
        ([[1.0, 2.0, math.inf]] * 2,),
        HEAT_LABELS,
        ValueError,
        "expected errors to hold finite numbers or NaN, got inf at (0, 2)",
    ),
    (
        plot_heatmap,
        ([[1.0, 2.0]] * 2,),
        HEAT_LABELS,
        ValueError,
        "expected col_labels to have 2 entries, got 3",
    ),
    (
        plot_heatmap,
        ([[1.0, 2.0, 3.0]] * 3,),
        HEAT_LABELS,
        ValueError,
        "expected row_labels to have 3 entries, got 2",
    ),
    (
        plot_heatmap,
        ([[1.0, 2.0], [1.0]],),
        HEAT_LABELS,
        TypeError,
        "expected errors to be a rectangular sequence",
    ),
]


@pytest.mark.parametrize(
    ("function", "args", "kwargs", "exception", "message"),
    BAD_INPUTS,
    ids=[f"{case[0].__name__}-{index}" for index, case in enumerate(BAD_INPUTS)],
)
def test_bad_inputs_raise_one_line_error_and_write_nothing(
    tmp_path, function, args, kwargs, exception, message
):
    target = tmp_path / "new" / "out.png"
    with pytest.raises(exception) as info:
        function(target, *args, **kwargs)
    text = str(info.value)
    assert message in text
    assert "\n" not in text
    assert list(tmp_path.iterdir()) == []  # validated before any directory or file is created


@pytest.mark.parametrize(
    ("path", "exception", "message"),
    [
        (123, TypeError, "expected path to be a str or os.PathLike, got 123"),
        (b"out.png", TypeError, "expected path to be a str or os.PathLike, got b'out.png'"),
        ("out.jpg", ValueError, "expected a path ending in '.png', got 'out.jpg'"),
    ],
)
def test_bad_paths(path, exception, message):
    with pytest.raises(exception, match="^" + re.escape(message) + "$"):
        plot_class_distribution(path, COUNTS, **SMALL)


def test_path_that_is_a_directory_or_below_a_file(tmp_path):
    directory = tmp_path / "dir.png"
    directory.mkdir()
    with pytest.raises(ValueError, match="expected a file path, got an existing directory"):
        plot_class_distribution(directory, COUNTS, **SMALL)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="to be a directory, got a file"):
        plot_class_distribution(blocker / "sub" / "out.png", COUNTS, **SMALL)


# --------------------------------------------------------------------------- #
# Atomic replacement
# --------------------------------------------------------------------------- #


def test_existing_file_survives_a_failed_write(tmp_path, monkeypatch):
    target = tmp_path / "counts.png"
    plot_class_distribution(target, COUNTS, **SMALL)
    original = target.read_bytes()

    def broken_savefig(self, fname, **kwargs):
        fname.write(b"\x89PNG partial")  # a half-written file must not replace the old one
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        plot_class_distribution(target, [1, 2, 3], **SMALL)
    assert target.read_bytes() == original
    assert list(tmp_path.iterdir()) == [target]  # temporary file removed

    monkeypatch.undo()
    plot_class_distribution(target, [1, 2, 3], figsize=(3, 2), dpi=40)
    assert target.read_bytes() != original
    assert _read_png(target).shape[:2] == (80, 120)


def test_failed_replace_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "curves.png"
    target.write_bytes(b"old")

    def broken_replace(src, dst):
        raise PermissionError("replace refused")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(PermissionError):
        plot_error_curves(target, CURVES, **SMALL)
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_new_file_gets_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        target = plot_error_curves(tmp_path / "p.png", CURVES, **SMALL)
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o644


def test_per_class_accuracy_of_a_class_without_test_images_is_no_bar_not_zero():
    """NaN (``per_class_accuracy`` null: no test image of the class) draws no bar or point;
    it was refused, so `plot run` drew such a class as 0 % accuracy."""
    runs = {"a": [0.5, math.nan, 1.0], "b": [0.25, 0.75, math.nan]}
    axes, _ = plots._figure_per_class_accuracy(runs, counts=[9, 3, 1], **SMALL).axes
    heights = [patch.get_height() for patch in axes.patches]
    np.testing.assert_array_equal(heights, [0.5, math.nan, 1.0, 0.25, 0.75, math.nan])
    lines = {"a": np.r_[np.linspace(1, 0, 30), math.nan]}
    (line,) = plots._figure_per_class_accuracy(lines, **SMALL).axes[0].get_lines()
    np.testing.assert_array_equal(line.get_ydata(), lines["a"])  # a gap in the line
    with pytest.raises(ValueError, match=r"expected runs\['a'\] to hold finite numbers or NaN"):
        plots._figure_per_class_accuracy({"a": [0.5, math.inf]}, **SMALL)
