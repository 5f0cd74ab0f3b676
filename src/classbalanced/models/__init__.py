"""Networks: CIFAR ResNets (6n+2 / 9n+2) and a name registry incl. torchvision's ResNet-50/101/152.

>>> from classbalanced.models import build_model
>>> build_model("resnet32", 10).fc
Linear(in_features=64, out_features=10, bias=True)
"""

from .cifar_resnet import VERSIONS, CifarResNet, blocks_per_stage
from .registry import (
    MODEL_REGISTRY,
    ModelFactory,
    NormedLinear,
    available_models,
    build_model,
    register_model,
    use_normed_classifier_,
)

__all__ = [
    "MODEL_REGISTRY",
    "VERSIONS",
    "CifarResNet",
    "ModelFactory",
    "NormedLinear",
    "available_models",
    "blocks_per_stage",
    "build_model",
    "register_model",
    "use_normed_classifier_",
]
