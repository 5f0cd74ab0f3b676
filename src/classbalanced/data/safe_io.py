"""Safe file input/output: a restricted unpickler, a safe tar extractor, atomic writes.

Three guarantees the rest of the library relies on:

* ``restricted_load_pickle`` only reconstructs what the official CIFAR python
  pickles contain (dicts, lists, bytes, ints and uint8 numpy arrays); any other
  global (``os.system``, ``builtins.eval``, ...) is refused *before* it is called.
* ``safe_extract_tar`` checks every member first (no absolute paths, no ``..``,
  no links or devices), extracts into a temporary sibling folder and only then
  renames the result into place, so a failure never leaves a half-extracted tree.
* ``atomic_save`` and the ``atomic_write_*`` helpers write a temporary file in the
  destination folder, ``fsync`` it and ``os.replace`` it over the target: the
  old file is either left intact or fully replaced, never truncated.

Example:
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> p = os.path.join(d, "run.json")
    >>> atomic_write_json(p, {"epoch": 3})
    >>> open(p).read()
    '{\\n  "epoch": 3\\n}\\n'
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import importlib
import json
import os
import pickle
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

__all__ = [
    "atomic_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "file_sha256",
    "load_pickle_dict",
    "restricted_load_pickle",
    "safe_extract_tar",
    "validate_pickle_dict",
]

PathLike = str | os.PathLike


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


# --------------------------------------------------------------------------- atomic writes


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not supported on every platform / filesystem
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_save(path: PathLike, write_fn: Callable[[str], Any]) -> None:
    """Atomically create or replace ``path`` with what ``write_fn(tmp_path)`` writes.

    ``write_fn`` receives the path of a temporary file in the same folder (so the
    final ``os.replace`` is a same-filesystem rename); it is fsynced, then moved
    over ``path``. If ``write_fn`` raises, the temporary file is removed and the
    old ``path`` (if any) is left untouched. Parent folders are created.

    Example:
        >>> import os, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "ckpt.bin")
        >>> atomic_save(p, lambda tmp: open(tmp, "wb").write(b"\\x00\\x01"))
        >>> os.path.getsize(p)
        2
    """
    if not callable(write_fn):
        raise TypeError(f"atomic_save: expected a callable write_fn, got {type(write_fn).__name__}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_current_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Atomically write ``data`` to ``path`` (see ``atomic_save``)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"atomic_write_bytes: expected bytes, got {type(data).__name__}")

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()

    atomic_save(path, write)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """Atomically write ``text`` to ``path`` (see ``atomic_save``)."""
    if not isinstance(text, str):
        raise TypeError(f"atomic_write_text: expected str, got {type(text).__name__}")
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as JSON (``indent=2``, keys in insertion order, trailing newline).

    The object is serialised before anything touches the disk, so a value that is
    not JSON-serialisable raises TypeError and leaves ``path`` untouched.
    """
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    atomic_write_text(path, text)


def file_sha256(path: PathLike, *, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of the file at ``path``, read in ``chunk``-byte pieces.

    Example:
        >>> import os, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "a.bin")
        >>> atomic_write_bytes(p, b"abc")
        >>> file_sha256(p)[:16]
        'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _one_line(exc: BaseException) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg
