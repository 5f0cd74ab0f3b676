import pickle
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from classbalanced.data import ImageArrays, load_digits, load_image_folder, load_npz

# --------------------------------------------------------------------------- ImageArrays


def _arrays(n=6, classes=3):
    images = np.arange(n * 2 * 2 * 3, dtype=np.uint8).reshape(n, 2, 2, 3)
    labels = np.arange(n) % classes
    return ImageArrays(images, labels, [f"c{i}" for i in range(classes)])


def test_image_arrays_basics():
    ds = _arrays()
    assert ds.labels.dtype == np.int64
    assert ds.num_classes == 3 and ds.image_shape == (2, 2, 3) and len(ds) == 6
    assert ds.counts().tolist() == [2, 2, 2]
    sub = ds.subset(np.array([5, 0, 3]))
    np.testing.assert_array_equal(sub.images, ds.images[[5, 0, 3]])
    assert sub.labels.tolist() == [2, 0, 0]
    assert sub.counts().tolist() == [2, 0, 1]
    assert sub.class_names == ds.class_names


@pytest.mark.parametrize(
    ("images", "labels", "names", "exc", "msg"),
    [
        (
            np.zeros((2, 2, 2, 1), np.float32),
            [0, 1],
            ["a", "b"],
            TypeError,
            "expected uint8 images, got float32",
        ),
        (
            np.zeros((2, 2, 2), np.uint8),
            [0, 1],
            ["a", "b"],
            ValueError,
            r"expected shape \(N, H, W, C\)",
        ),
        (
            np.zeros((2, 2, 2, 1), np.uint8),
            [0],
            ["a", "b"],
            ValueError,
            "expected one label per image",
        ),
        (
            np.zeros((2, 2, 2, 1), np.uint8),
            [0.0, 1.0],
            ["a", "b"],
            TypeError,
            "expected integer labels",
        ),
        (
            np.zeros((2, 2, 2, 1), np.uint8),
            [0, 2],
            ["a", "b"],
            ValueError,
            r"expected values in \[0, 2\), got 2",
        ),
    ],
)
def test_image_arrays_validation(images, labels, names, exc, msg):
    with pytest.raises(exc, match=msg):
        ImageArrays(images, np.asarray(labels), names)


def test_subset_validation():
    ds = _arrays()
    with pytest.raises(ValueError, match=r"expected indices in \[0, 6\), got 6"):
        ds.subset([0, 6])
    with pytest.raises(TypeError, match="integer indices"):
        ds.subset(np.array([0.5]))
    assert len(ds.subset([])) == 0


# --------------------------------------------------------------------------- npz


def test_load_npz_gray_and_color(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, size=(5, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "g.npz", x=x, y=np.array([0, 1, 1, 3, 0], dtype=np.int32))
    ds = load_npz(tmp_path / "g.npz")
    assert ds.images.shape == (5, 4, 4, 1)
    np.testing.assert_array_equal(ds.images[..., 0], x)
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [0, 1, 1, 3, 0]
    assert ds.class_names == ["0", "1", "2", "3"]

    rgb = np.zeros((2, 3, 3, 3), np.uint8)
    np.savez_compressed(
        tmp_path / "c.npz", x=rgb, y=np.array([1, 0]), class_names=np.array(["cat", "dog", "eel"])
    )
    ds = load_npz(tmp_path / "c.npz")
    assert ds.image_shape == (3, 3, 3) and ds.class_names == ["cat", "dog", "eel"]


def _save(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("arrays", "msg"),
    [
        (
            {"x": np.zeros((2, 3, 3), np.float32), "y": np.array([0, 1])},
            "expected uint8 images, got float32",
        ),
        ({"y": np.array([0, 1])}, "missing key 'x'"),
        ({"x": np.zeros((2, 3, 3), np.uint8)}, "missing key 'y'"),
        (
            {"x": np.zeros((2, 3, 3), np.uint8), "y": np.array([0, 1, 1])},
            "length mismatch .*expected 2 labels.*got 3",
        ),
        (
            {"x": np.zeros((2, 3, 3), np.uint8), "y": np.array([0.0, 1.0])},
            "expected integer labels, got float64",
        ),
        ({"x": np.zeros((2, 3, 3), np.uint8), "y": np.array([0, -1])}, "negative label .*got -1"),
        ({"x": np.zeros((0, 3, 3), np.uint8), "y": np.zeros(0, np.int64)}, "empty dataset"),
        ({"x": np.zeros((2, 3, 3, 2), np.uint8), "y": np.array([0, 1])}, "C in 1/3/4"),
        (
            {
                "x": np.zeros((2, 3, 3), np.uint8),
                "y": np.array([0, 2]),
                "class_names": np.array(["a"]),
            },
            "too few class_names",
        ),
    ],
)
def test_load_npz_errors(tmp_path, arrays, msg):
    path = _save(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=msg) as info:
        load_npz(path)
    assert "\n" not in str(info.value)


def test_a_stray_huge_label_is_refused_before_naming_a_class_per_index(tmp_path):
    # -1 ("unlabelled") stored as uint32 is 4294967295: the default names "0", "1", ... of
    # that many classes would take hundreds of GB; 10**6 shows the same without the memory
    x = np.zeros((3, 2, 2), np.uint8)
    path = _save(tmp_path / "stray.npz", x=x, y=np.array([0, 1, 10**6], np.uint32))
    with pytest.raises(
        ValueError,
        match=r"label 1000000 .* makes 1000001 classes for 3 images: expected labels below 65536",
    ) as info:
        load_npz(path)
    assert "\n" not in str(info.value)
    # a small test set of a larger label space is no stray label
    few = load_npz(_save(tmp_path / "few.npz", x=x, y=np.array([0, 9, 4], np.uint32)))
    assert few.class_names == [str(c) for c in range(10)]
    # classes without images are fine when class_names names them
    names = np.array(["a", "b", "c", "d", "e"])
    ds = load_npz(_save(tmp_path / "named.npz", x=x, y=np.array([0, 1, 4]), class_names=names))
    assert ds.num_classes == 5 and ds.counts().tolist() == [1, 1, 0, 0, 1]


def test_load_npz_not_an_npz(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "absent.npz")
    text = tmp_path / "text.npz"
    text.write_text("hello, not a zip")
    with pytest.raises(ValueError, match="not a valid .npz file"):
        load_npz(text)
    pkl = tmp_path / "pickled.npz"
    pkl.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(ValueError, match="not a valid .npz file"):
        load_npz(pkl)
    npy = tmp_path / "single.npz"
    with open(npy, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(ValueError, match="got a single array"):
        load_npz(npy)
    obj = tmp_path / "object.npz"
    np.savez(obj, x=np.array([None, 1], dtype=object), y=np.array([0, 1]))
    with pytest.raises(ValueError, match="not a valid .npz file"):
        load_npz(obj)


@pytest.mark.parametrize("content", [b"hello, not a zip", b"", pickle.dumps({"x": 1})])
def test_a_file_that_is_not_a_zip_is_not_called_pickled_data(tmp_path, content):
    path = tmp_path / "plain.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="expected a zip archive") as info:
        load_npz(path)
    assert "pickled" not in str(info.value)


# --------------------------------------------------------------------------- image folder


def _png(path, size_wh, color, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size_wh, color).save(path)


def test_load_image_folder(tmp_path):
    _png(tmp_path / "cat" / "a.png", (6, 4), (255, 0, 0))
    _png(tmp_path / "cat" / "b.png", (6, 4), (0, 255, 0))
    _png(tmp_path / "dog" / "nested" / "c.png", (6, 4), 128, mode="L")
    (tmp_path / "dog" / "notes.txt").write_text("ignored")
    (tmp_path / ".hidden").mkdir()
    ds = load_image_folder(tmp_path)
    assert ds.class_names == ["cat", "dog"]
    assert ds.images.shape == (3, 4, 6, 3)  # (N, H, W, RGB)
    assert ds.labels.tolist() == [0, 0, 1]
    assert ds.images[0, 0, 0].tolist() == [255, 0, 0]
    assert ds.images[2, 0, 0].tolist() == [128, 128, 128]  # grayscale converted to RGB


def test_a_16_bit_greyscale_image_keeps_its_grey_levels(tmp_path):
    # PIL's convert("RGB") of mode I;16 clips every level above 255 to white
    deep = np.array([[0, 1000], [32896, 65535]], dtype=np.uint16)
    (tmp_path / "a").mkdir()
    Image.fromarray(deep).save(tmp_path / "a" / "deep.png")
    assert Image.open(tmp_path / "a" / "deep.png").mode == "I;16"
    ds = load_image_folder(tmp_path)
    expected = np.round(deep / 257).astype(np.uint8)  # [[0, 4], [128, 255]]
    for c in range(3):
        np.testing.assert_array_equal(ds.images[0, :, :, c], expected)


def test_load_image_folder_sizes(tmp_path):
    _png(tmp_path / "a" / "1.png", (8, 8), (10, 20, 30))
    _png(tmp_path / "b" / "2.png", (5, 7), (10, 20, 30))
    with pytest.raises(
        ValueError, match=r"image size mismatch.*2.png; pass image_size \(--image-size\) to resize"
    ):
        load_image_folder(tmp_path)
    ds = load_image_folder(tmp_path, image_size=(3, 4))
    assert ds.images.shape == (2, 3, 4, 3)
    assert ds.images[1, 1, 1].tolist() == [10, 20, 30]
    assert load_image_folder(tmp_path, image_size=5).image_shape == (5, 5, 3)
    with pytest.raises(ValueError, match="positive"):
        load_image_folder(tmp_path, image_size=0)


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_image_folder(tmp_path / "absent")
    with pytest.raises(ValueError, match="no class folders"):
        load_image_folder(tmp_path)
    _png(tmp_path / "a" / "ok.png", (2, 2), (0, 0, 0))
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match="empty class folders .*got none in b"):
        load_image_folder(tmp_path)
    (tmp_path / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        load_image_folder(tmp_path)


def test_a_test_folder_may_keep_a_class_without_images(tmp_path):
    # few-shot classes may have no test image; their empty folder keeps the class order
    from classbalanced.data.registry import load_dataset

    for k, name in enumerate(["ant", "bee", "cat"]):
        _png(tmp_path / "train" / name / "0.png", (4, 4), (k, 0, 0))
        _png(tmp_path / "train" / name / "1.png", (4, 4), (k, 1, 0))
        if name != "bee":
            _png(tmp_path / "test" / name / "0.png", (4, 4), (k, 2, 0))
    (tmp_path / "test" / "bee").mkdir()
    train, test = load_dataset(
        "folder", train_data=str(tmp_path / "train"), test_data=str(tmp_path / "test")
    )
    assert test.class_names == train.class_names == ["ant", "bee", "cat"]
    assert test.counts().tolist() == [1, 0, 1] and test.images[1, 0, 0].tolist() == [2, 2, 0]
    assert load_image_folder(tmp_path / "test", empty_classes=True).counts().tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="empty class folders .*got none in bee"):
        load_image_folder(tmp_path / "test")  # a training set needs every class
    for name in ("ant", "cat"):
        (tmp_path / "test" / name / "0.png").unlink()
    with pytest.raises(ValueError, match=r"^no images in .*test: expected images \(.jpg"):
        load_image_folder(tmp_path / "test", empty_classes=True)


def test_a_decompression_bomb_header_is_one_line(tmp_path):
    import struct
    import zlib

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    _png(tmp_path / "a" / "ok.png", (2, 2), (0, 0, 0))
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)  # claims 20000 x 20000 RGB
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "bomb.png").write_bytes(bomb)
    with pytest.raises(ValueError, match="cannot read image .*bomb.png.*exceeds limit") as info:
        load_image_folder(tmp_path)
    assert "\n" not in str(info.value)


def _class_tree(root):
    for name, n in (("cls0", 2), ("cls1", 3), ("cls2", 5)):
        for i in range(n):
            _png(root / name / f"{i}.png", (2, 2), (i, 0, 0))


def test_a_symlink_loop_adds_nothing_and_is_counted(tmp_path):
    root = tmp_path / "train"
    _class_tree(root)
    (root / "cls2" / "loop").symlink_to(".")  # ln -s . data/train/cls2/loop
    (root / "cls2" / "deeper").mkdir()
    (root / "cls2" / "deeper" / "up").symlink_to("../..")  # back to the root: a loop too
    with pytest.warns(UserWarning, match="skipped 2 symlinked entries"):
        ds = load_image_folder(root)
    assert ds.counts().tolist() == [2, 3, 5]


def test_symlinks_out_of_the_root_are_not_followed(tmp_path):
    root = tmp_path / "train"
    _class_tree(root)
    outside = tmp_path / "elsewhere"
    for i in range(4):
        _png(outside / f"{i}.png", (2, 2), (9, 9, 9))
    (root / "cls0" / "more").symlink_to(outside)  # a folder out of the root
    (root / "cls1" / "x.png").symlink_to(outside / "0.png")  # a file out of the root
    (root / "cls3").symlink_to(outside)  # a class folder out of the root
    with pytest.warns(UserWarning, match="skipped 3 symlinked entries"):
        ds = load_image_folder(root)
    assert ds.class_names == ["cls0", "cls1", "cls2"] and ds.counts().tolist() == [2, 3, 5]


def test_each_file_counts_once_in_its_own_class(tmp_path):
    root = tmp_path / "train"
    _class_tree(root)
    (root / "cls0" / "alias").symlink_to("../cls2")  # the same images again, under cls0
    (root / "cls0" / "dup.png").symlink_to("../cls1/0.png")
    with pytest.warns(UserWarning, match="skipped 6 symlinked entries"):
        ds = load_image_folder(root)
    assert ds.counts().tolist() == [2, 3, 5]


def test_links_inside_the_root_to_images_outside_any_class_are_kept(tmp_path, recwarn):
    root = tmp_path / "train"
    _class_tree(root)
    _png(root / ".pool" / "extra.png", (2, 2), (7, 7, 7))  # hidden: not a class
    (root / "cls0" / "extra.png").symlink_to("../.pool/extra.png")
    assert load_image_folder(root).counts().tolist() == [3, 3, 5]
    assert not [w for w in recwarn if "symlinked" in str(w.message)]


# --------------------------------------------------------------------------- digits


def test_load_digits_split():
    from sklearn.datasets import load_digits as sk_digits

    raw = sk_digits()
    train, test = load_digits(test_per_class=30, seed=5)
    assert test.counts().tolist() == [30] * 10
    assert len(train) + len(test) == len(raw.target)
    assert train.image_shape == (8, 8, 1) and train.images.dtype == np.uint8
    assert train.class_names == [str(i) for i in range(10)]
    assert train.images.max() == 255 and train.images.min() == 0

    # The two splits partition the original images: as multisets, train + test == all.
    def keys(ds):
        return Counter((ds.images[i].tobytes(), int(ds.labels[i])) for i in range(len(ds)))

    expected = np.rint(raw.images * 255 / 16).astype(np.uint8)[..., None]
    all_keys = Counter((expected[i].tobytes(), int(raw.target[i])) for i in range(len(raw.target)))
    assert keys(train) + keys(test) == all_keys
    assert (
        np.bincount(train.labels, minlength=10).tolist() == (np.bincount(raw.target) - 30).tolist()
    )


def test_load_digits_seeded():
    _, a = load_digits(test_per_class=10, seed=1)
    _, b = load_digits(test_per_class=10, seed=1)
    _, c = load_digits(test_per_class=10, seed=2)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    with pytest.raises(ValueError, match="test_per_class"):
        load_digits(test_per_class=1000)
