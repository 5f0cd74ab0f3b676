"""DDP on CPU (gloo) through torchrun: rank 0 writes, N ranks x batch b == 1 process x batch N*b."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from engine_cli import digits_args

from classbalanced.engine.checkpoint import latest_checkpoint, load_checkpoint

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent))
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(TORCHRUN is None, reason="torchrun not installed next to this Python"),
]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _train_args(out: Path, loss: str, batch: int, epochs: int = 1):
    settings = {"loss": loss, "beta": 0.99, "gamma": 0.5, "epochs": epochs, "batch_size": batch}
    return digits_args(out, "--no-flip", **settings)


def _run(cmd, timeout=240):
    result = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _torchrun(nproc: int, args):
    return _run([TORCHRUN, "--standalone", "--nproc_per_node", str(nproc), *args])


# softmax, and focal for the sigmoid family (its logsigmoid terms, the prior bias): each
# case is two process launches, ~13 s of the suite
@pytest.mark.parametrize("loss", ["softmax", "focal"])
def test_two_ranks_equal_one_process_with_twice_the_batch(tmp_path, loss):
    # digits IF 10 has 534 training images: a global batch of 266 gives 2 optimiser steps
    single, double = tmp_path / "single", tmp_path / "double"
    _run([sys.executable, *_train_args(single, loss, batch=266)])
    _torchrun(2, _train_args(double, loss, batch=266))
    a = load_checkpoint(latest_checkpoint(single / "checkpoints"))
    b = load_checkpoint(latest_checkpoint(double / "checkpoints"))
    assert a["global_step"] == b["global_step"] == 2
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    # and the parameters did move (the comparison is not between two untouched inits)
    init = _initial_state(loss)
    assert any(not torch.allclose(init[k], a["model"][k]) for k in init)
    # metrics are combined across ranks by summing counts: same numbers, every test image once
    ma = json.loads((single / "metrics.json").read_text())
    mb = json.loads((double / "metrics.json").read_text())
    assert mb["num_test_images"] == ma["num_test_images"] == 500
    assert mb["accuracy"] == pytest.approx(ma["accuracy"], abs=1 / 500)


def _initial_state(loss):
    from classbalanced.losses import init_prior_bias_
    from classbalanced.models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model("simple_cnn", 10, in_channels=1)
    if loss != "softmax":
        init_prior_bias_(model.fc)
    return model.state_dict()


def test_torchrun_rank0_alone_writes_and_resume_with_other_world_size(tmp_path):
    out = tmp_path / "run"
    result = _torchrun(2, _train_args(out, "focal", batch=128, epochs=1))
    assert result.stderr.count("final: error") == 1  # only rank 0 reports
    assert len(list((out / "checkpoints").iterdir())) == 1
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1]  # metrics written once per evaluation
    events = list((out / "tensorboard").iterdir())
    assert len(events) == 1  # one event file: rank 0's
    # resume the 2-rank run in one process for a second epoch (--force: epochs changed)
    _run([sys.executable, *_train_args(out, "focal", batch=128, epochs=2), "--resume", "--force"])
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]


def test_sigterm_under_torchrun_stops_all_ranks_at_one_step_and_resumes(tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    cmd = [
        TORCHRUN,
        "--standalone",
        "--nproc_per_node",
        "2",
        *_train_args(out, "focal", batch=32, epochs=30),
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env()
    )
    deadline = time.monotonic() + 120
    while not list((out / "checkpoints").glob("*.pt")) if (out / "checkpoints").is_dir() else True:
        assert time.monotonic() < deadline and proc.poll() is None, "no checkpoint appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # torchrun forwards it to both workers
    _, stderr = proc.communicate(timeout=120)  # no rank is left waiting in a collective
    assert proc.returncode != 0
    assert "--resume" in stderr
    resumed = _run([sys.executable, *_train_args(out, "focal", batch=32, epochs=30), "--resume"])
    assert "resuming" in resumed.stderr
    assert json.loads((out / "metrics.json").read_text())["epoch"] == 30


_CHECK_TEARDOWN = """
import gc, sys
from torch.nn.parallel import DistributedDataParallel
from classbalanced.config import TrainConfig
from classbalanced.engine import train

gc.disable()  # only train() itself may collect
cfg = TrainConfig(dataset="digits", imbalance_factor=10, model="simple_cnn", epochs=1,
                  batch_size=128, device="cpu", progress=False, out=sys.argv[1])
train(cfg, log=lambda message: None)
alive = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
print(f"DDP wrappers alive after train(): {alive}")
"""


def test_the_ddp_wrapper_is_gone_before_the_process_group(tmp_path):
    # the wrapper holds the process group and sits in reference cycles: train() collects it
    # before destroying the group, so the group's threads are joined there and not during
    # interpreter shutdown (where a gloo rank once aborted after a complete run)
    script = tmp_path / "check.py"
    script.write_text(_CHECK_TEARDOWN)
    result = _run(
        [TORCHRUN, "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path / "r")]
    )
    assert result.stdout.count("DDP wrappers alive after train(): 0") == 2, result.stdout
