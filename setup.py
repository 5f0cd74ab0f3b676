"""Builds the optional partial-JPEG decoder (``classbalanced.data._jpegcrop``).

Everything else is declared in pyproject.toml. The extension needs libjpeg-turbo's
headers (Debian: ``libjpeg-dev``); without them the install goes on without it and
``classbalanced.data.pipeline`` decodes through PIL (slower, same pixels).
"""

from setuptools import Extension, setup

#: also built in place by benchmarks/gpu_check.py (which imports it from here)
JPEGCROP = Extension(
    "classbalanced.data._jpegcrop",
    ["src/classbalanced/data/_jpegcrop.c"],
    libraries=["jpeg"],
    optional=True,
)

if __name__ == "__main__":  # as setuptools' build backend runs it
    setup(ext_modules=[JPEGCROP])
