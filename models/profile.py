"""Model size and cost, counted the way the benchmark's reference data counts them.

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` on a batch-1 float32 eval forward
at the model's resolution: it counts convolutions and matrix products only (not BatchNorm,
activations, pooling or additions), and MACs = FLOPs / 2. The forward is ``forward_features``,
which runs every branch of multi-branch models (ONE) as the reference's forward does; it can
run on the meta device, which gives the counts without computing anything.
"""
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, image_size: int) -> int:
    """Multiply-accumulates of one ``3 × image_size × image_size`` image."""
    first = next(model.parameters())
    images = torch.zeros(1, 3, image_size, image_size, device=first.device, dtype=first.dtype)
    was_training = model.training
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            model.eval().forward_features(images)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
