import hashlib
import os
import pickle
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import time

import numpy as np
import pytest

from classbalanced.data import cifar
from classbalanced.data.cifar import (
    ARCHIVES,
    DATASETS,
    DownloadError,
    archive_url,
    cifar_arrays,
    download,
    load_cifar,
)


def test_registry_matches_official_archives():
    assert DATASETS == ("cifar10", "cifar100", "cifar20")
    assert ARCHIVES["cifar10"].md5 == "c58f30108f718f92721af3b95e74349a"
    assert ARCHIVES["cifar100"].md5 == "eb9058c3a382ffc7106e4002c42a8d85"
    assert ARCHIVES["cifar10"].url.endswith("/~kriz/" + ARCHIVES["cifar10"].filename)
    assert ARCHIVES["cifar100"].folder == "cifar-100-python"
    with pytest.raises(AttributeError):
        ARCHIVES["cifar10"].md5 = "x"  # frozen


def test_archive_url_precedence(monkeypatch):
    monkeypatch.delenv(cifar.URL_ENV_VAR, raising=False)
    assert archive_url("cifar20") == ARCHIVES["cifar100"].url
    monkeypatch.setenv(cifar.URL_ENV_VAR, "http://env.local/m/")
    assert archive_url("cifar10") == "http://env.local/m/cifar-10-python.tar.gz"
    assert (
        archive_url("cifar10", base_url="http://arg.local")
        == "http://arg.local/cifar-10-python.tar.gz"
    )
    with pytest.raises(ValueError, match="unknown CIFAR dataset"):
        archive_url("cifar7")


# --------------------------------------------------------------------------- download


def test_download_verifies_and_moves_into_place(tmp_path, http_server):
    body = bytes(range(256)) * 1000
    url = http_server.add("/f.bin", body)
    dest = tmp_path / "d" / "f.bin"
    out = download(url, dest, hashlib.md5(body).hexdigest(), progress=False)
    assert out == dest and dest.read_bytes() == body
    assert sorted(p.name for p in dest.parent.iterdir()) == ["f.bin"]


def test_download_404_is_one_clear_error_and_leaves_nothing(tmp_path, http_server):
    url = http_server.url("/missing.tar.gz")
    dest = tmp_path / "missing.tar.gz"
    with pytest.raises(
        DownloadError, match=r"download failed for .*/missing\.tar\.gz: HTTP 404"
    ) as info:
        download(url, dest, None, retries=2, backoff=0, progress=False)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, OSError)
    assert http_server.hits["/missing.tar.gz"] == 1  # a 404 is not retried
    assert list(tmp_path.iterdir()) == []


def test_download_truncated_body_retried_then_fails(tmp_path, http_server):
    body = b"x" * 50_000
    url = http_server.add("/t.bin", body[:1000], declared_length=len(body))
    dest = tmp_path / "t.bin"
    with pytest.raises(
        DownloadError, match=r"download failed for .*/t\.bin after 3 attempts: .*truncated"
    ):
        download(url, dest, hashlib.md5(body).hexdigest(), retries=2, backoff=0, progress=False)
    assert http_server.hits["/t.bin"] == 3
    assert list(tmp_path.iterdir()) == []


def test_download_retries_transient_errors(tmp_path, http_server, monkeypatch):
    sleeps = []
    monkeypatch.setattr(cifar.time, "sleep", sleeps.append)
    body = b"hello"
    url = http_server.add("/flaky", body, fail_first=2)
    dest = tmp_path / "flaky"
    download(url, dest, hashlib.md5(body).hexdigest(), retries=3, backoff=0.5, progress=False)
    assert dest.read_bytes() == body
    assert http_server.hits["/flaky"] == 3
    assert sleeps == [0.5, 1.0]  # exponential back-off


def test_download_timeout_is_retried_then_reported(tmp_path, http_server):
    url = http_server.add("/slow", b"late", delay=1.0)
    with pytest.raises(DownloadError, match="after 2 attempts"):
        download(url, tmp_path / "slow", None, timeout=0.2, retries=1, backoff=0, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_checksum_mismatch_deletes_file(tmp_path, http_server):
    url = http_server.add("/wrong", b"not what you expected")
    dest = tmp_path / "wrong"
    with pytest.raises(
        ValueError, match=f"checksum mismatch for {url}: expected md5 {'0' * 32}, got"
    ):
        download(url, dest, "0" * 32, retries=3, backoff=0, progress=False)
    assert http_server.hits["/wrong"] == 1
    assert list(tmp_path.iterdir()) == []


def test_two_downloads_of_one_file_at_once_do_not_share_a_partial_file(tmp_path, http_server):
    # two DDP ranks starting on an empty --data-dir download the same archive at once
    body = bytes(range(256)) * 1024
    md5 = hashlib.md5(body).hexdigest()
    slow = http_server.add("/a/f.bin", body, pause_at=len(body) // 2)
    dest = tmp_path / "f.bin"
    errors = []

    def first() -> None:
        try:
            download(slow, dest, md5, retries=0, progress=False)
        except Exception as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    route = http_server.routes["/a/f.bin"]
    assert route.paused.wait(10.0)
    time.sleep(0.2)  # the first download has its partial file open, half written
    download(http_server.add("/b/f.bin", body), dest, md5, retries=0, progress=False)
    route.resume.set()
    thread.join(10.0)
    assert errors == []
    assert dest.read_bytes() == body
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no partial file left
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o666 & ~umask  # readable as any other file


def test_partial_files_of_killed_downloads_are_removed_by_the_next_one(tmp_path, http_server):
    # a download killed outright (SIGKILL, out of memory) cannot delete its partial file
    body = b"archive" * 1000
    dest = tmp_path / "f.bin"
    download(http_server.add("/f.bin", body), dest, None, progress=False)
    (tmp_path / "keep.txt").write_text("the user's")
    dest.unlink()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid names no process now
    host = socket.gethostname()
    stale = tmp_path / f".f.bin.{host}.{dead.pid}.1.part"
    live = tmp_path / f".f.bin.{host}.1.1.part"  # pid 1 lives: another download in progress
    for path in (stale, live):
        path.write_bytes(body[:100])
    download(http_server.url("/f.bin"), dest, hashlib.md5(body).hexdigest(), progress=False)
    assert dest.read_bytes() == body
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "f.bin", "keep.txt"])


def test_download_keeps_previous_file_on_failure(tmp_path, http_server):
    dest = tmp_path / "keep.bin"
    dest.write_bytes(b"previous")
    with pytest.raises(DownloadError):
        download(http_server.url("/none"), dest, None, retries=0, progress=False)
    assert dest.read_bytes() == b"previous"


# --------------------------------------------------------------------------- load_cifar


def _check_cifar10(data, content):
    np.testing.assert_array_equal(data.train_images, content.train_images)
    np.testing.assert_array_equal(data.train_labels, content.train_fine)
    np.testing.assert_array_equal(data.test_images, content.test_images)
    np.testing.assert_array_equal(data.test_labels, content.test_fine)
    assert data.class_names == content.class_names
    assert data.train_images.dtype == np.uint8 and data.train_images.shape[1:] == (32, 32, 3)
    assert data.train_labels.dtype == np.int64


def test_load_cifar10_downloads_verifies_extracts(
    tmp_path, http_server, cifar_archives, use_test_md5
):
    built = cifar_archives["cifar10"]
    http_server.add("/mirror/" + built.path.name, built.path.read_bytes())
    data = load_cifar("cifar10", tmp_path, base_url=http_server.url("/mirror"), progress=False)
    _check_cifar10(data, built.content)
    assert len(data.train_labels) == 5 * 20 and len(data.test_labels) == 20
    assert (tmp_path / ARCHIVES["cifar10"].filename).is_file()
    assert (tmp_path / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*"))

    # Second call: uses the extracted folder, no network.
    http_server.routes.clear()
    again = load_cifar("cifar10", tmp_path, download=False)
    _check_cifar10(again, built.content)
    assert http_server.hits["/mirror/" + built.path.name] == 1


def test_env_var_mirror(tmp_path, http_server, cifar_archives, use_test_md5, monkeypatch):
    built = cifar_archives["cifar100"]
    http_server.add("/env/" + built.path.name, built.path.read_bytes())
    monkeypatch.setenv(cifar.URL_ENV_VAR, http_server.url("/env"))
    data = load_cifar("cifar100", tmp_path, progress=False)
    assert http_server.hits["/env/" + built.path.name] == 1
    np.testing.assert_array_equal(data.train_labels, built.content.train_fine)


def test_cifar100_and_cifar20_from_local_archive(tmp_path, cifar_archives, use_test_md5):
    built = cifar_archives["cifar100"]
    shutil.copy(built.path, tmp_path / built.path.name)
    fine = load_cifar("cifar100", tmp_path, download=False)
    coarse = load_cifar("cifar20", tmp_path, download=False)
    np.testing.assert_array_equal(fine.train_images, built.content.train_images)
    np.testing.assert_array_equal(fine.train_labels, built.content.train_fine)
    np.testing.assert_array_equal(fine.test_labels, built.content.test_fine)
    np.testing.assert_array_equal(coarse.train_labels, built.content.train_coarse)
    np.testing.assert_array_equal(coarse.test_labels, built.content.test_coarse)
    assert fine.class_names == built.content.class_names and len(fine.class_names) == 100
    assert coarse.class_names == built.content.coarse_names and len(coarse.class_names) == 20


def test_checksum_mismatch_refused_and_not_extracted(tmp_path, cifar_archives):
    # ARCHIVES keeps the official md5, which the tiny archive does not match.
    built = cifar_archives["cifar10"]
    local = tmp_path / built.path.name
    shutil.copy(built.path, local)
    expected = ARCHIVES["cifar10"].md5
    with pytest.raises(
        ValueError,
        match=f"checksum mismatch for .*{local.name}: expected md5 {expected}, got {built.md5}; delete it and re-run",
    ):
        load_cifar("cifar10", tmp_path, download=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [local.name]
    assert local.read_bytes() == built.path.read_bytes()  # user's file untouched


def test_nothing_there_without_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar10 not found"):
        load_cifar("cifar10", tmp_path, download=False)


def test_incomplete_folder_is_reported(tmp_path, make_cifar_tree):
    make_cifar_tree(tmp_path, "cifar10", per_batch=3)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(ValueError, match=r"incomplete cifar10 folder .*missing \['data_batch_3'\]"):
        load_cifar("cifar10", tmp_path, download=False)


def test_malicious_batch_inside_archive_refused(
    tmp_path, make_cifar_tree, make_tar_gz, monkeypatch
):
    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    make_cifar_tree(tmp_path / "src", "cifar10", per_batch=2)
    folder = tmp_path / "src" / "cifar-10-batches-py"
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    archive = tmp_path / "data" / ARCHIVES["cifar10"].filename
    archive.parent.mkdir()
    md5 = make_tar_gz(folder, archive)
    spec = ARCHIVES["cifar10"]
    monkeypatch.setitem(
        cifar.ARCHIVES, "cifar10", cifar.ArchiveSpec(spec.filename, spec.url, md5, spec.folder)
    )
    with pytest.raises(
        ValueError, match=r"refusing to unpickle (builtins|io)\.open from .*test_batch"
    ):
        load_cifar("cifar10", tmp_path / "data", download=False)
    assert not (tmp_path / "pwned").exists()


def test_archive_with_path_traversal_refused(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    archive = data_dir / ARCHIVES["cifar10"].filename
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/../../escaped")
        info.size = 1
        import io

        tar.addfile(info, io.BytesIO(b"x"))
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    spec = ARCHIVES["cifar10"]
    monkeypatch.setitem(
        cifar.ARCHIVES, "cifar10", cifar.ArchiveSpec(spec.filename, spec.url, md5, spec.folder)
    )
    with pytest.raises(ValueError, match="refusing to extract"):
        load_cifar("cifar10", data_dir, download=False)
    assert not (tmp_path / "escaped").exists()
    assert sorted(p.name for p in data_dir.iterdir()) == [archive.name]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b.pop(b"data"), "expected key 'data'"),
        (
            lambda b: b.update({b"data": b[b"data"].astype(np.float32)}),
            "expected uint8 'data', got float32",
        ),
        (
            lambda b: b.update({b"data": b[b"data"][:, :100]}),
            r"expected 'data' of shape \(N, 3072\)",
        ),
        (lambda b: b.update({b"labels": b[b"labels"][:-1]}), "expected 3 'labels'"),
        (lambda b: b.update({b"labels": [0, 1, 10]}), r"expected 'labels' in \[0, 10\), got 10"),
    ],
)
def test_corrupt_batch_contents(tmp_path, make_cifar_tree, make_py2_pickle, mutate, message):
    make_cifar_tree(tmp_path, "cifar10", per_batch=3)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch = {
        b"data": np.zeros((3, 3072), np.uint8),
        b"labels": [0, 1, 2],
        b"batch_label": b"training batch 2 of 5",
    }
    mutate(batch)
    path.write_bytes(make_py2_pickle(batch))
    with pytest.raises(ValueError, match=f"corrupt CIFAR batch .*data_batch_2: {message}"):
        load_cifar("cifar10", tmp_path, download=False)


def test_truncated_batch_file(tmp_path, make_cifar_tree):
    make_cifar_tree(tmp_path, "cifar10", per_batch=3)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ValueError, match="corrupt pickle .*data_batch_1"):
        load_cifar("cifar10", tmp_path, download=False)


def test_cifar_arrays(tmp_path, make_cifar_tree):
    content = make_cifar_tree(tmp_path, "cifar10", per_batch=4)
    train, test = cifar_arrays(load_cifar("cifar10", tmp_path, download=False))
    assert len(train) == 20 and len(test) == 4
    assert train.image_shape == (32, 32, 3) and train.num_classes == 10
    np.testing.assert_array_equal(train.counts(), np.bincount(content.train_fine, minlength=10))
    with pytest.raises(TypeError):
        cifar_arrays("nope")
