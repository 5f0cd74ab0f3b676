"""Adapters for the training frameworks practitioners already use.

* :mod:`classbalanced.integrations.transformers` -- Hugging Face ``Trainer``:
  ``compute_loss_func``, a ``TrainerCallback`` for the re-weighting schedules,
  the prior bias on a sequence-classification head (extra ``[transformers]``);
* :mod:`classbalanced.integrations.lightning` -- PyTorch Lightning: a ``Callback``
  that drives a :class:`~classbalanced.ReweightSchedule` (extra ``[lightning]``).

These modules import without their framework (the framework classes are built on
first use, which names the extra to install when it is missing), and nothing else
in ``classbalanced`` imports them: ``import classbalanced`` loads neither framework.
"""
