"""classbalanced: Class-Balanced Loss based on the effective number of samples.

>>> import torch, classbalanced as cb
>>> counts = [5000, 500, 50]
>>> cb.class_balanced_weights(counts, beta=0.999)
tensor([0.1256, 0.3170, 2.5574])
>>> loss = cb.ClassBalancedLoss(counts, beta=0.999, loss_type="focal", gamma=0.5)
>>> loss(torch.zeros(2, 3), torch.tensor([0, 2])).shape
torch.Size([])
"""

from .losses import (
    DEFAULT_GAMMA,
    LOSS_TYPES,
    REDUCTIONS,
    BalancedSoftmaxLoss,
    ClassBalancedLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    WeightedLoss,
    available_losses,
    balanced_softmax_loss,
    build_loss,
    class_balanced_loss,
    init_prior_bias_,
    ldam_loss,
    ldam_margins,
    logit_adjusted_loss,
    post_hoc_logit_adjustment,
    prior_bias,
    register_loss,
    sigmoid_cross_entropy,
    sigmoid_focal_cross_entropy,
    softmax_cross_entropy,
)
from .multilabel import (
    MultiLabelClassBalancedLoss,
    RunningClassCounts,
    multilabel_class_balanced_loss,
    positive_counts,
)
from .optim import parameter_groups
from .sampling import ClassBalancedSampler, sampling_probabilities
from .schedules import ReweightSchedule
from .sklearn_weights import class_weight_dict, sample_weights
from .weights import class_balanced_weights, effective_number

__version__ = "0.1.0"

__all__ = [
    "Prediction",
    "TrainedClassifier",
    "load_run",
    "DEFAULT_GAMMA",
    "BalancedSoftmaxLoss",
    "balanced_softmax_loss",
    "ldam_loss",
    "ldam_margins",
    "logit_adjusted_loss",
    "ClassBalancedSampler",
    "LDAMLoss",
    "LogitAdjustedLoss",
    "MultiLabelClassBalancedLoss",
    "ReweightSchedule",
    "RunningClassCounts",
    "class_weight_dict",
    "multilabel_class_balanced_loss",
    "positive_counts",
    "post_hoc_logit_adjustment",
    "sample_weights",
    "sampling_probabilities",
    "LOSS_TYPES",
    "REDUCTIONS",
    "ClassBalancedLoss",
    "WeightedLoss",
    "available_losses",
    "build_loss",
    "class_balanced_loss",
    "class_balanced_weights",
    "effective_number",
    "init_prior_bias_",
    "parameter_groups",
    "prior_bias",
    "register_loss",
    "sigmoid_cross_entropy",
    "sigmoid_focal_cross_entropy",
    "softmax_cross_entropy",
]


#: names of :mod:`classbalanced.use`, imported on first use (the image pipeline imports
#: torchvision, seconds that ``import classbalanced`` for the losses should not pay)
_USE_NAMES = ("Prediction", "TrainedClassifier", "load_run")


def __getattr__(name: str):
    if name in _USE_NAMES:
        from . import use  # heavy: torchvision (see _USE_NAMES)

        return getattr(use, name)
    raise AttributeError(f"module 'classbalanced' has no attribute {name!r}")
