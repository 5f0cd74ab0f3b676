"""The presets: the paper's recipes and sweep grids, shipped inside the package.

The files of this folder are package data (``configs/`` of a clone is a link to it):
training presets (``cifar10_lt_cb.toml``, ``inat2018_cb_focal.toml``, ...) for
``classbalanced train --config`` and sweep grids (``sweeps/cifar10_table2.toml``, ...)
for ``classbalanced sweep --config``. ``--config`` takes a file path or a preset's name,
with or without its suffix or a ``configs/`` (``configs/sweeps/``) prefix; a file of that
name always wins. Each preset says what it reproduces in its first comment line, which
``classbalanced presets`` lists.

>>> find_config("cifar10_lt_cb").name
'cifar10_lt_cb.toml'
>>> find_config("configs/sweeps/cifar10_table2.toml", kind="sweep").name
'cifar10_table2.toml'
>>> "cifar10_table2_published" in preset_names("sweep")
True
>>> find_config("cifar10_lt_cbb")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
FileNotFoundError: config file not found: cifar10_lt_cbb (expected a file, or a preset: cifar100_balanced, ...)
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Literal

__all__ = ["KINDS", "SUFFIXES", "describe", "find_config", "preset_names", "preset_path"]

Kind = Literal["train", "sweep"]
#: preset kinds: training configs (this folder) and sweep grids (``sweeps/``)
KINDS: tuple[str, ...] = ("train", "sweep")
#: the file suffixes of a preset, per kind
SUFFIXES = {"train": (".toml", ".yaml", ".yml"), "sweep": (".toml",)}
_FOLDERS = {"train": (), "sweep": ("sweeps",)}


def _folder(kind: str) -> Path:
    if kind not in KINDS:
        raise ValueError(f"preset kind must be one of {', '.join(KINDS)}, got {kind!r}")
    # a package installed on a file system (a wheel, an editable install, a clone) is a Path
    return Path(str(resources.files(__name__).joinpath(*_FOLDERS[kind])))


def preset_names(kind: Kind = "train") -> list[str]:
    """The names of the presets of ``kind`` (``"train"`` or ``"sweep"``), sorted."""
    folder = _folder(kind)
    return sorted(p.stem for p in folder.iterdir() if p.suffix in SUFFIXES[kind] and p.is_file())


def preset_path(name: str, kind: Kind = "train") -> Path | None:
    """The bundled file of preset ``name`` (``cifar10_lt_cb``, ``cifar10_lt_cb.toml``,
    ``configs/cifar10_lt_cb.toml``), or None when there is none."""
    parts = Path(name).parts
    prefix = ("configs", *_FOLDERS[kind])
    if not parts or tuple(parts[:-1]) not in {prefix[:k] for k in range(len(prefix) + 1)}:
        return None
    stem, suffix = os.path.splitext(parts[-1])
    folder = _folder(kind)
    candidates = [stem + suffix] if suffix in SUFFIXES[kind] else []
    candidates += [parts[-1] + s for s in SUFFIXES[kind]]
    for candidate in candidates:
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def find_config(name: str | os.PathLike, kind: Kind = "train") -> Path:
    """The file ``--config name`` means: the file ``name`` if there is one, else the bundled
    preset of that name; else one line listing the presets (FileNotFoundError)."""
    path = Path(name)
    if path.exists():
        return path
    found = preset_path(str(name), kind)
    if found is not None:
        return found
    what = "config file" if kind == "train" else "sweep file"
    raise FileNotFoundError(
        f"{what} not found: {name} (expected a file, or a preset: "
        f"{', '.join(preset_names(kind))}; `classbalanced presets` lists them)"
    )


def describe(path: str | os.PathLike) -> str:
    """What a preset reproduces: the first line of its leading comment."""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("#") and line.lstrip("# "):
            return line.lstrip("# ").rstrip(":")
        if line:
            break
    return "(no description)"
