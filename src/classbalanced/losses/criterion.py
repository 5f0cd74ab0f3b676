"""What a loss module offers the trainer: the :class:`Criterion` protocol.

The trainer, the network builder and the decoupling stage never branch on loss
names; they read these members of the loss object instead. Every registered loss
satisfies it (:func:`~classbalanced.losses.build_loss` refuses a builder whose
module does not): deriving from :class:`~classbalanced.losses.ClassWeightBuffers`
gives ``set_weight`` and the defaults ``normalized_classifier = False`` and
``uses_prior_bias = False``; a loss overrides the ones that differ.

>>> from classbalanced.losses import build_loss
>>> loss = build_loss("focal", [50, 5], beta=0.9)
>>> isinstance(loss, Criterion), loss.uses_prior_bias, loss.normalized_classifier
(True, True, False)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from torch import Tensor

if TYPE_CHECKING:  # Python 3.10 has no typing.Self
    from typing_extensions import Self

__all__ = ["Criterion", "CRITERION_MEMBERS", "missing_members"]


@runtime_checkable
class Criterion(Protocol):
    """A loss module as the trainer sees it (an ``nn.Module`` with these members).

    * ``loss(logits (B, C), targets (B,)) -> Tensor``: the loss to minimise;
    * ``normalized_classifier``: the classifier must be a cosine classifier
      (:class:`~classbalanced.models.NormedLinear`; LDAM's scale assumes logits in ``[-1, 1]``);
    * ``uses_prior_bias``: the classifier bias starts at
      :func:`~classbalanced.losses.prior_bias` and is kept out of weight decay
      (sigmoid-based losses);
    * ``set_weight(weight)``: replace the ``(C,)`` per-class weights (``None``:
      unweighted), for the re-weighting schedules (``--reweight-schedule drw|ramp``).
    """

    @property
    def normalized_classifier(self) -> bool: ...

    @property
    def uses_prior_bias(self) -> bool: ...

    def set_weight(self, weight: Tensor | None) -> None: ...

    def __call__(self, logits: Tensor, targets: Tensor) -> Tensor: ...

    if TYPE_CHECKING:  # for the type checker only: a loss is an nn.Module the trainer moves

        def to(self, *args: Any, **kwargs: Any) -> Self: ...


#: the members of :class:`Criterion`, for error messages
CRITERION_MEMBERS = ("normalized_classifier", "uses_prior_bias", "set_weight", "__call__")


def missing_members(obj: object) -> list[str]:
    """The :class:`Criterion` members ``obj`` lacks (empty: it is one).

    >>> missing_members(object())
    ['normalized_classifier', 'uses_prior_bias', 'set_weight', '__call__']
    """
    return [name for name in CRITERION_MEMBERS if not hasattr(obj, name)]
