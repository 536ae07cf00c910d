"""Batch-norm statistics for a network that has never seen data.

A freshly initialised network keeps BatchNorm's running statistics at mean 0, variance 1, so
in eval mode nothing normalises its activations: each residual stage adds to the scale, and a
random ResNet-110 emits logits near 1e8. Smoke runs and benchmarks that stand a random teacher
in for a checkpoint need logits of a trained network's scale (a few units), or DKD's masking
and the softmaxes saturate to NaN on the first step. Estimating the running statistics on a few
batches of unit-normal inputs (the scale of normalised images) gives exactly that.
"""
import torch
from torch import nn


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, input_shape, batches: int = 4, batch_size: int = 16,
                          seed: int = 0) -> nn.Module:
    """Replace every BatchNorm's running mean/var by their average over ``batches`` random
    batches of shape ``(batch_size, *input_shape)``; weights are untouched, the mode restored."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    saved = [(m, m.momentum) for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.train()
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    for _ in range(batches):
        x = torch.randn((batch_size, *input_shape), generator=generator).to(device)
        model(x)
    for m, momentum in saved:
        m.momentum = momentum
    model.train(was_training)
    return model
