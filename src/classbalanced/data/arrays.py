"""In-memory image datasets: ``ImageArrays`` and loaders for .npz files, class folders, digits.

``ImageArrays`` holds ``images`` (uint8, shape (N, H, W, C)), ``labels`` (int64,
shape (N,)) and ``class_names`` (``num_classes`` strings; every label is in
``[0, num_classes)``). Loaders validate at the boundary and raise one-line
ValueError / TypeError / FileNotFoundError messages.

Example:
    >>> import numpy as np
    >>> ds = ImageArrays(np.zeros((3, 2, 2, 1), np.uint8), np.array([0, 1, 1]), ["a", "b"])
    >>> ds.num_classes, ds.image_shape, ds.counts().tolist()
    (2, (2, 2, 1), [1, 2])
    >>> ds.subset([2, 0]).labels.tolist()
    [1, 0]
"""

from __future__ import annotations

import contextlib
import os
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from sklearn.datasets import load_digits as _sk_load_digits

from .images import IMG_EXTENSIONS, to_rgb

__all__ = [
    "ImageArrays",
    "load_digits",
    "load_image_folder",
    "list_image_folder",
    "list_images",
    "load_npz",
    "read_image",
]

#: without class_names, labels beyond the number of images and this many classes are refused
_MAX_UNNAMED_CLASSES = 1 << 16


def _is_int_dtype(arr: np.ndarray) -> bool:
    return np.issubdtype(arr.dtype, np.integer)


@dataclass
class ImageArrays:
    """Images with integer labels.

    Attributes:
        images: uint8 array, shape (N, H, W, C).
        labels: int64 array, shape (N,), values in ``[0, len(class_names))``
            (any integer array is accepted and converted to int64).
        class_names: one name per class.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.images, np.ndarray):
            raise TypeError(f"images: expected a numpy array, got {type(self.images).__name__}")
        if self.images.dtype != np.uint8:
            raise TypeError(f"images: expected uint8 images, got {self.images.dtype}")
        if self.images.ndim != 4:
            raise ValueError(
                f"images: expected shape (N, H, W, C), got {self.images.ndim} dimensions {self.images.shape}"
            )
        labels = np.asarray(self.labels)
        if not _is_int_dtype(labels):
            raise TypeError(f"labels: expected integer labels, got {labels.dtype}")
        if labels.ndim != 1:
            raise ValueError(f"labels: expected shape (N,), got {labels.shape}")
        if len(labels) != len(self.images):
            raise ValueError(
                f"labels: expected one label per image ({len(self.images)}), got {len(labels)}"
            )
        self.labels = labels.astype(np.int64, copy=False)
        names = list(self.class_names)
        if not all(isinstance(n, str) for n in names):
            raise TypeError("class_names: expected a list of str, got other types")
        if not names:
            raise ValueError("class_names: expected at least one class name, got none")
        self.class_names = names
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(names)):
            bad = int(self.labels.min() if self.labels.min() < 0 else self.labels.max())
            raise ValueError(f"labels: expected values in [0, {len(names)}), got {bad}")

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(class_names)``)."""
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image."""
        h, w, c = self.images.shape[1:]
        return (int(h), int(w), int(c))

    def __len__(self) -> int:
        return int(len(self.labels))

    def counts(self) -> np.ndarray:
        """Per-class image counts, int64 shape (num_classes,)."""
        return np.bincount(self.labels, minlength=self.num_classes).astype(np.int64)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageArrays:
        """A new ``ImageArrays`` with the images at ``indices`` (integer positions), same classes."""
        idx = np.asarray(indices)
        if idx.size == 0:
            idx = idx.astype(np.int64)
        if not _is_int_dtype(idx):
            raise TypeError(f"subset: expected integer indices, got {idx.dtype}")
        if idx.ndim != 1:
            raise ValueError(f"subset: expected a 1-D index array, got shape {idx.shape}")
        n = len(self)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            bad = int(idx.min() if idx.min() < 0 else idx.max())
            raise ValueError(f"subset: expected indices in [0, {n}), got {bad}")
        return ImageArrays(self.images[idx], self.labels[idx], list(self.class_names))


# --------------------------------------------------------------------------- npz


def load_npz(path: str | os.PathLike) -> ImageArrays:
    """Load images from an ``.npz`` with keys ``x``, ``y`` and optional ``class_names``.

    ``x``: uint8, shape (N, H, W) (a channel axis is added) or (N, H, W, C) with
    C in {1, 3, 4}. ``y``: integer, shape (N,), values >= 0. ``class_names``:
    strings, at least ``max(y) + 1`` of them (default ``"0"``, ``"1"``, ... ``str(max(y))``;
    without them ``max(y)`` must be below ``max(N, 65536)``: more classes than that many, and than
    images, is taken for a stray label).
    Loaded with ``allow_pickle=False``.

    Example:
        >>> import os, tempfile, numpy as np
        >>> p = os.path.join(tempfile.mkdtemp(), "toy.npz")
        >>> np.savez(p, x=np.zeros((4, 5, 5), np.uint8), y=np.array([0, 1, 2, 2]))
        >>> ds = load_npz(p)
        >>> ds.images.shape, ds.class_names
        ((4, 5, 5, 1), ['0', '1', '2'])
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"npz file not found: expected a file at {p}")
    with open(p, "rb") as file:
        magic = file.read(6)
    if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
        # np.load would take any other file for a pickle and blame "pickled (object) data"
        kind = "an empty file" if not magic else f"a file starting with {magic!r}"
        raise ValueError(
            f"not a valid .npz file {p}: expected a zip archive (written by np.savez), got {kind}"
        )
    try:
        npz = np.load(p, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError(f"not an .npz archive {p}: expected keys x and y, got a single array")
        with npz:
            keys = list(npz.keys())
            for key in ("x", "y"):
                if key not in keys:
                    raise ValueError(
                        f"missing key {key!r} in {p}: expected keys x, y (and optional class_names), got {keys}"
                    )
            x = npz["x"]
            y = npz["y"]
            names = npz["class_names"] if "class_names" in keys else None
    except ValueError as exc:
        msg = str(exc)
        if msg.startswith(("missing key", "not an .npz")):
            raise
        raise ValueError(f"not a valid .npz file {p}: {' '.join(msg.split())}") from exc
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
        raise ValueError(f"not a valid .npz file {p}: {' '.join(str(exc).split())}") from exc
    return _npz_arrays(p, x, y, names)


def _npz_arrays(p: Path, x: np.ndarray, y: np.ndarray, names: np.ndarray | None) -> ImageArrays:
    """Check the arrays read from ``p`` (one-line messages naming it) and wrap them."""
    if x.dtype != np.uint8:
        raise ValueError(f"wrong dtype for x in {p}: expected uint8 images, got {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"wrong shape for x in {p}: expected (N, H, W) or (N, H, W, C) with C in 1/3/4, got {x.shape}"
        )
    if not _is_int_dtype(y):
        raise ValueError(f"wrong dtype for y in {p}: expected integer labels, got {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"wrong shape for y in {p}: expected (N,), got {y.shape}")
    if len(x) == 0:
        raise ValueError(f"empty dataset in {p}: expected at least one image, got 0")
    if len(y) != len(x):
        raise ValueError(
            f"length mismatch in {p}: expected {len(x)} labels (one per image), got {len(y)}"
        )
    if y.min() < 0:
        raise ValueError(f"negative label in {p}: expected labels >= 0, got {int(y.min())}")
    num_classes = int(y.max()) + 1
    if names is None:
        if num_classes > max(len(y), _MAX_UNNAMED_CLASSES):  # a stray label (-1 stored as
            raise ValueError(  # uint32: 4294967295) would name billions of empty classes
                f"label {num_classes - 1} in {p} makes {num_classes} classes for {len(y)} images: "
                f"expected labels below {max(len(y), _MAX_UNNAMED_CLASSES)}, or class_names "
                f"naming all {num_classes} classes"
            )
        class_names = [str(i) for i in range(num_classes)]
    else:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise ValueError(
                f"wrong class_names in {p}: expected a 1-D array of strings, got {names.dtype} {names.shape}"
            )
        class_names = [
            n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names.tolist()
        ]
        if len(class_names) < num_classes:
            raise ValueError(
                f"too few class_names in {p}: expected at least {num_classes} (max label + 1), got {len(class_names)}"
            )
    return ImageArrays(np.ascontiguousarray(x), y.astype(np.int64), class_names)


# --------------------------------------------------------------------------- image folder


def _size_hw(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, bool):
        raise TypeError("image_size: expected an int or (height, width), got bool")
    if isinstance(image_size, int | np.integer):
        hw = (int(image_size), int(image_size))
    else:
        try:
            values = tuple(int(v) for v in image_size)
        except TypeError:
            raise TypeError(
                f"image_size: expected an int or (height, width), got {type(image_size).__name__}"
            ) from None
        if len(values) != 2:
            raise ValueError(f"image_size: expected (height, width), got {len(values)} values")
        hw = values
    if min(hw) < 1:
        raise ValueError(f"image_size: expected positive sizes, got {hw}")
    return hw


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _walk_images(base: Path, name: str, root: str) -> tuple[list[tuple[str, Path, bool]], int]:
    """``(real path, path, direct)`` of the images under ``base/name`` (recursive, sorted,
    hidden entries skipped) and how many symlinked entries were skipped on the way: links
    leading out of ``root`` (a real path), folders already walked and ancestors of the
    class folder (loops). ``direct``:
    reached without passing a symlink."""
    found: list[tuple[str, Path, bool]] = []
    skipped = 0
    walked: set[str] = set()
    top = os.path.realpath(base / name)
    for dirpath, dirnames, filenames in os.walk(base / name, followlinks=True):
        walked.add(os.path.realpath(dirpath))
        keep = []
        for d in sorted(d for d in dirnames if not d.startswith(".")):
            real = os.path.realpath(os.path.join(dirpath, d))
            # a link to an ancestor of the class folder (the root, say) is a loop as well
            if _inside(real, root) and real not in walked and not _inside(top, real):
                keep.append(d)
                walked.add(real)
            else:
                skipped += 1
        dirnames[:] = keep
        for file in sorted(filenames):
            if file.startswith(".") or not file.lower().endswith(IMG_EXTENSIONS):
                continue
            path = Path(dirpath) / file
            real = os.path.realpath(path)
            if not _inside(real, root):
                skipped += 1
                continue
            direct = real == os.path.join(root, os.path.relpath(path, base))
            found.append((real, path, direct))
    return found, skipped


def list_images(base: Path, classes: list[str]) -> tuple[list[list[Path]], int]:
    """Per class, its images, each real file counted once (a file reached directly keeps
    its own class; one reached only through symlinks counts in the first class reaching
    it); and the number of symlinked entries skipped."""
    root = os.path.realpath(base)
    walks = [_walk_images(base, name, root) for name in classes]
    skipped = sum(n for _, n in walks)
    taken = {real for found, _ in walks for real, _, direct in found if direct}
    per_class: list[list[Path]] = []
    for found, _ in walks:
        images = []
        for real, path, direct in found:
            if direct:
                images.append(path)
            elif real in taken:
                skipped += 1
            else:
                taken.add(real)
                images.append(path)
        per_class.append(images)
    return per_class, skipped


def load_image_folder(
    root: str | os.PathLike,
    *,
    image_size: int | Sequence[int] | None = None,
    empty_classes: bool = False,
) -> ImageArrays:
    """Load a torchvision ``ImageFolder`` tree (``root/<class>/<image>``) into memory as RGB.

    The classes and files are :func:`list_image_folder`'s; images are decoded with PIL to
    RGB (:func:`~classbalanced.data.images.to_rgb`: 16-bit greyscale scaled to 8 bits).
    With ``image_size`` (int or (height, width)) every image is resized (bilinear);
    without it all images must share the first image's size.

    Returns:
        ImageArrays with images uint8 (N, H, W, 3).
    """
    hw = _size_hw(image_size)
    classes, files, labels = list_image_folder(root, empty_classes=empty_classes)
    return ImageArrays(_read_images(files, hw), np.asarray(labels, dtype=np.int64), classes)


def list_image_folder(
    root: str | os.PathLike, *, empty_classes: bool = False
) -> tuple[list[str], list[Path], list[int]]:
    """The classes, image files and labels of an ``ImageFolder`` tree ``root/<class>/<image>``.

    Classes are the sorted sub-folder names (hidden ones skipped); images are found
    recursively by extension. Symbolic links are followed only inside ``root``, each
    folder is walked once (a link loop adds nothing) and each image file counts once; the
    skipped links are counted in a warning. A class folder without images is refused
    unless ``empty_classes`` (a test set: its folder keeps the class order); a tree
    without any image is refused.
    """
    base = Path(root)
    if not base.exists():
        raise FileNotFoundError(f"image folder not found: expected a folder at {base}")
    if not base.is_dir():
        raise ValueError(
            f"not a folder: expected root/<class>/<image> layout at {base}, got a file"
        )
    real_root = os.path.realpath(base)
    with os.scandir(base) as it:
        entries = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    classes = [n for n in entries if _inside(os.path.realpath(base / n), real_root)]
    if not classes:
        raise ValueError(
            f"no class folders in {base}: expected root/<class>/<image> layout, got none"
        )
    per_class, skipped = list_images(base, classes)
    skipped += len(entries) - len(classes)  # class folders that are links out of the root
    files = [f for images in per_class for f in images]
    labels = [label for label, images in enumerate(per_class) for _ in images]
    empty = [name for name, images in zip(classes, per_class, strict=True) if not images]
    if skipped:
        warnings.warn(
            f"{base}: skipped {skipped} symlinked entries (leading out of the folder, "
            "into a loop, or to an image already counted)",
            stacklevel=2,
        )
    expected = f"expected images ({', '.join(IMG_EXTENSIONS)})"
    if empty and not empty_classes:
        raise ValueError(
            f"empty class folders in {base}: {expected} in every class, got none in {', '.join(empty)}"
        )
    if not files:
        raise ValueError(f"no images in {base}: {expected} in its class folders, got none")
    return classes, files, labels


def read_image(file, hw: tuple[int, int] | None = None):
    """uint8 ``(H, W, 3)`` RGB of one image (a path or an opened PIL image) as the folder
    loader decodes it: :func:`~classbalanced.data.images.to_rgb`, then resized (bilinear)
    to ``hw`` (height, width) when given and different. An unreadable or truncated file,
    or one past PIL's decompression-bomb limit, is a one-line ValueError."""
    try:
        with contextlib.ExitStack() as stack:
            im = file if isinstance(file, Image.Image) else stack.enter_context(Image.open(file))
            im = to_rgb(im)  # 16-bit grey scaled to 8 bits, not clipped to white
            if hw is not None and (im.height, im.width) != hw:
                im = im.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        # DecompressionBombError: a header claiming more pixels than PIL's limit (about
        # 179 million); nothing that size is allocated
        raise ValueError(f"cannot read image {file}: {' '.join(str(exc).split())}") from exc


def _read_images(files: list[Path], hw: tuple[int, int] | None) -> np.ndarray:
    """uint8 (N, H, W, 3) of ``files`` in RGB, resized to ``hw`` or all of the first one's size."""
    arrays: list[np.ndarray] = []
    first_shape: tuple[int, int] | None = None
    for f in files:
        arr = read_image(f, hw)
        if first_shape is None:
            first_shape = arr.shape[:2]
        elif arr.shape[:2] != first_shape:
            raise ValueError(
                f"image size mismatch: expected {first_shape[0]}x{first_shape[1]} (HxW, like {files[0]}), "
                f"got {arr.shape[0]}x{arr.shape[1]} for {f}; pass image_size (--image-size) to resize"
            )
        arrays.append(arr)
    return np.stack(arrays).astype(np.uint8, copy=False)


# --------------------------------------------------------------------------- digits


def load_digits(*, test_per_class: int = 50, seed: int = 0) -> tuple[ImageArrays, ImageArrays]:
    """scikit-learn's bundled 8x8 digits (offline) as a (train, test) split.

    Pixel values 0..16 are scaled to uint8 by ``round(v * 255 / 16)``; images are
    (N, 8, 8, 1). The test set holds ``test_per_class`` images of each digit,
    chosen by ``np.random.default_rng(seed)``; the remaining images are the
    training set (both in the original order). Class names are "0".."9".

    Example:
        >>> train, test = load_digits(test_per_class=10, seed=0)
        >>> len(train) + len(test), test.counts().tolist()
        (1797, [10, 10, 10, 10, 10, 10, 10, 10, 10, 10])
    """
    if isinstance(test_per_class, bool) or not isinstance(test_per_class, int | np.integer):
        raise TypeError(f"test_per_class: expected an int, got {type(test_per_class).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    bunch = _sk_load_digits()
    images = np.rint(np.asarray(bunch.images, dtype=np.float64) * 255.0 / 16.0)
    images = np.clip(images, 0, 255).astype(np.uint8)[..., None]
    labels = np.asarray(bunch.target, dtype=np.int64)
    num_classes = int(labels.max()) + 1
    smallest = int(np.bincount(labels, minlength=num_classes).min())
    if not 0 <= test_per_class < smallest:
        raise ValueError(
            f"test_per_class: expected 0 <= value < {smallest} (smallest digit class), got {test_per_class}"
        )
    rng = np.random.default_rng(seed)
    test_idx = np.concatenate(
        [
            rng.choice(np.flatnonzero(labels == c), size=int(test_per_class), replace=False)
            for c in range(num_classes)
        ]
    ).astype(np.int64)
    test_idx.sort()
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_idx] = True
    train_idx = np.flatnonzero(~is_test)
    names = [str(c) for c in range(num_classes)]
    full = ImageArrays(images, labels, names)
    return full.subset(train_idx), full.subset(test_idx)
