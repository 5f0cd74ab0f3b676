"""Atomic file writes and file checksums: the base every writer of the package uses.

``atomic_save`` and the ``atomic_write_*`` helpers write a temporary file in the
destination folder, ``fsync`` it and ``os.replace`` it over the target: the old
file is either left intact or fully replaced, never truncated; a crash leaves no
half-written file behind.

Example:
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> p = os.path.join(d, "run.json")
    >>> atomic_write_json(p, {"epoch": 3})
    >>> open(p).read()
    '{\\n  "epoch": 3\\n}\\n'
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "PathLike",
    "atomic_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "file_sha256",
    "refuse_overwriting_inputs",
]

#: what every function of the package taking a path accepts
PathLike = str | os.PathLike


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


def refuse_overwriting_inputs(outputs: dict[str, str | None], inputs) -> None:
    """ValueError before anything is written when an output file is an existing folder,
    one of the command's inputs (files or folders), an existing file inside an input folder,
    or the path of another output. ``outputs`` maps a flag to its path (``None``: not given).
    Paths are compared after resolving links, ``..`` and ``.``.

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> refuse_overwriting_inputs({"--output": d + "/x.json"}, [d])  # doctest: +ELLIPSIS
    >>> refuse_overwriting_inputs({"--output": d + "/x.json"}, [d + "/x.json"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: --output .../x.json would overwrite the input .../x.json: expected an output path outside the command's inputs
    """
    given = [str(p) for p in inputs if p]
    claimed: dict[str, str] = {}
    for flag, path in outputs.items():
        if not path:
            continue
        if os.path.isdir(path):
            raise ValueError(f"{flag} {path} is a folder: expected a file path")
        parent = Path(path).parent
        while not parent.exists() and parent != parent.parent:  # nearest existing: a folder
            parent = parent.parent
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"{flag} {path}: {parent} is a file, not a folder")
        target = os.path.realpath(path)
        for source in given:
            real = os.path.realpath(source)
            inside = target.startswith(real.rstrip(os.sep) + os.sep) and os.path.exists(target)
            if target == real or inside:
                raise ValueError(
                    f"{flag} {path} would overwrite the input {source}: expected an output path "
                    "outside the command's inputs"
                )
        if target in claimed and claimed[target] != flag:
            raise ValueError(f"{flag} and {claimed[target]} name the same file {path}")
        claimed[target] = flag
