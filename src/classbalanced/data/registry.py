"""Dataset names -> loaders returning ``(train, test)`` :class:`ImageArrays`.

A registry (:class:`classbalanced.registry.Registry`), not an if/elif chain:
:func:`register_dataset` adds a source, and :func:`load_dataset` is what the
training engine and the CLI call. Each entry records which settings of
:class:`~classbalanced.config.TrainConfig` it reads (``options``), so the config
refuses a setting the chosen data set would ignore, and whether it is a large
data set streamed from image files by the engine (``large``) rather than loaded
into memory. Registering a data set makes it a valid ``--dataset`` at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from ..registry import Registry
from .arrays import ImageArrays, load_digits, load_image_folder, load_npz
from .cifar import DATASETS as CIFAR_DATASETS
from .cifar import cifar_arrays, load_cifar

__all__ = [
    "DATASET_OPTIONS",
    "DATASET_REGISTRY",
    "available_datasets",
    "dataset_options",
    "is_large_dataset",
    "load_dataset",
    "register_dataset",
]

Loader = Callable[..., tuple[ImageArrays, ImageArrays]]

#: Config keys a data set may read; each data set reads a subset of these (``options``)
#: and the config refuses a non-default value of one its data set does not read.
DATASET_OPTIONS = (
    "data_dir",
    "download",
    "train_data",
    "test_data",
    "image_size",
    "num_workers",
    "skip_missing",
    "train_list",
    "val_list",
    "test_list",
    "image_decode",
    "worker_output",
    "persistent_workers",
)
#: what the image-file data sets read besides their lists: the data folder, the crop size, the
#: loader workers and the decoding pipeline (streamed by the engine, not loaded into memory)
_FILE_OPTIONS = (
    "data_dir",
    "image_size",
    "num_workers",
    "skip_missing",
    "image_decode",
    "worker_output",
    "persistent_workers",
)

DATASET_REGISTRY: Registry[Loader] = Registry("dataset")


def register_dataset(
    name: str,
    loader: Loader,
    *,
    options: Iterable[str] = (),
    description: str = "",
    large: bool = False,
) -> None:
    """Register ``loader(**options) -> (train, test)`` under ``name``.

    Args:
        options: the config keys (of :data:`DATASET_OPTIONS`) the loader reads.
        description: one line for ``--help``.
        large: streamed from image files by the engine (``loader`` is not called).
    """
    options = tuple(options)
    unknown = sorted(set(options) - set(DATASET_OPTIONS))
    if unknown:
        raise ValueError(
            f"dataset options must be among {', '.join(DATASET_OPTIONS)}, got {', '.join(unknown)}"
        )
    DATASET_REGISTRY.register(
        name, loader, options=options, description=description, large=bool(large)
    )


def available_datasets() -> list[str]:
    """Registered data set names (valid ``--dataset`` values), in registration order."""
    return DATASET_REGISTRY.names()


def dataset_options(name: str) -> tuple[str, ...]:
    """The config keys data set ``name`` reads."""
    DATASET_REGISTRY.lookup(name)
    return DATASET_REGISTRY.info[name]["options"]


def is_large_dataset(name: str) -> bool:
    """Whether ``name`` is streamed from image files by the engine (iNaturalist, ImageNet)."""
    DATASET_REGISTRY.lookup(name)
    return DATASET_REGISTRY.info[name]["large"]


def load_dataset(
    name: str, *, with_test: bool = True, **options
) -> tuple[ImageArrays, ImageArrays | None]:
    """Load ``(train, test)`` for ``name``; ``options`` are those of :class:`TrainConfig`
    (``data_dir``, ``download``, ``train_data``, ``test_data``, ``image_size``, ``progress``, ``seed``).
    ``with_test=False``: ``(train, None)``, the test file never opened (``--test-data`` of
    npz and folder data sets; CIFAR and digits keep theirs in the training set's archive).

    >>> train, test = load_dataset("digits")
    >>> train.num_classes, train.image_shape, len(test)
    (10, (8, 8, 1), 500)
    """
    loader = DATASET_REGISTRY.lookup(name)
    if not with_test:
        options["test_data"] = None
    train, test = loader(**options)
    if not with_test:
        return train, None
    if test is None:
        raise ValueError(f"dataset {name} needs --test-data PATH for evaluation")
    if train.num_classes != test.num_classes:
        raise ValueError(
            f"train and test sets must have the same classes: expected {train.num_classes} test classes, got {test.num_classes}"
        )
    if train.image_shape != test.image_shape:
        raise ValueError(
            f"train and test images must have the same shape: expected {train.image_shape}, got {test.image_shape}"
        )
    return train, test


def _cifar(name: str) -> Loader:
    def load(*, data_dir="data", download=True, progress=True, **_):
        return cifar_arrays(load_cifar(name, data_dir, download=download, progress=progress))

    return load


def _digits(*, seed=0, **_):
    return load_digits(seed=0)  # the split is fixed; the seed only picks the long-tailed subset


def _required(path, flag: str) -> Path:
    if not path:
        raise ValueError(f"this dataset needs {flag} PATH")
    return Path(path)


def _npz(*, train_data=None, test_data=None, **_):
    train = load_npz(_required(train_data, "--train-data"))
    return train, None if test_data is None else load_npz(test_data)


def _folder(*, train_data=None, test_data=None, image_size=None, **_):
    train = load_image_folder(_required(train_data, "--train-data"), image_size=image_size)
    if test_data is None:  # load_dataset(..., with_test=False)
        return train, None
    size = image_size if image_size is not None else train.image_shape[:2]
    test = load_image_folder(
        _required(test_data, "--test-data"), image_size=size, empty_classes=True
    )
    if test.class_names != train.class_names:
        raise ValueError(
            f"test folder classes must match the train folder's: expected {train.class_names[:5]}..., got {test.class_names[:5]}..."
        )
    return train, test


def _streamed(name: str) -> Loader:
    def load(**_):
        raise ValueError(
            f"dataset {name!r} is streamed from image files by the training engine, not loaded into memory"
        )

    return load


for _name in CIFAR_DATASETS:
    register_dataset(
        _name,
        _cifar(_name),
        options=("data_dir", "download"),
        description="CIFAR (downloaded to --data-dir)",
    )
register_dataset("digits", _digits, description="scikit-learn's 8x8 digits (offline)")
register_dataset(
    "npz", _npz, options=("train_data", "test_data"), description="--train-data/--test-data .npz"
)
register_dataset(
    "folder",
    _folder,
    options=("train_data", "test_data", "image_size"),
    description="--train-data/--test-data class folders",
)
for _name in ("inat2017", "inat2018", "imagenet"):
    register_dataset(
        _name,
        _streamed(_name),
        options=_FILE_OPTIONS,
        description="image files in --data-dir (run `classbalanced prepare` once)",
        large=True,
    )
for _name, _what in (
    ("imagenet_lt", "ImageNet-LT lists over an ImageNet root"),
    ("places_lt", "Places-LT lists over a Places365 root"),
    ("list", "any 'relative/path label' lists (--train-list, --val-list, --test-list)"),
):
    register_dataset(
        _name,
        _streamed(_name),
        options=(*_FILE_OPTIONS, "train_list", "val_list", "test_list"),
        description=f"{_what} in --data-dir (run `classbalanced prepare` once)",
        large=True,
    )
