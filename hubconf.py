"""torch.hub entry points of a local clone of classbalanced.

    >>> import torch
    >>> model = torch.hub.load("path/to/classbalanced", "resnet32", source="local", num_classes=10)
    >>> trained = torch.hub.load("path/to/classbalanced", "load_run", source="local", run_dir="runs/x")

Every model of the registry has an entry (``torch.hub.list(path, source="local")``):
the CIFAR ResNets at the usual depths (``resnetN``, ``resnetN_v2``; any other depth
through ``model(name=...)``), torchvision's ResNets and ``simple_cnn``; each takes
``num_classes`` and ``in_channels`` and returns a freshly initialised ``nn.Module``.
``load_run`` returns the :class:`~classbalanced.TrainedClassifier` of a finished run.
"""

import os
import sys

dependencies = ["torch", "torchvision", "numpy"]

_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
if os.path.isdir(_SRC) and _SRC not in sys.path:  # the clone's code, installed or not
    sys.path.insert(0, _SRC)

from classbalanced.models.registry import MODEL_REGISTRY, build_model  # noqa: E402
from classbalanced.use import load_run  # noqa: E402, F401  (an entry point)

#: CIFAR ResNet depths with an entry of their own (6n + 2; the paper's is 32)
_CIFAR_DEPTHS = (8, 14, 20, 32, 44, 56, 110)


def model(name, num_classes, in_channels=3):
    """Any model name of the registry (``classbalanced.models.available_models()``)."""
    return build_model(name, num_classes, in_channels=in_channels)


def _entry(name):
    def entry(num_classes, in_channels=3):
        return build_model(name, num_classes, in_channels=in_channels)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = f"``{name}`` of classbalanced's model registry, freshly initialised."
    return entry


for _name in (
    *(f"resnet{d}" for d in _CIFAR_DEPTHS),
    *(f"resnet{d}_v2" for d in _CIFAR_DEPTHS),
    *MODEL_REGISTRY,
):
    globals()[_name] = _entry(_name)
