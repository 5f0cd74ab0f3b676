"""``evaluate --test-data`` on class folders where one class has no test image.

Its empty folder keeps the class order; the run's per-class accuracy of it is then unknown
(``None``), as for an .npz test set without images of a class.
"""

from __future__ import annotations

import json

import numpy as np
from engine_cli import run_cli
from PIL import Image


def test_evaluate_on_class_folders_with_a_class_without_images(
    tiny_npz, copied_run, tmp_path, capsys
):
    with np.load(tiny_npz.test) as f:
        x, y = f["x"], f["y"]
    root = tmp_path / "test_folder"
    for c in range(int(y.max()) + 1):
        (root / str(c)).mkdir(parents=True)  # the run's classes "0".."9", in order
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        if label != 3:
            Image.fromarray(image).save(root / str(label) / f"{i}.png")
    out = tmp_path / "metrics.json"
    argv = ["evaluate", copied_run, "--device", "cpu", "--test-data", root, "--output", out]
    code, _, err = run_cli(capsys, argv)
    assert code == 0, err
    per_class = json.loads(out.read_text())["per_class_accuracy"]
    assert len(per_class) == 10 and per_class[3] is None
    assert all(isinstance(v, float) for k, v in enumerate(per_class) if k != 3)
