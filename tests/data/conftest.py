"""Shared fixtures for the data-layer tests: tiny CIFAR-format archives and a local HTTP server."""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import tarfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from classbalanced.data import cifar

PER_BATCH = 20  # images per tiny batch file


class Py2StylePickler(pickle._Pickler):
    """Writes bytes and str as Python 2 ``str`` opcodes, like the official cPickle'd CIFAR files."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        if isinstance(obj, str):
            obj = obj.encode("latin1")
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def py2_pickle(obj) -> bytes:
    """Protocol-2 pickle as Python 2 + numpy 1 would write it (``numpy.core.multiarray``)."""
    buf = io.BytesIO()
    Py2StylePickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


@dataclass
class TinyCifar:
    """What a built tiny CIFAR tree contains (expected values for the tests)."""

    name: str
    folder: str
    train_images: np.ndarray
    train_fine: np.ndarray
    test_images: np.ndarray
    test_fine: np.ndarray
    train_coarse: np.ndarray | None = None
    test_coarse: np.ndarray | None = None
    class_names: list[str] = field(default_factory=list)
    coarse_names: list[str] = field(default_factory=list)


def _rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> CIFAR row layout (N, 3072): all red, then green, then blue."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), 3072)


def build_cifar_tree(
    root: Path, kind: str, *, seed: int = 0, per_batch: int = PER_BATCH
) -> TinyCifar:
    """Write a tiny official-format folder (cifar10 or cifar100) under ``root``."""
    rng = np.random.default_rng(seed)
    if kind == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        names = [f"class{i}" for i in range(10)]
        train_x, train_y = [], []
        for b in range(1, 6):
            x = rng.integers(0, 256, size=(per_batch, 32, 32, 3), dtype=np.uint8)
            y = rng.integers(0, 10, size=per_batch)
            train_x.append(x)
            train_y.append(y)
            batch = {
                b"batch_label": f"training batch {b} of 5".encode(),
                b"labels": [int(v) for v in y],
                b"data": _rows(x),
                b"filenames": [f"img_{b}_{i}.png".encode() for i in range(per_batch)],
            }
            (folder / f"data_batch_{b}").write_bytes(py2_pickle(batch))
        tx = rng.integers(0, 256, size=(per_batch, 32, 32, 3), dtype=np.uint8)
        ty = rng.integers(0, 10, size=per_batch)
        test = {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": [int(v) for v in ty],
            b"data": _rows(tx),
            b"filenames": [f"test_{i}.png".encode() for i in range(per_batch)],
        }
        (folder / "test_batch").write_bytes(py2_pickle(test))
        meta = {
            b"num_cases_per_batch": per_batch,
            b"label_names": [n.encode() for n in names],
            b"num_vis": 3072,
        }
        (folder / "batches.meta").write_bytes(py2_pickle(meta))
        return TinyCifar(
            kind,
            folder.name,
            np.concatenate(train_x),
            np.concatenate(train_y),
            tx,
            ty,
            class_names=names,
        )
    if kind != "cifar100":
        raise ValueError(f"kind: expected cifar10 or cifar100, got {kind!r}")
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    fine_names = [f"fine{i}" for i in range(100)]
    coarse_names = [f"coarse{i}" for i in range(20)]
    out = {}
    for split, n in (("train", 5 * per_batch), ("test", per_batch)):
        x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        fine = rng.integers(0, 100, size=n)
        coarse = fine // 5
        out[split] = (x, fine, coarse)
        batch = {
            b"filenames": [f"{split}_{i}.png".encode() for i in range(n)],
            b"batch_label": f"{split}ing batch 1 of 1".encode(),
            b"fine_labels": [int(v) for v in fine],
            b"coarse_labels": [int(v) for v in coarse],
            b"data": _rows(x),
        }
        (folder / split).write_bytes(py2_pickle(batch))
    meta = {
        b"fine_label_names": [n.encode() for n in fine_names],
        b"coarse_label_names": [n.encode() for n in coarse_names],
    }
    (folder / "meta").write_bytes(py2_pickle(meta))
    return TinyCifar(
        kind,
        folder.name,
        out["train"][0],
        out["train"][1],
        out["test"][0],
        out["test"][1],
        out["train"][2],
        out["test"][2],
        fine_names,
        coarse_names,
    )


def tar_gz_folder(folder: Path, archive: Path) -> str:
    """Pack ``folder`` into ``archive`` (tar.gz, folder name at the top); return its md5."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return hashlib.md5(archive.read_bytes()).hexdigest()


@dataclass
class BuiltArchive:
    path: Path
    md5: str
    content: TinyCifar


@pytest.fixture(scope="session")
def cifar_archives(tmp_path_factory) -> dict[str, BuiltArchive]:
    """Tiny cifar10 / cifar100 tar.gz archives (built once per session), keyed like ``ARCHIVES``."""
    built = {}
    for kind in ("cifar10", "cifar100"):
        work = tmp_path_factory.mktemp(f"build_{kind}")
        content = build_cifar_tree(work, kind, seed=1 if kind == "cifar10" else 2)
        archive = tmp_path_factory.mktemp(f"archive_{kind}") / cifar.ARCHIVES[kind].filename
        md5 = tar_gz_folder(work / content.folder, archive)
        built[kind] = BuiltArchive(archive, md5, content)
    return built


@pytest.fixture
def use_test_md5(monkeypatch, cifar_archives):
    """Point ``cifar.ARCHIVES`` at the tiny archives' md5s (same filenames and folders)."""

    def apply(*kinds: str) -> None:
        patched = dict(cifar.ARCHIVES)
        for kind in kinds or ("cifar10", "cifar100"):
            spec = cifar.ARCHIVES[kind]
            patched[kind] = cifar.ArchiveSpec(
                spec.filename, spec.url, cifar_archives[kind].md5, spec.folder
            )
        monkeypatch.setattr(cifar, "ARCHIVES", patched)

    apply()
    return apply


# --------------------------------------------------------------------------- local HTTP server


@dataclass
class Route:
    """How the server answers one path."""

    body: bytes = b""
    status: int = 200
    declared_length: int | None = None  # Content-Length to send (defaults to len(body))
    delay: float = 0.0  # seconds to wait before answering
    fail_first: int = 0  # answer 503 this many times first
    pause_at: int | None = None  # send this many bytes of the body, then wait for ``resume``
    paused: threading.Event = field(default_factory=threading.Event)  # set while waiting
    resume: threading.Event = field(default_factory=threading.Event)


class LocalServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # the http.server API
                path = self.path
                server.hits[path] = server.hits.get(path, 0) + 1
                route = server.routes.get(path)
                if route is None:
                    self.send_error(404, "Not Found")
                    return
                if route.delay:
                    time.sleep(route.delay)
                if server.hits[path] <= route.fail_first:
                    self.send_error(503, "Service Unavailable")
                    return
                if route.status != 200:
                    self.send_error(route.status)
                    return
                self.send_response(200)
                length = len(route.body) if route.declared_length is None else route.declared_length
                self.send_header("Content-Length", str(length))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                try:
                    if route.pause_at is not None:
                        self.wfile.write(route.body[: route.pause_at])
                        self.wfile.flush()
                        route.paused.set()
                        route.resume.wait(10.0)
                        self.wfile.write(route.body[route.pause_at :])
                    else:
                        self.wfile.write(route.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def add(self, path: str, body: bytes = b"", **kwargs) -> str:
        """Serve ``body`` at ``path`` (see ``Route`` for kwargs); return its full URL."""
        self.routes[path] = Route(body, **kwargs)
        return self.url(path)


@pytest.fixture
def http_server():
    """A local HTTP server on 127.0.0.1 (port 0); set ``server.routes[path] = Route(...)``."""
    server = LocalServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


@pytest.fixture
def make_cifar_tree():
    """``make_cifar_tree(root, kind, seed=0, per_batch=20) -> TinyCifar``."""
    return build_cifar_tree


@pytest.fixture
def make_py2_pickle():
    """``make_py2_pickle(obj) -> bytes`` in the official (Python 2, numpy 1) style."""
    return py2_pickle


@pytest.fixture
def make_tar_gz():
    """``make_tar_gz(folder, archive) -> md5``."""
    return tar_gz_folder
