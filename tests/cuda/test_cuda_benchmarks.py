"""The benchmarks' ``--device cuda`` paths run and print their tables (tiny settings: the
measurements themselves come from benchmarks/gpu_check.py)."""

from __future__ import annotations

import json


def test_train_speed_on_cuda(cuda_helpers, tmp_path):
    out = tmp_path / "speed.json"
    proc = cuda_helpers.run_python(
        ["benchmarks/train_speed.py", "--device", "cuda", "--steps", "10", "--warmup", "2",
         "--block", "5", "--rounds", "1", "--workers", "0", "--no-compile",
         "--configs", "bf16:cl:eager,fp16:cl:eager", "--json", str(out)],
        timeout=600,
    )  # fmt: skip
    assert "200 epochs x" in proc.stdout and "images/s" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["device"].startswith("cuda") and doc["model"] == "resnet32"
    names = [r["name"] for r in doc["rows"]]
    assert "ours: fp16, channels_last, eager" in names
    for row in doc["rows"]:
        assert row["images_per_s"] > 0 and row["step_s"] > 0
        if row["mean_loss_rel_diff"] is not None:  # every configuration trains like fp32
            assert row["mean_loss_rel_diff"] < 1e-2, row


def test_loss_speed_on_cuda(cuda_helpers):
    proc = cuda_helpers.run_python(
        ["benchmarks/loss_speed.py", "--device", "cuda", "--losses", "focal", "--shapes",
         "128x10", "256x8142", "--repeats", "4", "--rounds", "2", "--warmup", "1"],
        check=False,
        timeout=300,
    )  # fmt: skip
    # exit 1 means the focal target was missed: a measurement, not a crash
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| focal |")]
    assert len(rows) == 2 and "device cuda" in proc.stdout


def test_data_speed_on_cuda(cuda_helpers):
    proc = cuda_helpers.run_python(
        ["benchmarks/data_speed.py", "--device", "cuda", "--train-images", "20000",
         "--classes", "200", "--repeats", "1", "--exist-files", "200", "--exist-folders", "4",
         "--pipeline-images", "24", "--batch-size", "8", "--workers", "2"],
        timeout=300,
    )  # fmt: skip
    assert "copied to the GPU" in proc.stdout and "device cuda" in proc.stdout
