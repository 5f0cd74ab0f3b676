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
    LOSS_TYPES,
    REDUCTIONS,
    ClassBalancedLoss,
    WeightedLoss,
    available_losses,
    build_loss,
    class_balanced_loss,
    init_prior_bias_,
    parameter_groups,
    prior_bias,
    register_loss,
    sigmoid_cross_entropy,
    sigmoid_focal_loss,
    softmax_cross_entropy,
)
from .weights import class_balanced_weights, effective_number

__version__ = "0.1.0"

__all__ = [
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
    "sigmoid_focal_loss",
    "softmax_cross_entropy",
]
