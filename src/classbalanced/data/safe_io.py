"""Reading untrusted files: a restricted unpickler and a safe tar extractor.

Two guarantees the rest of the library relies on (the atomic writers are in
:mod:`classbalanced.files`):

* ``restricted_load_pickle`` only reconstructs what the official CIFAR python
  pickles contain (dicts, lists, bytes, ints and uint8 numpy arrays); any other
  global (``os.system``, ``builtins.eval``, ...) is refused *before* it is called.
* ``safe_extract_tar`` checks every member first (no absolute paths, no ``..``,
  no links or devices), extracts into a temporary sibling folder and only then
  renames the result into place, so a failure never leaves a half-extracted tree.

Example:
    >>> import io, pickle
    >>> validate_pickle_dict(restricted_load_pickle(io.BytesIO(pickle.dumps({b"labels": [3]}))), "x")
    {'labels': [3]}
"""

from __future__ import annotations

import codecs
import importlib
import os
import pickle
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from ..files import PathLike

__all__ = [
    "load_pickle_dict",
    "restricted_load_pickle",
    "safe_extract_tar",
    "validate_pickle_dict",
]


# --------------------------------------------------------------------------- pickles


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Stand-in for ``_codecs.encode``: Python 3 pickles of ``bytes`` (protocol <= 2)
    are written as ``_codecs.encode(text, "latin1")``; allow only that form."""
    if not isinstance(obj, str) or not isinstance(encoding, str):
        raise pickle.UnpicklingError(
            f"unexpected _codecs.encode call: expected (str, 'latin1'), got ({type(obj).__name__}, {encoding!r})"
        )
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(
            f"unexpected _codecs.encode call: expected encoding 'latin1', got {encoding!r}"
        )
    return obj.encode("latin1", errors)


def _numpy_attr(name: str) -> Any:
    """``numpy._core.<name>`` (numpy >= 2) or ``numpy.core.<name>`` (numpy 1.x)."""
    module, _, attr = name.rpartition(".")
    try:
        mod = importlib.import_module(f"numpy._core.{module}")
    except ImportError:  # numpy 1.x
        mod = importlib.import_module(f"numpy.core.{module}")
    return getattr(mod, attr)


# (module, name) -> resolver. Both numpy 1 (numpy.core) and numpy 2 (numpy._core)
# spellings map to the installed numpy without importing the deprecated alias.
_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_attr("multiarray._reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_attr("multiarray._reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): lambda: _numpy_attr("numeric._frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): lambda: _numpy_attr("numeric._frombuffer"),
    ("numpy", "ndarray"): lambda: importlib.import_module("numpy").ndarray,
    ("numpy", "dtype"): lambda: importlib.import_module("numpy").dtype,
    ("_codecs", "encode"): lambda: _latin1_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose ``find_class`` resolves only the globals in ``_ALLOWED_GLOBALS``."""

    def __init__(self, file: BinaryIO, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        resolver = _ALLOWED_GLOBALS.get((module, name))
        if resolver is None:
            raise ValueError(
                f"refusing to unpickle {module}.{name} from {self._source}: not part of the CIFAR format"
            )
        return resolver()

    def persistent_load(self, pid: Any) -> Any:
        raise ValueError(
            f"refusing to unpickle a persistent id from {self._source}: not part of the CIFAR format"
        )


def restricted_load_pickle(path_or_fileobj: PathLike | BinaryIO) -> Any:
    """Load a CIFAR-style pickle, refusing every global the CIFAR format does not need.

    Loaded with ``encoding="bytes"`` (like torchvision), so Python 2 strings come
    back as ``bytes``. Allowed globals: numpy array reconstruction
    (``numpy[._]core.multiarray._reconstruct``, ``numpy[._]core.numeric._frombuffer``,
    ``numpy.ndarray``, ``numpy.dtype``) and ``_codecs.encode`` with latin1.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: a forbidden global, or a corrupt / truncated pickle.

    Example:
        >>> import io, pickle, numpy as np
        >>> blob = pickle.dumps({b"data": np.zeros((2, 3), np.uint8)}, protocol=2)
        >>> restricted_load_pickle(io.BytesIO(blob))[b"data"].shape
        (2, 3)
        >>> restricted_load_pickle(io.BytesIO(pickle.dumps(eval)))
        Traceback (most recent call last):
        ...
        ValueError: refusing to unpickle builtins.eval from <stream>: not part of the CIFAR format
    """
    if isinstance(path_or_fileobj, str | os.PathLike):
        path = Path(path_or_fileobj)
        if not path.is_file():
            raise FileNotFoundError(f"pickle file not found: expected a file at {path}")
        with open(path, "rb") as f:
            return _load(f, str(path))
    if not hasattr(path_or_fileobj, "read"):
        raise TypeError(
            f"restricted_load_pickle: expected a path or a binary file object, got {type(path_or_fileobj).__name__}"
        )
    source = str(getattr(path_or_fileobj, "name", "<stream>"))
    return _load(path_or_fileobj, source)


def _load(f: BinaryIO, source: str) -> Any:
    try:
        return _RestrictedUnpickler(f, source).load()
    except ValueError as exc:
        if str(exc).startswith("refusing to unpickle"):
            raise
        raise ValueError(f"corrupt pickle {source}: {_one_line(exc)}") from exc
    except (
        pickle.UnpicklingError,
        EOFError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
    ) as exc:
        raise ValueError(f"corrupt pickle {source}: {_one_line(exc)}") from exc


def validate_pickle_dict(obj: Any, source: str) -> dict[str, Any]:
    """Check that ``obj`` is a dict with ``bytes``/``str`` keys; return it with ``str`` keys.

    Example:
        >>> validate_pickle_dict({b"labels": [1]}, "batch")
        {'labels': [1]}
        >>> validate_pickle_dict([1, 2], "batch")
        Traceback (most recent call last):
        ...
        ValueError: unexpected content in batch: expected a dict, got list
    """
    if not isinstance(obj, dict):
        raise ValueError(
            f"unexpected content in {source}: expected a dict, got {type(obj).__name__}"
        )
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(key, bytes):
            key = key.decode("latin1")
        elif not isinstance(key, str):
            raise ValueError(
                f"unexpected key in {source}: expected bytes or str keys, got {type(key).__name__}"
            )
        out[key] = value
    return out


def load_pickle_dict(path: PathLike) -> dict[str, Any]:
    """``restricted_load_pickle`` + ``validate_pickle_dict`` (keys decoded to ``str``)."""
    return validate_pickle_dict(restricted_load_pickle(path), str(path))


# --------------------------------------------------------------------------- tar


def _check_member(member: tarfile.TarInfo, tar_path: str) -> PurePosixPath:
    name = member.name
    where = f"{name!r} in {tar_path}"
    if member.issym() or member.islnk():
        kind = "symlink" if member.issym() else "hardlink"
        raise ValueError(
            f"refusing to extract {where}: expected regular files and folders, got a {kind}"
        )
    if not (member.isreg() or member.isdir()):
        raise ValueError(
            f"refusing to extract {where}: expected regular files and folders, got a device or fifo"
        )
    if "\\" in name or "\x00" in name:
        raise ValueError(
            f"refusing to extract {where}: expected a plain relative path, got odd characters"
        )
    p = PurePosixPath(name)
    if p.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise ValueError(
            f"refusing to extract {where}: expected a relative path, got an absolute one"
        )
    if ".." in p.parts:
        raise ValueError(
            f"refusing to extract {where}: expected a path inside the archive, got '..'"
        )
    parts = [part for part in p.parts if part not in ("", ".")]
    if not parts:
        if member.isdir():
            return PurePosixPath(".")
        raise ValueError(f"refusing to extract {where}: expected a file name, got an empty path")
    return PurePosixPath(*parts)


def safe_extract_tar(tar_path: PathLike, dest_dir: PathLike) -> list[str]:
    """Extract a (possibly gzipped) tar archive into ``dest_dir`` safely; return the top-level names.

    Every member is checked before anything is written: absolute paths, ``..``
    components, symlinks, hardlinks, devices and fifos are refused with a
    ValueError. Regular files and folders are extracted into a temporary sibling
    folder inside ``dest_dir``, and each top-level entry is then renamed into
    place; on any failure (corrupt gzip, disk full) the temporary folder is
    removed, so a later run never sees a half-extracted tree. Existing
    top-level entries are never overwritten (ValueError).

    Example:
        >>> import io, os, tarfile, tempfile
        >>> d = tempfile.mkdtemp()
        >>> tar = os.path.join(d, "a.tar")
        >>> with tarfile.open(tar, "w") as t:
        ...     info = tarfile.TarInfo("pkg/hello.txt"); info.size = 2
        ...     t.addfile(info, io.BytesIO(b"hi"))
        >>> safe_extract_tar(tar, os.path.join(d, "out"))
        ['pkg']
        >>> open(os.path.join(d, "out", "pkg", "hello.txt")).read()
        'hi'
    """
    tar_path = Path(tar_path)
    dest = Path(dest_dir)
    if not tar_path.is_file():
        raise FileNotFoundError(f"archive not found: expected a file at {tar_path}")
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            members = tar.getmembers()  # reads (and decompresses) the whole archive
            checked = [(m, _check_member(m, str(tar_path))) for m in members]
            tops = sorted({rel.parts[0] for _, rel in checked if rel.parts and rel.parts[0] != "."})
            if not tops:
                raise ValueError(f"empty archive {tar_path}: expected at least one file, got none")
            for top in tops:
                if os.path.lexists(dest / top):
                    raise ValueError(
                        f"cannot extract {tar_path}: {dest / top} already exists; move or delete it first"
                    )
            dest.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{tar_path.name}.", suffix=".extract", dir=dest))
            try:
                for member, rel in checked:
                    target = tmp / rel
                    if member.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    src = tar.extractfile(member)
                    if src is None:  # pragma: no cover - regular files always have data
                        raise ValueError(f"corrupt archive {tar_path}: no data for {member.name!r}")
                    with src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                for top in tops:
                    os.rename(tmp / top, dest / top)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise ValueError(f"corrupt archive {tar_path}: {_one_line(exc)}") from exc
    except OSError as exc:
        if exc.errno is not None:  # a real I/O failure (disk full, permissions): keep its type
            raise
        raise ValueError(f"corrupt archive {tar_path}: {_one_line(exc)}") from exc  # bad gzip
    return tops


def _one_line(exc: BaseException) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg
