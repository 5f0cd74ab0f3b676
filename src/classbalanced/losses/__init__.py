"""The losses: the class-balanced softmax / sigmoid / focal losses and the later
long-tailed losses they are compared with, each as a function and a Module.

Modules by job:

* :mod:`.functional` -- the formulas (softmax / sigmoid / focal, class-balanced);
* :mod:`.kernels` -- the exact, twice-differentiable focal kernels (eager and compiled);
* :mod:`.checks` -- boundary checks, compute dtype, reduction;
* :mod:`.modules` -- ``nn.Module`` forms with float32 weight / count buffers;
* :mod:`.criterion` -- what a loss module offers the trainer (:class:`Criterion`);
* :mod:`.registry` -- loss names for the trainer, the CLI and the sweeps;
* :mod:`.comparison` -- LDAM, logit-adjusted loss, balanced softmax;
* :mod:`.prior` -- the classifier-bias prior of sigmoid-based losses.

Importing the package registers every loss (``softmax``, ``sigmoid``, ``focal``,
``ldam``, ``logit_adjusted``, ``balanced_softmax``).
"""

from .comparison import (
    BalancedSoftmaxLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    LogitAdjustment,
    balanced_softmax_loss,
    ldam_loss,
    ldam_margins,
    logit_adjusted_loss,
    post_hoc_logit_adjustment,
)
from .criterion import Criterion
from .functional import (
    DEFAULT_GAMMA,
    LOSS_TYPES,
    REDUCTIONS,
    class_balanced_loss,
    sigmoid_cross_entropy,
    sigmoid_focal_cross_entropy,
    softmax_cross_entropy,
)
from .kernels import focal_elements
from .modules import ClassBalancedLoss, ClassWeightBuffers, WeightedLoss
from .prior import init_prior_bias_, prior_bias
from .registry import available_losses, build_loss, loss_options, loss_uses_gamma, register_loss

__all__ = [
    "DEFAULT_GAMMA",
    "LOSS_TYPES",
    "REDUCTIONS",
    "softmax_cross_entropy",
    "sigmoid_cross_entropy",
    "sigmoid_focal_cross_entropy",
    "class_balanced_loss",
    "focal_elements",
    "Criterion",
    "ClassWeightBuffers",
    "WeightedLoss",
    "ClassBalancedLoss",
    "ldam_margins",
    "ldam_loss",
    "logit_adjusted_loss",
    "balanced_softmax_loss",
    "post_hoc_logit_adjustment",
    "LogitAdjustment",
    "LDAMLoss",
    "LogitAdjustedLoss",
    "BalancedSoftmaxLoss",
    "loss_options",
    "loss_uses_gamma",
    "register_loss",
    "available_losses",
    "build_loss",
    "prior_bias",
    "init_prior_bias_",
]
