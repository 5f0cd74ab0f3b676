"""``Literal`` types of the losses' closed string choices.

>>> from typing import get_args
>>> get_args(Reduction), get_args(LossType)
(('mean', 'sum', 'none'), ('softmax', 'sigmoid', 'focal'))
"""

from __future__ import annotations

from typing import Literal

__all__ = ["LossType", "Reduction"]

#: how a loss reduces its per-example values (the values of ``REDUCTIONS``)
Reduction = Literal["mean", "sum", "none"]
#: the losses of :class:`~classbalanced.losses.ClassBalancedLoss` (the values of ``LOSS_TYPES``)
LossType = Literal["softmax", "sigmoid", "focal"]
