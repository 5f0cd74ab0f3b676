"""CIFAR-10 / CIFAR-100 (fine) / CIFAR-20 (CIFAR-100 coarse): download, verify, extract, load.

``load_cifar(name, data_dir)`` looks in ``data_dir`` for, in order:

1. the extracted folder (``cifar-10-batches-py`` / ``cifar-100-python``) with all
   its batch files;
2. the archive (``*.tar.gz``), whose MD5 is verified *before* extraction;
3. otherwise the archive is downloaded (``base_url``, else the environment
   variable ``CLASSBALANCED_CIFAR_URL``, else the official URL), verified and
   extracted.

Batch files are read only through the restricted unpickler and validated
(keys, ``data`` uint8 of shape (N, 3072), labels in range). Images come back as
uint8 (N, 32, 32, 3) (HWC), labels as int64 (N,).

Example:
    >>> ARCHIVES["cifar10"].folder
    'cifar-10-batches-py'
    >>> archive_url("cifar100", base_url="http://mirror.local/cifar/")
    'http://mirror.local/cifar/cifar-100-python.tar.gz'
"""

from __future__ import annotations

import glob
import hashlib
import http.client
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from tqdm import tqdm

from .arrays import ImageArrays
from .safe_io import load_pickle_dict, safe_extract_tar

__all__ = [
    "ARCHIVES",
    "DATASETS",
    "URL_ENV_VAR",
    "ArchiveSpec",
    "CifarData",
    "DownloadError",
    "archive_url",
    "cifar_arrays",
    "download",
    "load_cifar",
    "md5_file",
]

URL_ENV_VAR = "CLASSBALANCED_CIFAR_URL"


@dataclass(frozen=True)
class ArchiveSpec:
    """Where a CIFAR archive comes from and what it unpacks to."""

    filename: str
    url: str
    md5: str
    folder: str


ARCHIVES: dict[str, ArchiveSpec] = {
    "cifar10": ArchiveSpec(
        filename="cifar-10-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
    ),
    "cifar100": ArchiveSpec(
        filename="cifar-100-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
    ),
}

#: the CIFAR variants (cifar20: CIFAR-100 with its 20 coarse labels)
CifarName = Literal["cifar10", "cifar100", "cifar20"]
DATASETS: tuple[str, ...] = get_args(CifarName)

# dataset -> (archive key, train files, test files, meta file, label key, names key, classes)
_LAYOUT: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], str, str, str, int]] = {
    "cifar10": (
        "cifar10",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "batches.meta",
        "labels",
        "label_names",
        10,
    ),
    "cifar100": ("cifar100", ("train",), ("test",), "meta", "fine_labels", "fine_label_names", 100),
    "cifar20": (
        "cifar100",
        ("train",),
        ("test",),
        "meta",
        "coarse_labels",
        "coarse_label_names",
        20,
    ),
}

_CHUNK = 1 << 16


class DownloadError(OSError):
    """A download that failed after all retries (network error, HTTP error, truncated body)."""


@dataclass
class CifarData:
    """A CIFAR dataset in memory.

    Attributes:
        train_images: uint8 (N, 32, 32, 3).
        train_labels: int64 (N,).
        test_images: uint8 (M, 32, 32, 3).
        test_labels: int64 (M,).
        class_names: one name per class.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]


def md5_file(path: str | os.PathLike) -> str:
    """Hex MD5 of a file, read in chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_name(name: str) -> str:
    if name not in DATASETS:
        raise ValueError(f"unknown CIFAR dataset: expected one of {DATASETS}, got {name!r}")
    return name


def archive_url(name: str, base_url: str | None = None) -> str:
    """URL of the archive for dataset ``name``: ``base_url/filename``, else ``$CLASSBALANCED_CIFAR_URL/filename``, else the official URL."""
    spec = ARCHIVES[_LAYOUT[_check_name(name)][0]]
    base = base_url if base_url else os.environ.get(URL_ENV_VAR, "")
    if base:
        return base.rstrip("/") + "/" + spec.filename
    return spec.url


# --------------------------------------------------------------------------- download


class _Retryable(Exception):
    pass


def _fetch_once(url: str, part: Path, timeout: float, progress: bool) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # a user-chosen mirror
            length_header = resp.headers.get("Content-Length")
            expected = int(length_header) if length_header and length_header.isdigit() else None
            received = 0
            with (
                open(part, "wb") as out,
                tqdm(
                    total=expected,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=Path(url).name or "download",
                    file=sys.stderr,
                    disable=not progress,
                    leave=False,
                ) as bar,
            ):
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        if expected is not None and received != expected:
            raise _Retryable(f"truncated body: expected {expected} bytes, got {received}")
    except urllib.error.HTTPError as exc:
        exc.close()  # the error carries the open response
        if exc.code >= 500 or exc.code in (408, 429):
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from exc
        raise DownloadError(f"download failed for {url}: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise _Retryable(f"{exc.reason}") from exc
    except (http.client.HTTPException, TimeoutError, ConnectionError) as exc:
        raise _Retryable(f"{type(exc).__name__}: {exc}") from exc


def _alive(pid: int) -> bool:
    if os.name != "posix":  # Windows' os.kill(pid, 0) would send CTRL_C_EVENT
        return True
    try:
        os.kill(pid, 0)  # signal 0: nothing is sent
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's process
        return True
    return True


def _partial_file(dest: Path) -> Path:
    """``.<name>.<host>.<pid>.<thread>.part`` next to ``dest``: this download's alone (two
    processes or threads fetching ``dest`` at once would truncate and rename each other's file),
    after deleting those that processes of this host no longer running left (killed mid-download)."""
    prefix = f".{dest.name}.{socket.gethostname()}."
    for old in dest.parent.glob(glob.escape(prefix) + "*.part"):
        pid = old.name[len(prefix) :].split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            old.unlink(missing_ok=True)
    return dest.parent / f"{prefix}{os.getpid()}.{threading.get_ident()}.part"


def download(
    url: str,
    dest_path: str | os.PathLike,
    md5: str | None,
    *,
    timeout: float = 30.0,
    retries: int = 3,
    backoff: float = 1.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest_path`` via a partial file next to it, verifying ``md5``.

    Network errors, timeouts, HTTP 5xx and truncated bodies are retried up to
    ``retries`` more times, sleeping ``backoff * 2**k`` seconds before retry k.
    The body streams into a partial file of this process and thread alone
    (:func:`_partial_file`: two processes, e.g. DDP ranks, downloading the same file at once
    each write their own; tqdm progress on stderr unless
    ``progress=False``), is MD5-checked and only then ``os.replace``-d into place;
    a partial or mismatching file is deleted, never used.

    Raises:
        DownloadError (an OSError): network/HTTP failure after all attempts.
        ValueError: the downloaded file's MD5 is not ``md5``.
    """
    if not isinstance(url, str) or not url:
        raise TypeError(f"url: expected a non-empty str, got {url!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries: expected an int >= 0, got {retries!r}")
    if not timeout or timeout <= 0:
        raise ValueError(f"timeout: expected seconds > 0, got {timeout!r}")
    dest = Path(dest_path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _partial_file(dest)
    last = "unknown error"
    try:
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(max(0.0, backoff) * 2 ** (attempt - 1))
            try:
                _fetch_once(url, part, timeout, progress)
            except _Retryable as exc:
                last = " ".join(str(exc).split())
                part.unlink(missing_ok=True)
                continue
            if md5 is not None:
                got = md5_file(part)
                if got.lower() != md5.lower():
                    raise ValueError(
                        f"checksum mismatch for {url}: expected md5 {md5}, got {got}; the file was deleted"
                    )
            os.replace(part, dest)
            return dest
        raise DownloadError(f"download failed for {url} after {retries + 1} attempts: {last}")
    finally:
        part.unlink(missing_ok=True)


# --------------------------------------------------------------------------- loading


def _missing_files(folder: Path, files: tuple[str, ...]) -> list[str]:
    return [f for f in files if not (folder / f).is_file()]


def _as_str(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _read_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = load_pickle_dict(path)
    for key in ("data", label_key):
        if key not in batch:
            raise ValueError(
                f"corrupt CIFAR batch {path}: expected key {key!r}, got keys {sorted(batch)}"
            )
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        got = data.dtype if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"corrupt CIFAR batch {path}: expected uint8 'data', got {got}")
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] < 1:
        raise ValueError(
            f"corrupt CIFAR batch {path}: expected 'data' of shape (N, 3072), got {data.shape}"
        )
    try:
        labels = np.asarray(batch[label_key])
    except (TypeError, ValueError) as exc:  # pragma: no cover - ragged nested lists
        raise ValueError(f"corrupt CIFAR batch {path}: unreadable {label_key!r}") from exc
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"corrupt CIFAR batch {path}: expected integer {label_key!r} of shape (N,), got {labels.dtype} {labels.shape}"
        )
    if len(labels) != len(data):
        raise ValueError(
            f"corrupt CIFAR batch {path}: expected {len(data)} {label_key!r} (one per image), got {len(labels)}"
        )
    if labels.min() < 0 or labels.max() >= num_classes:
        bad = int(labels.min() if labels.min() < 0 else labels.max())
        raise ValueError(
            f"corrupt CIFAR batch {path}: expected {label_key!r} in [0, {num_classes}), got {bad}"
        )
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels.astype(np.int64)


def _read_split(folder: Path, files: tuple[str, ...], label_key: str, num_classes: int):
    parts = [_read_batch(folder / f, label_key, num_classes) for f in files]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _read_names(path: Path, key: str, num_classes: int) -> list[str]:
    meta = load_pickle_dict(path)
    names = meta.get(key)
    if not isinstance(names, list | tuple) or not all(isinstance(n, bytes | str) for n in names):
        raise ValueError(f"corrupt CIFAR meta file {path}: expected a list of names under {key!r}")
    if len(names) != num_classes:
        raise ValueError(
            f"corrupt CIFAR meta file {path}: expected {num_classes} {key!r}, got {len(names)}"
        )
    return [_as_str(n) for n in names]


def load_cifar(
    name: str,
    data_dir: str | os.PathLike,
    *,
    download: bool = True,
    base_url: str | None = None,
    progress: bool = True,
) -> CifarData:
    """Load CIFAR-10, CIFAR-100 (fine labels) or CIFAR-20 (CIFAR-100 coarse labels).

    Args:
        name: "cifar10", "cifar100" or "cifar20".
        data_dir: folder holding (or to receive) the archive and its extracted folder.
        download: fetch the archive when neither folder nor archive is present.
        base_url: mirror folder URL (``base_url + "/" + filename``); default
            ``$CLASSBALANCED_CIFAR_URL`` then the official URL.
        progress: show a download progress bar on stderr.

    Raises:
        FileNotFoundError: nothing found and ``download=False``.
        ValueError: checksum mismatch, incomplete folder, corrupt or unsafe files.
        DownloadError: the download failed.
    """
    archive_key, train_files, test_files, meta_file, label_key, names_key, num_classes = _LAYOUT[
        _check_name(name)
    ]
    spec = ARCHIVES[archive_key]
    root = Path(data_dir)
    folder = root / spec.folder
    required = (*train_files, *test_files, meta_file)
    if not folder.is_dir():
        archive = root / spec.filename
        if archive.is_file():
            got = md5_file(archive)
            if got.lower() != spec.md5.lower():
                raise ValueError(
                    f"checksum mismatch for {archive}: expected md5 {spec.md5}, got {got}; "
                    "delete it and re-run to download again"
                )
        elif download:
            _download_file(archive_url(name, base_url), archive, spec.md5, progress=progress)
        else:
            raise FileNotFoundError(
                f"{name} not found in {root}: expected folder {spec.folder} or archive {spec.filename}; "
                "enable downloading (drop --no-download) or place the archive there"
            )
        try:
            tops = safe_extract_tar(archive, root)
        except (ValueError, OSError):
            # Another process (e.g. a second DDP rank) may have finished extracting first.
            if not (folder.is_dir() and not _missing_files(folder, required)):
                raise
            tops = [spec.folder]
        if spec.folder not in tops:
            raise ValueError(
                f"unexpected archive content in {archive}: expected folder {spec.folder}, got {tops}"
            )
    missing = _missing_files(folder, required)
    if missing:
        raise ValueError(
            f"incomplete {name} folder {folder}: expected files {list(required)}, missing {missing}; "
            "delete the folder and re-run"
        )
    train_images, train_labels = _read_split(folder, train_files, label_key, num_classes)
    test_images, test_labels = _read_split(folder, test_files, label_key, num_classes)
    class_names = _read_names(folder / meta_file, names_key, num_classes)
    return CifarData(train_images, train_labels, test_images, test_labels, class_names)


_download_file = download


def cifar_arrays(data: CifarData) -> tuple[ImageArrays, ImageArrays]:
    """(train, test) ``ImageArrays`` views of a ``CifarData``."""
    if not isinstance(data, CifarData):
        raise TypeError(f"cifar_arrays: expected CifarData, got {type(data).__name__}")
    names = list(data.class_names)
    return (
        ImageArrays(data.train_images, data.train_labels, names),
        ImageArrays(data.test_images, data.test_labels, names),
    )
