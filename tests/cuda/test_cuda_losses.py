"""Every registered loss on CUDA against the same loss in float64 on the CPU.

The float64 CPU path is itself checked against closed forms in tests/losses/test_losses.py;
here the CUDA kernels (fp32 / bf16 / fp16 logits, autocast, torch.compile) must
reproduce it, values and gradients, within the rounding of the input dtype.
The device-side target and weight checks (``torch._assert_async``) run in a
child process: a device-side assert poisons the CUDA context of its process.
"""

from __future__ import annotations

import textwrap

import pytest
import torch

import classbalanced as cb

COUNTS = [500, 200, 80, 30, 12, 5, 2]  # long-tailed, C = 7
N = 64
LOSSES = cb.available_losses()  # every registered name: the paper's three and the comparisons
MULTI_LABEL = ("sigmoid", "focal")

# (rtol of the loss, rtol of the gradient): the loss is computed in float32 for every
# input dtype; the gradient comes back in the input dtype.
TOL = {
    torch.float32: (2e-5, 2e-5),
    torch.float16: (2e-5, 2e-3),
    torch.bfloat16: (2e-5, 1.6e-2),
}


def _inputs(dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(N, len(COUNTS), generator=g, dtype=torch.float64)).to(dtype)
    targets = torch.randint(0, len(COUNTS), (N,), generator=g)
    return logits, targets


def _loss(name: str) -> torch.nn.Module:
    return cb.build_loss(name, COUNTS, beta=0.999, gamma=0.5)


def _reference(name: str, logits: torch.Tensor, targets: torch.Tensor):
    """Loss and gradient in float64 on the CPU from the very same (rounded) logit values."""
    z = logits.detach().to("cpu", torch.float64).requires_grad_(True)
    value = _loss(name)(z, targets.cpu())
    value.backward()
    return value.detach(), z.grad


def _cuda_value_and_grad(fn, logits: torch.Tensor, targets: torch.Tensor):
    z = logits.detach().cuda().requires_grad_(True)
    value = fn(z, targets.cuda())
    value.backward()
    return value, z.grad


def _close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, what: str) -> None:
    actual = actual.detach().to("cpu", torch.float64)
    scale = expected.abs().max().clamp_min(1e-12)
    err = float((actual - expected).abs().max() / scale)
    assert err <= rtol, f"{what}: max error {err:.3g} of max |ref| exceeds {rtol:g}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", LOSSES)
def test_loss_on_cuda_matches_float64_cpu(name, dtype):
    logits, targets = _inputs(dtype)
    ref_value, ref_grad = _reference(name, logits, targets)
    value, grad = _cuda_value_and_grad(_loss(name).cuda(), logits, targets)
    assert value.device.type == "cuda" and value.dtype == torch.float32
    assert grad.dtype == dtype and grad.device.type == "cuda"
    loss_tol, grad_tol = TOL[dtype]
    _close(value, ref_value, loss_tol, f"{name} {dtype} loss")
    _close(grad, ref_grad, grad_tol, f"{name} {dtype} gradient")


@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", LOSSES)
def test_loss_under_cuda_autocast_is_computed_in_float32(name, amp):
    # logits from a linear layer under autocast are half precision; the loss must not be
    g = torch.Generator().manual_seed(1)
    features = torch.randn(N, 16, generator=g).cuda()
    layer = torch.nn.Linear(16, len(COUNTS)).cuda()
    targets = torch.randint(0, len(COUNTS), (N,), generator=g).cuda()
    loss_fn = _loss(name).cuda()
    with torch.autocast("cuda", dtype=amp):
        logits = layer(features)
        logits.retain_grad()
        value = loss_fn(logits, targets)
    assert logits.dtype == amp
    assert value.dtype == torch.float32
    value.backward()
    ref_value, ref_grad = _reference(name, logits, targets)
    _close(value, ref_value, TOL[amp][0], f"{name} autocast {amp} loss")
    _close(logits.grad, ref_grad, TOL[amp][1], f"{name} autocast {amp} gradient")


@pytest.mark.parametrize("name", LOSSES)
def test_compiled_loss_on_cuda_matches_float64_cpu(name):
    torch._dynamo.reset()
    logits, targets = _inputs(torch.float32, seed=2)
    ref_value, ref_grad = _reference(name, logits, targets)
    compiled = torch.compile(_loss(name).cuda(), dynamic=False)
    value, grad = _cuda_value_and_grad(compiled, logits, targets)
    _close(value, ref_value, 2e-5, f"compiled {name} loss")
    _close(grad, ref_grad, 2e-5, f"compiled {name} gradient")


@pytest.mark.parametrize("name", MULTI_LABEL)
def test_multi_hot_targets_on_cuda_match_float64_cpu(name):
    g = torch.Generator().manual_seed(3)
    logits = 2 * torch.randn(N, len(COUNTS), generator=g)
    multi_hot = (torch.rand(N, len(COUNTS), generator=g) < 0.3).float()
    loss = _loss(name)
    z = logits.double().requires_grad_(True)
    ref = loss(z, multi_hot.double())
    ref.backward()
    value, grad = _cuda_value_and_grad(loss.cuda(), logits, multi_hot)
    _close(value, ref.detach(), 2e-5, f"{name} multi-hot loss")
    _close(grad, z.grad, 2e-5, f"{name} multi-hot gradient")


def test_multilabel_class_balanced_loss_on_cuda_matches_float64_cpu():
    g = torch.Generator().manual_seed(4)
    logits = 2 * torch.randn(N, len(COUNTS), generator=g)
    labels = (torch.rand(N, len(COUNTS), generator=g) < 0.3).float()
    kwargs = dict(beta=0.99, negatives_per_class=[1000 - c for c in COUNTS], gamma=1.0)
    z = logits.double().requires_grad_(True)
    ref = cb.multilabel_class_balanced_loss(z, labels.double(), COUNTS, **kwargs)
    ref.backward()
    zc = logits.cuda().requires_grad_(True)
    value = cb.multilabel_class_balanced_loss(zc, labels.cuda(), COUNTS, **kwargs)
    value.backward()
    _close(value, ref.detach(), 2e-5, "multilabel loss")
    _close(zc.grad, z.grad, 2e-5, "multilabel gradient")


def test_loss_step_on_cuda_does_not_synchronise_with_the_host():
    # the target / weight checks run on the device (torch._assert_async): no host read
    logits, targets = _inputs(torch.float32)
    z = logits.cuda().requires_grad_(True)
    t = targets.cuda()
    for name in ("softmax", "sigmoid", "focal"):
        loss_fn = _loss(name).cuda()
        loss_fn(z, t).backward()  # warm-up outside the check (lazy initialisation may sync)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            loss_fn(z, t).backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()


_ASSERT_SCRIPT = textwrap.dedent(
    """
    import sys, torch, classbalanced as cb
    what = sys.argv[1]
    z = torch.zeros(4, 3, device="cuda")
    good = torch.tensor([0, 1, 2, 0], device="cuda")
    loss = cb.build_loss("focal", [30, 20, 10], beta=0.9).cuda()
    float(loss(z, good))  # valid inputs pass the device-side checks
    print("valid-ok", flush=True)
    if what == "target":
        value = loss(z, torch.tensor([0, 1, 3, 0], device="cuda"))  # 3 is out of range
    elif what == "negative-target":
        value = cb.softmax_cross_entropy(z, torch.tensor([0, -1, 2, 0], device="cuda"))
    else:  # a weight tensor on the device with a negative entry
        value = cb.sigmoid_cross_entropy(z, good, torch.tensor([1.0, -1.0, 1.0], device="cuda"))
    torch.cuda.synchronize()
    print("NOT-CAUGHT", float(value), flush=True)
    """
)


@pytest.mark.parametrize("what", ["target", "negative-target", "weight"])
def test_device_side_checks_stop_bad_targets_and_weights(cuda_helpers, what):
    proc = cuda_helpers.run_python(["-c", _ASSERT_SCRIPT, what], check=False, timeout=120)
    assert "valid-ok" in proc.stdout, proc.stderr[-2000:]
    assert "NOT-CAUGHT" not in proc.stdout
    assert proc.returncode != 0
    assert "assert" in proc.stderr.lower(), proc.stderr[-2000:]


def test_host_check_of_cpu_targets_still_raises_value_error():
    # the CPU branch reads the range on the host; the CUDA branch must not change it
    with pytest.raises(ValueError, match="class indices"):
        cb.softmax_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="device"):
        cb.softmax_cross_entropy(torch.zeros(2, 3, device="cuda"), torch.tensor([0, 1]))
