"""Deterministic weights and inputs for comparing a model with the reference data.

A reimplementation of the documented recipe (tests/reference/MODELS.md, "The deterministic
weights"): every floating tensor of ``model.state_dict()`` gets a value that depends on its key
alone, so two implementations with the same keys and shapes get bit-identical weights, whatever
their module classes or default initialisation.

    z = N(0, 1) draws, float64, from a CPU generator seeded with crc32(key)
    running_mean: 0.1·z            running_var: 1 + 0.1·|z|
    rank ≥ 2 (conv / linear weight): z·sqrt(GAIN / fan_in), fan_in = numel / shape[0]
    other rank-1 "weight" (norm scale): 1 + 0.1·z
    anything else floating (biases, norm shifts): 0.1·z
    integer tensors (num_batches_tracked) untouched

GAIN = 1.25 keeps every tensor of the zoo visible in the logits (MODELS.md explains the choice).
"""
import math
import zlib
from typing import Sequence

import torch
from torch import nn

GAIN = 1.25


def _standard_normal(shape: Sequence[int], seed: int) -> torch.Tensor:
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float64)


def recipe_value(key: str, shape: Sequence[int]) -> torch.Tensor:
    """The float64 value the recipe gives the tensor ``key`` of ``shape``."""
    z = _standard_normal(shape, zlib.crc32(key.encode("utf-8")))
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "running_mean":
        return 0.1 * z
    if leaf == "running_var":
        return 1.0 + 0.1 * z.abs()
    if len(shape) >= 2:
        return z * math.sqrt(GAIN / max(1, z.numel() // max(1, shape[0])))
    if len(shape) == 1 and leaf == "weight":
        return 1.0 + 0.1 * z
    return 0.1 * z


@torch.no_grad()
def fill_(model: nn.Module) -> nn.Module:
    """Write the recipe's value into every floating state-dict tensor of ``model``, in place."""
    for key, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            tensor.copy_(recipe_value(key, tensor.shape))
    return model


def make_input(shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    """Standard-normal float64 images from a CPU generator seeded with ``seed``."""
    return _standard_normal(shape, seed)
