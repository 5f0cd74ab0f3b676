"""``import classbalanced`` stays free of the optional frameworks (and of the adapters), and the adapters import
without them: only their callbacks need the framework, and name the extra to install."""

from __future__ import annotations

import subprocess
import sys

FRAMEWORKS = ("transformers", "datasets", "accelerate", "lightning", "pytorch_lightning")

CHILD = f"""
import sys
import classbalanced
loaded = [name for name in {FRAMEWORKS + ("classbalanced.integrations",)!r} if name in sys.modules]
print("after import classbalanced:", loaded)
for name in {FRAMEWORKS!r}:
    sys.modules[name] = None  # as if the extras were not installed
from classbalanced.integrations import lightning, transformers
f = transformers.class_balanced_loss_func([3, 1], beta=0.9, loss_type="softmax")
for module in (transformers, lightning):
    try:
        module.ReweightCallback
    except ImportError as error:
        print(str(error))
"""


def test_import_classbalanced_loads_no_framework_and_the_callbacks_name_their_extra():
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, timeout=120
    ).stdout.splitlines()
    assert out == [
        "after import classbalanced: []",
        "ReweightCallback needs the optional package 'transformers': "
        "pip install 'classbalanced[transformers]'",
        "ReweightCallback needs the optional package 'lightning': "
        "pip install 'classbalanced[lightning]'",
    ]
