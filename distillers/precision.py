"""Every distillation loss in full precision, whatever the step's autocast.

Under ``runtime.amp`` the networks run in float16 or bfloat16, and autocast would compute a
loss's matrix products, sums of squares and exponentials in that precision too: SP's Gram
matrix and RKD's distances overflow float16 (largest value 65504), DIST's correlations and NST's
kernels turn to inf/NaN, and PKT's and RKD's relations lose their digits in bfloat16 (CPU
autocast, random resnet20 -> resnet8 at batch 4: PKT 59x and RKD 29x the float32 loss under
bf16; DIST, NST, OFD, RKD non-finite under fp16). The original implementations train in float32.

``full_precision`` wraps a loss so that it runs with autocast off on its inputs raised to float32
(float64 stays float64): the networks and the methods' connectors keep the step's precision and
speed, the loss is computed as in a float32 run, and a float32 run is unchanged (no tensor is
cast, the loss computes exactly as before). Cross-entropy needs no wrapper: autocast computes
it in float32 on every device.
"""
import functools
from contextlib import nullcontext
from typing import Callable

import torch

REDUCED = (torch.float16, torch.bfloat16)
AUTOCAST_DEVICES = ("cpu", "cuda")


def map_floating(outputs, fn: Callable[[torch.Tensor], torch.Tensor]):
    """``fn`` applied to every floating tensor, alone or in (nested) lists, tuples and dicts."""
    if torch.is_tensor(outputs):
        return fn(outputs) if outputs.is_floating_point() else outputs
    if isinstance(outputs, dict):
        return {k: map_floating(v, fn) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(map_floating(v, fn) for v in outputs)
    return outputs


def full_precision(loss: Callable) -> Callable:
    """``loss`` computed with autocast off (on the device of its first floating tensor
    argument), its float16/bfloat16 tensor arguments raised to float32, float32 and float64
    ones untouched."""
    @functools.wraps(loss)
    def in_full_precision(*args, **kwargs):
        devices = []

        def upcast(tensor: torch.Tensor) -> torch.Tensor:
            devices.append(tensor.device.type)
            return tensor.float() if tensor.dtype in REDUCED else tensor

        args, kwargs = map_floating((args, kwargs), upcast)
        device_type = devices[0] if devices else None
        with (torch.autocast(device_type, enabled=False) if device_type in AUTOCAST_DEVICES
              else nullcontext()):
            return loss(*args, **kwargs)
    return in_full_precision
