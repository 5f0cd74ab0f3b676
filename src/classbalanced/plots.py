"""Matplotlib figures from class weights, class counts, training runs and sweeps.

Every ``plot_*`` function renders one figure with the Agg canvas (the global
``pyplot`` state and the user's chosen backend are never touched), writes it as
a PNG *atomically* (a temporary file in the target's directory, then
``os.replace``, so an existing file is replaced only once the new one is
complete), creates missing parent directories, and returns the path as a
:class:`pathlib.Path`.

The image size in pixels is ``int(figsize[0] * dpi)`` by ``int(figsize[1] * dpi)``
(width by height): no tight bounding box is used, so the size never depends on
the content.

Bad inputs are refused at the boundary with a one-line ``TypeError`` (wrong
kind of value) or ``ValueError`` (right kind, bad value) of the form
``"expected X, got Y"``, before any directory or file is created.

The module is over 600 lines because every figure of the package shares one rendering
path (Agg canvas, atomic PNG write) and one set of boundary checks.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import secrets
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ._validation import check_beta, check_positive_int
from .weights import effective_number

__all__ = [
    "plot_effective_number",
    "plot_class_distribution",
    "plot_per_class_accuracy",
    "plot_error_curves",
    "plot_heatmap",
    "plot_confusion_matrix",
    "plot_reliability",
]

_MAX_PIXELS = 2**15  # per side; Agg refuses images of 2**16 pixels or more
_GROUPED_BARS_MAX_CLASSES = 20  # above this, per-class accuracy is drawn as lines


# --------------------------------------------------------------------------- #
# Boundary checks
# --------------------------------------------------------------------------- #


def _describe(value: object) -> str:
    if isinstance(value, (bool, numbers.Number, str, bytes)) or value is None:
        return repr(value)
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"{type(value).__name__} of shape {tuple(shape)}"
    return type(value).__name__


def _check_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"expected {name} to be a real number, got {_describe(value)}")
    return float(value)


def _check_dpi(dpi: object) -> float:
    value = _check_real("dpi", dpi)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected dpi to be a finite number > 0, got {value!r}")
    return value


def _check_figsize(figsize: object, dpi: float) -> tuple[float, float]:
    if (
        isinstance(figsize, (str, bytes))
        or not isinstance(figsize, (Sequence, np.ndarray))
        or len(figsize) != 2
    ):
        raise TypeError(
            f"expected figsize to be a (width, height) pair in inches, got {_describe(figsize)}"
        )
    width, height = (_check_real("figsize", side) for side in figsize)
    for side in (width, height):
        if not math.isfinite(side) or side <= 0:
            raise ValueError(f"expected figsize to hold finite numbers > 0, got {tuple(figsize)!r}")
    pixels = (width * dpi, height * dpi)
    if min(pixels) < 1 or max(pixels) >= _MAX_PIXELS:
        raise ValueError(
            f"expected figsize * dpi between 1 and {_MAX_PIXELS - 1} pixels per side, "
            f"got {pixels[0]:g} x {pixels[1]:g}"
        )
    return width, height


def _check_path(path: object) -> Path:
    """Check the target path without touching the file system (beyond stat calls)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"expected path to be a str or os.PathLike, got {_describe(path)}")
    fspath = os.fspath(path)
    if not isinstance(fspath, str):
        raise TypeError(f"expected path to be a str or os.PathLike of str, got {_describe(fspath)}")
    target = Path(fspath)
    if target.suffix.lower() != ".png":
        raise ValueError(f"expected a path ending in '.png', got {fspath!r}")
    if target.is_dir():
        raise ValueError(f"expected a file path, got an existing directory {fspath!r}")
    # The nearest existing ancestor must be a directory, or the parents cannot be created.
    for ancestor in target.absolute().parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise ValueError(f"expected {str(ancestor)!r} to be a directory, got a file")
            break
    return target


def _to_numpy(name: str, value: object) -> np.ndarray:
    """Numbers (list, tuple, numpy array, tensor) -> float64 numpy array, any shape."""
    torch = sys.modules.get("torch")  # a tensor can only exist if torch is imported
    if torch is not None and isinstance(value, torch.Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(
                f"expected {name} to hold real numbers, got a tensor of dtype {value.dtype}"
            )
        return value.detach().to(device="cpu", dtype=torch.float64).numpy()
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (Sequence, np.ndarray)):
        raise TypeError(f"expected {name} to be a sequence of numbers, got {_describe(value)}")
    try:
        array = np.asarray(value)
    except ValueError:  # ragged nesting
        raise TypeError(
            f"expected {name} to be a rectangular sequence of numbers, got a ragged sequence"
        ) from None
    if array.dtype.kind not in "iuf":
        raise TypeError(f"expected {name} to hold real numbers, got dtype {array.dtype}")
    return array.astype(np.float64)


def _to_vector(name: str, value: object, *, allow_nan: bool = False) -> np.ndarray:
    array = _to_numpy(name, value)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"expected {name} to be a non-empty 1-D sequence, got shape {array.shape}")
    bad = np.isinf(array) if allow_nan else ~np.isfinite(array)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        kind = "finite numbers or NaN" if allow_nan else "finite numbers"
        raise ValueError(
            f"expected {name} to hold {kind}, got {float(array[index])!r} at index {index}"
        )
    return array


def _check_counts(name: str, counts: object, *, positive: bool = False) -> np.ndarray:
    array = _to_vector(name, counts)
    bad = array <= 0 if positive else array < 0
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        kind = "counts > 0" if positive else "non-negative counts"
        raise ValueError(f"expected {name} to hold {kind}, got {array[index]:g} at index {index}")
    return array


def _check_within(values: np.ndarray, high: float, expected: str) -> None:
    """Refuse the first value outside ``[0, high]`` (NaN passes): ``expected <expected>, got ...``."""
    outside = (values < 0) | (values > high)
    if outside.any():
        index = int(np.flatnonzero(outside)[0])
        raise ValueError(f"expected {expected}, got {float(values[index])!r} at index {index}")


def _check_labels(name: str, labels: object, length: int) -> list[str]:
    if isinstance(labels, (str, bytes)) or not isinstance(labels, (Sequence, np.ndarray)):
        raise TypeError(f"expected {name} to be a sequence of labels, got {_describe(labels)}")
    if len(labels) != length:
        raise ValueError(f"expected {name} to have {length} entries, got {len(labels)}")
    return [str(label) for label in labels]


def _check_runs(runs: object) -> Mapping:
    if not isinstance(runs, Mapping):
        raise TypeError(f"expected runs to be a mapping of run name -> data, got {_describe(runs)}")
    if not runs:
        raise ValueError("expected runs to hold at least one run, got an empty mapping")
    for key in runs:
        if not isinstance(key, str):
            raise TypeError(f"expected run names to be str, got {_describe(key)}")
    return runs


def _check_optional_title(title: object) -> str | None:
    if title is not None and not isinstance(title, str):
        raise TypeError(f"expected title to be a str or None, got {_describe(title)}")
    return title


def _check_flag(name: str, value: object) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"expected {name} to be a bool, got {_describe(value)}")
    return bool(value)


# --------------------------------------------------------------------------- #
# Figure creation and atomic writing
# --------------------------------------------------------------------------- #


def _new_figure(figsize: object, dpi: object) -> Figure:
    """A Figure bound to its own Agg canvas (no pyplot, no global backend change)."""
    dpi = _check_dpi(dpi)
    figsize = _check_figsize(figsize, dpi)
    figure = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _write_png(figure: Figure, target: Path) -> Path:
    """Write ``figure`` to ``target`` atomically: temp file in the same dir, then replace."""
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        temporary = parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            # 0o666 lets the process umask decide the final permissions (unlike mkstemp's 0o600).
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # pragma: no cover - 48 random bits collided
            continue
        break
    else:  # pragma: no cover
        raise FileExistsError(f"expected a free temporary name in {str(parent)!r}, got none")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            figure.savefig(handle, format="png", dpi=figure.dpi)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return target


# --------------------------------------------------------------------------- #
# Effective number
# --------------------------------------------------------------------------- #


def _sample_grid(max_samples: int, log_scale: bool) -> np.ndarray:
    """Distinct integer sample counts 1..max_samples (geometric when ``log_scale``)."""
    points = min(max_samples, 400)
    if log_scale:
        grid = np.geomspace(1, max_samples, points)
    else:
        grid = np.linspace(1, max_samples, points)
    return np.unique(np.rint(grid).astype(np.int64))


def _figure_effective_number(
    *,
    betas: Sequence[float] = (0.9, 0.99, 0.999, 0.9999),
    max_samples: int = 10_000,
    log_scale: bool = True,
    figsize: tuple[float, float] = (6.4, 4.8),
    dpi: float = 100,
) -> Figure:
    """Build the effective-number figure; one line per beta labelled ``beta = <b>``."""
    if isinstance(betas, (str, bytes)) or not isinstance(betas, (Sequence, np.ndarray)):
        raise TypeError(
            f"expected betas to be a sequence of numbers in [0, 1), got {_describe(betas)}"
        )
    if len(betas) == 0:
        raise ValueError("expected betas to hold at least one beta, got an empty sequence")
    checked = [check_beta(beta) for beta in betas]
    if len(set(checked)) != len(checked):
        raise ValueError(f"expected distinct betas, got {checked!r}")
    max_samples = check_positive_int("max_samples", max_samples)
    if max_samples < 2:
        raise ValueError(f"expected max_samples >= 2, got {max_samples}")
    log_scale = _check_flag("log_scale", log_scale)

    figure = _new_figure(figsize, dpi)
    axes = figure.add_subplot()
    samples = _sample_grid(max_samples, log_scale)
    for beta in checked:
        values = effective_number(samples, beta).detach().cpu().numpy()
        axes.plot(samples, values, label=f"β = {beta:g}", linewidth=1.8)
    axes.plot(
        samples, samples.astype(np.float64), "k--", linewidth=1.2, label="β → 1 (no overlap, E = n)"
    )
    if log_scale:
        axes.set_xscale("log")
        axes.set_yscale("log")
    axes.set_xlim(1, max_samples)
    axes.set_xlabel("Number of samples n")
    axes.set_ylabel("Effective number Eₙ = (1 − βⁿ) / (1 − β)")
    axes.set_title("Effective number of samples")
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(loc="upper left", fontsize="small")
    return figure


def plot_effective_number(
    path: str | os.PathLike[str],
    *,
    betas: Sequence[float] = (0.9, 0.99, 0.999, 0.9999),
    max_samples: int = 10_000,
    log_scale: bool = True,
    figsize: tuple[float, float] = (6.4, 4.8),
    dpi: float = 100,
) -> Path:
    """Plot the effective number ``E_n`` against the number of samples ``n``.

    One curve per ``beta`` (computed with
    :func:`classbalanced.weights.effective_number`) plus the identity line
    ``E_n = n``, the ``beta -> 1`` limit where samples never overlap. Each curve
    saturates at ``1 / (1 - beta)``. Counts are the distinct integers of a grid
    over ``1..max_samples`` (geometric on log-log axes when ``log_scale``).

    Args:
        path: target ``.png`` file; missing parent directories are created.
        betas: distinct values in ``[0, 1)``.
        max_samples: largest ``n`` on the x axis (>= 2).
        log_scale: log-log axes (default) instead of linear ones.
        figsize: ``(width, height)`` in inches; the image is ``figsize * dpi`` pixels.
        dpi: pixels per inch.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     out = plot_effective_number(pathlib.Path(tmp) / "en.png", betas=(0.9, 0.999), dpi=50)
    ...     print(out.name, out.stat().st_size > 0)
    en.png True
    """
    target = _check_path(path)
    figure = _figure_effective_number(
        betas=betas, max_samples=max_samples, log_scale=log_scale, figsize=figsize, dpi=dpi
    )
    return _write_png(figure, target)


# --------------------------------------------------------------------------- #
# Class distribution
# --------------------------------------------------------------------------- #


def _set_class_ticks(axes, positions: np.ndarray, class_names: list[str] | None) -> None:
    if class_names is None:
        axes.set_xlabel("Class index")
        return
    axes.set_xlabel("Class")
    axes.set_xticks(positions)
    rotate = len(class_names) > 10 or max(len(name) for name in class_names) > 8
    axes.set_xticklabels(
        class_names,
        rotation=90 if rotate else 0,
        fontsize="small" if len(class_names) <= 30 else "xx-small",
    )


def _figure_class_distribution(
    counts,
    *,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    log_scale: bool = False,
    figsize: tuple[float, float] = (8.0, 4.0),
    dpi: float = 100,
) -> Figure:
    """Build the class-distribution bar chart (one bar per class, in the given order)."""
    log_scale = _check_flag("log_scale", log_scale)
    values = _check_counts("counts", counts, positive=log_scale)
    names = None if class_names is None else _check_labels("class_names", class_names, values.size)
    title = _check_optional_title(title)

    figure = _new_figure(figsize, dpi)
    axes = figure.add_subplot()
    positions = np.arange(values.size)
    axes.bar(positions, values, width=0.8, color="tab:blue")
    if log_scale:
        axes.set_yscale("log")
    axes.set_xlim(-0.6, values.size - 0.4)
    _set_class_ticks(axes, positions, names)
    axes.set_ylabel("Training images")
    axes.set_title(title if title is not None else "Training images per class")
    axes.grid(True, axis="y", alpha=0.3)
    return figure


def plot_class_distribution(
    path: str | os.PathLike[str],
    counts,
    *,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    log_scale: bool = False,
    figsize: tuple[float, float] = (8.0, 4.0),
    dpi: float = 100,
) -> Path:
    """Bar chart of the number of training images per class, in the order given.

    Args:
        path: target ``.png`` file; missing parent directories are created.
        counts: ``(C,)`` finite non-negative counts (list, numpy array or tensor);
            all must be > 0 when ``log_scale``.
        class_names: ``C`` tick labels (default: class indices on the axis).
        title: figure title (default ``"Training images per class"``).
        log_scale: logarithmic count axis.
        figsize: ``(width, height)`` in inches; the image is ``figsize * dpi`` pixels.
        dpi: pixels per inch.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     out = plot_class_distribution(pathlib.Path(tmp) / "counts.png", [5000, 1581, 500, 158, 50], dpi=50)
    ...     print(out.name, out.stat().st_size > 0)
    counts.png True
    """
    target = _check_path(path)
    figure = _figure_class_distribution(
        counts, class_names=class_names, title=title, log_scale=log_scale, figsize=figsize, dpi=dpi
    )
    return _write_png(figure, target)


# --------------------------------------------------------------------------- #
# Per-class accuracy
# --------------------------------------------------------------------------- #


def _figure_per_class_accuracy(
    runs: Mapping[str, object],
    *,
    counts=None,
    class_names: Sequence[str] | None = None,
    figsize: tuple[float, float] = (8.0, 4.5),
    dpi: float = 100,
) -> Figure:
    """Build the per-class accuracy figure: grouped bars (<= 20 classes) or lines."""
    runs = _check_runs(runs)
    accuracies: dict[str, np.ndarray] = {}
    num_classes = None
    for name, values in runs.items():
        array = _to_vector(f"runs[{name!r}]", values, allow_nan=True)  # NaN: no test image
        if num_classes is None:
            num_classes = array.size
        elif array.size != num_classes:
            raise ValueError(
                f"expected every run to hold {num_classes} per-class accuracies, got {array.size} in run {name!r}"
            )
        _check_within(array, 1, f"runs[{name!r}] to hold accuracies in [0, 1]")
        accuracies[name] = array
    assert num_classes is not None
    sizes = None
    if counts is not None:
        sizes = _check_counts("counts", counts)
        if sizes.size != num_classes:
            raise ValueError(
                f"expected counts to have {num_classes} entries (one per class), got {sizes.size}"
            )
    names = None if class_names is None else _check_labels("class_names", class_names, num_classes)

    figure = _new_figure(figsize, dpi)
    axes = figure.add_subplot()
    positions = np.arange(num_classes)
    if num_classes <= _GROUPED_BARS_MAX_CLASSES:
        width = 0.8 / len(accuracies)
        for index, (name, values) in enumerate(accuracies.items()):
            offset = (index - (len(accuracies) - 1) / 2) * width
            axes.bar(positions + offset, values, width=width, label=name)
    else:
        for name, values in accuracies.items():
            axes.plot(positions, values, marker=".", markersize=3, linewidth=1.2, label=name)
    axes.set_ylim(0, 1.05)
    axes.set_xlim(-0.6, num_classes - 0.4)
    axes.set_ylabel("Accuracy")
    _set_class_ticks(axes, positions, names)
    axes.grid(True, axis="y", alpha=0.3)
    handles, labels = axes.get_legend_handles_labels()
    if sizes is not None:
        secondary = axes.twinx()
        (marker,) = secondary.plot(
            positions,
            sizes,
            linestyle="none",
            marker="D",
            markersize=4 if num_classes <= _GROUPED_BARS_MAX_CLASSES else 2,
            color="0.35",
            alpha=0.8,
            label="training images",
        )
        secondary.set_zorder(axes.get_zorder() + 1)  # the small class-size markers stay visible
        secondary.patch.set_visible(False)
        secondary.set_ylabel("Training images")
        if sizes.min() > 0 and sizes.max() / sizes.min() > 20:
            secondary.set_yscale("log")
        else:
            secondary.set_ylim(0, sizes.max() * 1.1 if sizes.max() > 0 else 1)
        handles.append(marker)
        labels.append(marker.get_label())
    columns = 1 if max(len(label) for label in labels) > 40 else min(len(labels), 4)
    figure.legend(handles, labels, loc="outside lower center", ncols=columns, fontsize="small")
    axes.set_title("Per-class accuracy")
    return figure


def plot_per_class_accuracy(
    path: str | os.PathLike[str],
    runs: Mapping[str, object],
    *,
    counts=None,
    class_names: Sequence[str] | None = None,
    figsize: tuple[float, float] = (8.0, 4.5),
    dpi: float = 100,
) -> Path:
    """Per-class accuracy of one or more runs, classes in the order given.

    Up to 20 classes are drawn as grouped bars, more as one line per run. With
    ``counts``, the number of training images per class is marked (grey
    diamonds) on a secondary axis, logarithmic when the imbalance exceeds 20.

    Args:
        path: target ``.png`` file; missing parent directories are created.
        runs: run name -> ``(C,)`` accuracies in ``[0, 1]``, the same ``C`` for every run;
            NaN for a class without test images (no bar or point is drawn for it).
        counts: optional ``(C,)`` non-negative training-set sizes.
        class_names: optional ``C`` tick labels.
        figsize: ``(width, height)`` in inches; the image is ``figsize * dpi`` pixels.
        dpi: pixels per inch.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    >>> import tempfile, pathlib
    >>> runs = {"softmax": [0.95, 0.8, 0.5], "class-balanced": [0.9, 0.85, 0.7]}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     out = plot_per_class_accuracy(pathlib.Path(tmp) / "acc.png", runs, counts=[500, 50, 5], dpi=50)
    ...     print(out.name, out.stat().st_size > 0)
    acc.png True
    """
    target = _check_path(path)
    figure = _figure_per_class_accuracy(
        runs, counts=counts, class_names=class_names, figsize=figsize, dpi=dpi
    )
    return _write_png(figure, target)


# --------------------------------------------------------------------------- #
# Error curves
# --------------------------------------------------------------------------- #


def _figure_error_curves(
    runs: Mapping[str, object],
    *,
    figsize: tuple[float, float] = (6.4, 4.8),
    dpi: float = 100,
) -> Figure:
    """Build the test-error-against-epoch figure, one line per run labelled by its name."""
    runs = _check_runs(runs)
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, curve in runs.items():
        if isinstance(curve, (str, bytes)) or not isinstance(curve, Sequence) or len(curve) != 2:
            raise TypeError(
                f"expected runs[{name!r}] to be an (epochs, error_percent) pair, got {_describe(curve)}"
            )
        epochs = _to_vector(f"epochs of run {name!r}", curve[0])
        errors = _to_vector(f"errors of run {name!r}", curve[1])
        if epochs.size != errors.size:
            raise ValueError(
                f"expected as many errors as epochs in run {name!r}, got {errors.size} errors for {epochs.size} epochs"
            )
        if epochs.size > 1 and not (np.diff(epochs) > 0).all():
            raise ValueError(
                f"expected strictly increasing epochs in run {name!r}, got {epochs.tolist()!r}"
            )
        _check_within(errors, 100, f"error percentages in [0, 100] in run {name!r}")
        curves[name] = (epochs, errors)

    figure = _new_figure(figsize, dpi)
    axes = figure.add_subplot()
    for name, (epochs, errors) in curves.items():
        axes.plot(
            epochs, errors, label=name, linewidth=1.5, marker="." if epochs.size == 1 else None
        )
    axes.set_xlabel("Epoch")
    axes.set_ylabel("Test error (%)")
    axes.set_title("Test error")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper right", fontsize="small")
    return figure


def plot_error_curves(
    path: str | os.PathLike[str],
    runs: Mapping[str, object],
    *,
    figsize: tuple[float, float] = (6.4, 4.8),
    dpi: float = 100,
) -> Path:
    """Test error (%) against epoch, one line per run.

    Args:
        path: target ``.png`` file; missing parent directories are created.
        runs: run name -> ``(epochs, error_percent)``: two equally long, non-empty
            sequences, epochs strictly increasing, errors in ``[0, 100]``.
        figsize: ``(width, height)`` in inches; the image is ``figsize * dpi`` pixels.
        dpi: pixels per inch.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    >>> import tempfile, pathlib
    >>> runs = {"softmax": ([1, 2, 3], [60.0, 45.0, 30.0]), "cb focal": ([1, 2, 3], [58.0, 40.0, 26.0])}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     out = plot_error_curves(pathlib.Path(tmp) / "curves.png", runs, dpi=50)
    ...     print(out.name, out.stat().st_size > 0)
    curves.png True
    """
    target = _check_path(path)
    figure = _figure_error_curves(runs, figsize=figsize, dpi=dpi)
    return _write_png(figure, target)


# --------------------------------------------------------------------------- #
# Heatmap
# --------------------------------------------------------------------------- #


def _figure_heatmap(
    errors,
    *,
    row_labels: Sequence[object],
    col_labels: Sequence[object],
    row_title: str = "beta",
    col_title: str = "gamma",
    title: str | None = None,
    figsize: tuple[float, float] = (6.4, 4.8),
    dpi: float = 100,
) -> Figure:
    """Build the error-grid figure; finite cells are annotated, NaN cells left blank."""
    grid = _to_numpy("errors", errors)
    if grid.ndim != 2 or grid.size == 0:
        raise ValueError(f"expected errors to be a non-empty 2-D grid, got shape {grid.shape}")
    if np.isinf(grid).any():
        row, col = (int(i) for i in np.argwhere(np.isinf(grid))[0])
        raise ValueError(
            f"expected errors to hold finite numbers or NaN, got {float(grid[row, col])!r} at ({row}, {col})"
        )
    rows = _check_labels("row_labels", row_labels, grid.shape[0])
    cols = _check_labels("col_labels", col_labels, grid.shape[1])
    for name, value in (("row_title", row_title), ("col_title", col_title)):
        if not isinstance(value, str):
            raise TypeError(f"expected {name} to be a str, got {_describe(value)}")
    title = _check_optional_title(title)

    finite = np.isfinite(grid)
    low, high = (
        (float(grid[finite].min()), float(grid[finite].max())) if finite.any() else (0.0, 1.0)
    )
    colormap = matplotlib.colormaps["viridis"].with_extremes(bad=(1.0, 1.0, 1.0, 0.0))
    figure = _new_figure(figsize, dpi)
    axes = figure.add_subplot()
    image = axes.imshow(
        np.ma.masked_invalid(grid),
        cmap=colormap,
        vmin=low,
        vmax=high,
        aspect="auto",
        interpolation="nearest",
    )
    colorbar = figure.colorbar(image, ax=axes)
    colorbar.set_label("Error (%)")
    for row, col in np.argwhere(finite):
        value = grid[row, col]
        red, green, blue, _ = colormap(image.norm(value))
        luminance = 0.299 * red + 0.587 * green + 0.114 * blue
        axes.text(
            col,
            row,
            f"{value:.2f}",
            ha="center",
            va="center",
            fontsize="small",
            color="black" if luminance > 0.5 else "white",
        )
    axes.set_xticks(np.arange(grid.shape[1]), cols)
    axes.set_yticks(np.arange(grid.shape[0]), rows)
    axes.set_xlabel(col_title)
    axes.set_ylabel(row_title)
    if title is not None:
        axes.set_title(title)
    return figure


def plot_heatmap(
    path: str | os.PathLike[str],
    errors,
    *,
    row_labels: Sequence[object],
    col_labels: Sequence[object],
    row_title: str = "beta",
    col_title: str = "gamma",
    title: str | None = None,
    figsize: tuple[float, float] = (6.4, 4.8),
    dpi: float = 100,
) -> Path:
    """A 2-D grid of errors (e.g. a beta x gamma sweep), each value written in its cell.

    NaN cells (runs that are missing or failed) are left blank and unannotated;
    the colour scale spans the finite values.

    Args:
        path: target ``.png`` file; missing parent directories are created.
        errors: ``(R, K)`` grid (nested list, numpy array or tensor) of finite values or NaN.
        row_labels: ``R`` labels (shown with ``str``), top to bottom.
        col_labels: ``K`` labels, left to right.
        row_title: y-axis title.
        col_title: x-axis title.
        title: optional figure title.
        figsize: ``(width, height)`` in inches; the image is ``figsize * dpi`` pixels.
        dpi: pixels per inch.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    >>> import math, tempfile, pathlib
    >>> grid = [[25.4, 24.9, math.nan], [23.3, 22.8, 23.1]]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     out = plot_heatmap(pathlib.Path(tmp) / "sweep.png", grid,
    ...                        row_labels=[0.999, 0.9999], col_labels=[0.5, 1.0, 2.0], dpi=50)
    ...     print(out.name, out.stat().st_size > 0)
    sweep.png True
    """
    target = _check_path(path)
    figure = _figure_heatmap(
        errors,
        row_labels=row_labels,
        col_labels=col_labels,
        row_title=row_title,
        col_title=col_title,
        title=title,
        figsize=figsize,
        dpi=dpi,
    )
    return _write_png(figure, target)


# --------------------------------------------------------------------------- #
# Confusion matrix and reliability diagram
# --------------------------------------------------------------------------- #

CONFUSION_PLOT_MAX_CLASSES = 100  # above this, the cells are too small to read


def plot_confusion_matrix(
    path: str | os.PathLike[str],
    confusion,
    *,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (6.4, 5.6),
    dpi: float = 100,
) -> Path:
    """The confusion matrix ``(C, C)`` (rows: true class, columns: predicted class), each
    row divided by its total (a row without images stays 0), for up to 100 classes.

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     out = plot_confusion_matrix(pathlib.Path(tmp) / "cm.png", [[3, 1], [0, 4]], dpi=50)
    ...     print(out.name, out.stat().st_size > 0)
    cm.png True
    """
    target = _check_path(path)
    grid = _to_numpy("confusion", confusion).astype(np.float64)
    if grid.ndim != 2 or grid.shape[0] != grid.shape[1] or grid.size == 0:
        raise ValueError(f"expected confusion as a non-empty (C, C) grid, got shape {grid.shape}")
    if not np.isfinite(grid).all() or (grid < 0).any():
        raise ValueError("expected confusion to hold finite non-negative counts")
    if grid.shape[0] > CONFUSION_PLOT_MAX_CLASSES:
        raise ValueError(
            f"expected at most {CONFUSION_PLOT_MAX_CLASSES} classes, got {grid.shape[0]}"
        )
    names = None if class_names is None else _check_labels("class_names", class_names, len(grid))
    rows = grid / np.maximum(grid.sum(axis=1, keepdims=True), 1)
    figure = _new_figure(figsize, dpi)
    axes = figure.add_subplot()
    image = axes.imshow(rows, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=axes).set_label("Fraction of the true class")
    positions = np.arange(len(grid))
    _set_class_ticks(axes, positions, names)
    if len(grid) <= 30:
        axes.set_yticks(positions, names if names is not None else [str(i) for i in positions])
    axes.set_xlabel("Predicted class")
    axes.set_ylabel("True class")
    axes.set_title(title if title is not None else "Confusion matrix (rows normalised)")
    return _write_png(figure, target)


def plot_reliability(
    path: str | os.PathLike[str],
    confidence,
    accuracy,
    count,
    *,
    ece: float | None = None,
    figsize: tuple[float, float] = (5.0, 5.0),
    dpi: float = 100,
) -> Path:
    """Reliability diagram: per equal-width bin of top-1 confidence, its accuracy (bars)
    against the diagonal of perfect calibration; empty bins (``None`` / NaN) left blank.

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     out = plot_reliability(pathlib.Path(tmp) / "r.png", [0.3, None], [0.2, None], [5, 0], dpi=50)
    ...     print(out.name, out.stat().st_size > 0)
    r.png True
    """
    target = _check_path(path)
    nan = lambda values: [math.nan if v is None else v for v in values]  # noqa: E731
    conf = _to_vector("confidence", nan(confidence), allow_nan=True)
    acc = _to_vector("accuracy", nan(accuracy), allow_nan=True)
    counts = _check_counts("count", count)
    if not len(conf) == len(acc) == len(counts):
        raise ValueError(
            f"expected confidence, accuracy and count of one length, got {len(conf)}, {len(acc)}, {len(counts)}"
        )
    bins = len(conf)
    edges = np.arange(bins) / bins
    figure = _new_figure(figsize, dpi)
    axes = figure.add_subplot()
    axes.bar(
        edges,
        np.nan_to_num(acc),
        width=1.0 / bins,
        align="edge",
        edgecolor="black",
        label="accuracy",
    )
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("Top-1 confidence")
    axes.set_ylabel("Accuracy")
    suffix = "" if ece is None else f" (ECE {ece:.4f})"
    axes.set_title(f"Reliability diagram{suffix}")
    axes.legend(loc="upper left")
    return _write_png(figure, target)
