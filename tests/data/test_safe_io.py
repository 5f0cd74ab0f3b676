import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from classbalanced.data import (
    load_pickle_dict,
    restricted_load_pickle,
    safe_extract_tar,
    validate_pickle_dict,
)

# --------------------------------------------------------------------------- restricted unpickler


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_real_numpy_pickles_round_trip(protocol):
    arr = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    blob = pickle.dumps({b"data": arr, b"labels": [1, 2], b"batch_label": b"x"}, protocol=protocol)
    out = restricted_load_pickle(io.BytesIO(blob))
    assert out[b"labels"] == [1, 2]
    assert out[b"data"].dtype == np.uint8
    np.testing.assert_array_equal(out[b"data"], arr)


def test_python2_numpy1_style_pickle_loads(tmp_path, make_py2_pickle):
    arr = np.random.default_rng(0).integers(0, 256, size=(4, 3072), dtype=np.uint8)
    blob = make_py2_pickle({b"data": arr, b"labels": [0, 1, 2, 3]})
    assert b"numpy.core.multiarray\n_reconstruct" in blob  # the numpy 1 spelling
    path = tmp_path / "data_batch_1"
    path.write_bytes(blob)
    out = load_pickle_dict(path)
    assert sorted(out) == ["data", "labels"]
    np.testing.assert_array_equal(out["data"], arr)


class _CreatesFile:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class _RunsShell:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("payload_cls", [_CreatesFile, _RunsShell])
@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_malicious_pickle_is_refused_and_has_no_effect(tmp_path, payload_cls, protocol):
    target = tmp_path / "pwned"
    blob = pickle.dumps({b"data": payload_cls(target)}, protocol=protocol)
    path = tmp_path / "evil_batch"
    path.write_bytes(blob)
    with pytest.raises(
        ValueError, match=r"refusing to unpickle .* from .*evil_batch: not part of the CIFAR format"
    ):
        restricted_load_pickle(path)
    assert not target.exists()


def test_other_globals_refused():
    for obj in (eval, Path("/x"), {1, 2}.__class__, np.float64(1.0)):
        with pytest.raises(ValueError, match="refusing to unpickle"):
            restricted_load_pickle(io.BytesIO(pickle.dumps(obj, protocol=2)))


def test_codecs_encode_only_latin1():
    # A hand-written pickle calling _codecs.encode("x", "rot13") must not be honoured.
    blob = b"c_codecs\nencode\n(X\x01\x00\x00\x00xX\x05\x00\x00\x00rot13tR."
    with pytest.raises(ValueError, match="corrupt pickle"):
        restricted_load_pickle(io.BytesIO(blob))


def test_corrupt_and_missing_pickles(tmp_path):
    blob = pickle.dumps({b"data": np.zeros((3, 4), np.uint8)}, protocol=2)
    truncated = tmp_path / "trunc"
    truncated.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="corrupt pickle .*trunc"):
        restricted_load_pickle(truncated)
    with pytest.raises(FileNotFoundError):
        restricted_load_pickle(tmp_path / "nope")


def test_validate_pickle_dict():
    assert validate_pickle_dict({b"a": 1, "b": 2}, "f") == {"a": 1, "b": 2}
    with pytest.raises(ValueError, match="expected a dict, got list"):
        validate_pickle_dict([1], "f")
    with pytest.raises(ValueError, match="expected bytes or str keys, got int"):
        validate_pickle_dict({1: 2}, "f")


# --------------------------------------------------------------------------- tar


def _tar_with(path: Path, members: list[tarfile.TarInfo], data: bytes = b"payload") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        good = tarfile.TarInfo("pkg/ok.txt")
        good.size = 2
        tar.addfile(good, io.BytesIO(b"ok"))
        for m in members:
            if m.isreg():
                m.size = len(data)
                tar.addfile(m, io.BytesIO(data))
            else:
                tar.addfile(m)
    return path


def _info(name, kind=tarfile.REGTYPE, linkname=""):
    m = tarfile.TarInfo(name)
    m.type = kind
    m.linkname = linkname
    return m


@pytest.mark.parametrize(
    ("member", "why"),
    [
        (_info("pkg/../../escape.txt"), r"'\.\.'"),
        (_info("../escape.txt"), r"'\.\.'"),
        (_info("/tmp/abs_escape.txt"), "absolute"),
        (_info("pkg/link", tarfile.SYMTYPE, "/etc/passwd"), "symlink"),
        (_info("pkg/hard", tarfile.LNKTYPE, "pkg/ok.txt"), "hardlink"),
        (_info("pkg/fifo", tarfile.FIFOTYPE), "device or fifo"),
        (_info("pkg/dev", tarfile.CHRTYPE), "device or fifo"),
    ],
)
def test_unsafe_members_refused_before_writing(tmp_path, member, why):
    archive = _tar_with(tmp_path / "bad.tar.gz", [member])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ValueError, match=f"refusing to extract .*{why}"):
        safe_extract_tar(archive, dest)
    assert list(dest.iterdir()) == []  # not even the good member, no temp folder
    assert not (tmp_path / "escape.txt").exists()


def test_extracts_regular_files_and_folders(tmp_path):
    archive = tmp_path / "good.tar"
    with tarfile.open(archive, "w") as tar:
        tar.addfile(_info("top/sub", tarfile.DIRTYPE))
        for name, data in (
            ("top/sub/a.bin", b"\x00\x01"),
            ("top/b.txt", b"bee"),
            ("other.txt", b"o"),
        ):
            m = _info(name)
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    dest = tmp_path / "out"
    assert safe_extract_tar(archive, dest) == ["other.txt", "top"]
    assert (dest / "top/sub/a.bin").read_bytes() == b"\x00\x01"
    assert (dest / "top/b.txt").read_bytes() == b"bee"
    assert sorted(p.name for p in dest.iterdir()) == ["other.txt", "top"]


def test_corrupt_gzip_leaves_nothing(tmp_path, make_cifar_tree, make_tar_gz):
    tree = make_cifar_tree(tmp_path / "src", "cifar100", per_batch=2)
    archive = tmp_path / "a.tar.gz"
    make_tar_gz(tmp_path / "src" / tree.folder, archive)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) * 2 // 3])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ValueError, match="corrupt archive"):
        safe_extract_tar(archive, dest)
    assert list(dest.iterdir()) == []


def test_disk_failure_mid_extraction_leaves_nothing(tmp_path, monkeypatch):
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        for i in range(3):
            m = _info(f"pkg/f{i}")
            m.size = 1
            tar.addfile(m, io.BytesIO(b"x"))
    dest = tmp_path / "dest"
    dest.mkdir()
    import shutil

    calls = {"n": 0}
    real = shutil.copyfileobj

    def failing_copy(src, dst, length=0):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real(src, dst, length)

    monkeypatch.setattr(shutil, "copyfileobj", failing_copy)
    with pytest.raises(OSError, match="No space left"):
        safe_extract_tar(archive, dest)
    assert list(dest.iterdir()) == []


def test_existing_target_not_overwritten(tmp_path):
    archive = _tar_with(tmp_path / "a.tar.gz", [])
    dest = tmp_path / "dest"
    (dest / "pkg").mkdir(parents=True)
    (dest / "pkg" / "ok.txt").write_text("mine")
    with pytest.raises(ValueError, match="already exists"):
        safe_extract_tar(archive, dest)
    assert (dest / "pkg" / "ok.txt").read_text() == "mine"


# --------------------------------------------------------------------------- atomic writes
