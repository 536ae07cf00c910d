"""Under ``runtime.amp`` every method's losses are computed in full precision
(distillers/precision.py): the networks run in float16/bfloat16, the losses do not.

Held against the float32 forward of the same distiller on the same batch (CPU autocast, which
rounds the networks' activations as CUDA autocast does): each loss is float32, finite, and off
by no more than the networks' own rounding. The batch is scaled up 50x so that the random
teacher's feature maps (eval-mode BatchNorm with unit statistics) are as large as a trained
network's: computed in float16 the relation and feature losses overflow, and PKT/RKD computed in
bfloat16 are off by 2x-12x (measured before the fix).
"""
import copy

import pytest
import torch
import torch.nn.functional as F

from distillers.losses import kd_loss, sp_loss
from distillers.precision import full_precision
from tests.methods import METHODS
from tests.test_distillers import batch, build

SCALE = 50.0
# worst measured relative error, all methods: float16 5e-3 (RKD), bfloat16 4.9e-2 (RKD)
TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 1e-1}
AMPS, AMP_IDS = [torch.float16, torch.bfloat16], ["fp16", "bf16"]


def check_losses_in_full_precision(name: str, amp: torch.dtype, device: str) -> None:
    """One training forward of method ``name`` under ``amp`` autocast on ``device`` against the
    float32 forward of a copy; then the backward of the summed losses gives finite gradients.
    tests/test_cuda.py runs it on a GPU."""
    distiller = build(name).to(device).train()
    data = batch().to(device)
    data = data.map_images(lambda images: images * SCALE)
    in_float32 = copy.deepcopy(distiller)   # the same weights, memory bank and statistics
    _, expected = in_float32(data, 5)
    with torch.autocast(device, dtype=amp):
        _, losses = distiller(data, 5)
    assert losses.keys() == expected.keys()
    for key, value in losses.items():
        assert value.dtype == torch.float32, f"{key} computed in {value.dtype}"
        assert torch.isfinite(value), f"{key} = {value.item()}"
        torch.testing.assert_close(value, expected[key], rtol=TOLERANCE[amp], atol=1e-6,
                                   msg=lambda m: f"{key}: {m}")
    sum(losses.values()).backward()
    for key, p in distiller.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), f"{key}: non-finite gradient"


@pytest.mark.parametrize("amp", AMPS, ids=AMP_IDS)
@pytest.mark.parametrize("name", METHODS)
def test_every_loss_is_float32_and_close_to_the_float32_run_under_autocast(name, amp):
    check_losses_in_full_precision(name, amp, "cpu")


def test_a_wrapped_loss_computes_exactly_as_on_float32_inputs_outside_autocast():
    generator = torch.Generator().manual_seed(0)
    student = (torch.randn(8, 100, generator=generator) * 30).half()
    teacher = (torch.randn(8, 100, generator=generator) * 30).half()
    maps_s = [(torch.rand(8, 64, 8, 8, generator=generator) * 40).half().requires_grad_()]
    maps_t = [(torch.rand(8, 64, 8, 8, generator=generator) * 40).half()]
    with torch.autocast("cpu", dtype=torch.float16):
        kd = kd_loss(student, teacher, 4.0)
        sp = sp_loss(maps_s, maps_t)   # Gram entries ~ 64*8*8*400: beyond float16's 65504
    assert torch.equal(kd, kd_loss(student.float(), teacher.float(), 4.0))
    assert torch.equal(sp, sp_loss([maps_s[0].float()], [maps_t[0].float()]))
    sp.backward()
    assert maps_s[0].grad.dtype == torch.float16 and torch.isfinite(maps_s[0].grad).all()


def test_float64_and_float32_inputs_are_left_as_they_are():
    seen = []
    traced = full_precision(lambda a, pair, scale: seen.append((a.dtype, [t.dtype for t in pair])) or a.sum())
    traced(torch.ones(2, dtype=torch.float64), (torch.ones(2), torch.ones(2, dtype=torch.bfloat16)), 2.0)
    assert seen == [(torch.float64, [torch.float32, torch.float32])]
    assert full_precision(F.mse_loss).__name__ == "mse_loss"   # the wrapped name is kept
