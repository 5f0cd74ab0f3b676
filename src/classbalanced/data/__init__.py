"""Data layer: CIFAR archives, long-tailed subsets, in-memory image arrays, safe reading.

Example:
    >>> from classbalanced.data import longtail_counts
    >>> sum(longtail_counts(500, 100, 100))
    10847
"""

from .arrays import ImageArrays, load_digits, load_image_folder, load_npz
from .cifar import (
    ARCHIVES,
    DATASETS,
    URL_ENV_VAR,
    ArchiveSpec,
    CifarData,
    DownloadError,
    archive_url,
    cifar_arrays,
    download,
    load_cifar,
    md5_file,
)
from .images import IMG_EXTENSIONS
from .longtail import PROFILES, class_counts, longtail_counts, longtail_indices
from .safe_io import (
    load_pickle_dict,
    restricted_load_pickle,
    safe_extract_tar,
    validate_pickle_dict,
)

__all__ = [
    "ARCHIVES",
    "DATASETS",
    "IMG_EXTENSIONS",
    "PROFILES",
    "URL_ENV_VAR",
    "ArchiveSpec",
    "CifarData",
    "DownloadError",
    "ImageArrays",
    "archive_url",
    "cifar_arrays",
    "class_counts",
    "download",
    "load_cifar",
    "load_digits",
    "load_image_folder",
    "load_npz",
    "load_pickle_dict",
    "longtail_counts",
    "longtail_indices",
    "md5_file",
    "restricted_load_pickle",
    "safe_extract_tar",
    "validate_pickle_dict",
]
