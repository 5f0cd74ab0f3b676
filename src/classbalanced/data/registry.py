"""Dataset names -> loaders returning ``(train, test)`` :class:`ImageArrays`.

A registry, not an if/elif chain: :func:`register_dataset` adds a source, and
:func:`load_dataset` is what the training engine and the CLI call.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .arrays import ImageArrays, load_digits, load_image_folder, load_npz
from .cifar import cifar_arrays, load_cifar

__all__ = ["register_dataset", "available_datasets", "load_dataset"]

Loader = Callable[..., tuple[ImageArrays, ImageArrays]]
_DATASETS: dict[str, Loader] = {}


def register_dataset(name: str, loader: Loader) -> None:
    """Register ``loader(**options) -> (train, test)`` under ``name``."""
    if name in _DATASETS:
        raise ValueError(f"dataset {name!r} is already registered")
    _DATASETS[name] = loader


def available_datasets() -> list[str]:
    return list(_DATASETS)


def load_dataset(name: str, **options) -> tuple[ImageArrays, ImageArrays]:
    """Load ``(train, test)`` for ``name``; ``options`` are those of :class:`TrainConfig`
    (``data_dir``, ``download``, ``train_data``, ``test_data``, ``image_size``, ``progress``, ``seed``).

    >>> train, test = load_dataset("digits")
    >>> train.num_classes, train.image_shape, len(test)
    (10, (8, 8, 1), 500)
    """
    if name not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}: expected one of {', '.join(_DATASETS)}")
    train, test = _DATASETS[name](**options)
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
    return load_npz(_required(train_data, "--train-data")), load_npz(
        _required(test_data, "--test-data")
    )


def _folder(*, train_data=None, test_data=None, image_size=None, **_):
    train = load_image_folder(_required(train_data, "--train-data"), image_size=image_size)
    size = image_size if image_size is not None else train.image_shape[:2]
    test = load_image_folder(_required(test_data, "--test-data"), image_size=size)
    if test.class_names != train.class_names:
        raise ValueError(
            f"test folder classes must match the train folder's: expected {train.class_names[:5]}..., got {test.class_names[:5]}..."
        )
    return train, test


for _name in ("cifar10", "cifar100", "cifar20"):
    register_dataset(_name, _cifar(_name))
register_dataset("digits", _digits)
register_dataset("npz", _npz)
register_dataset("folder", _folder)
