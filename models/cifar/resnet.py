"""CIFAR ResNets of depth 6n + 2 (He et al., CVPR 2016, Sec. 4.2), as in mdistiller's
``models/cifar/resnet.py``: 3×3 stem without max-pool, three stages of n BasicBlocks at
32, 16, 8 pixels, widths [stem, s1, s2, s3] = [16, 16, 32, 64] (×4 models: [32, 64, 128, 256],
so ``layer1.0`` already has a projection), shortcut ``downsample``, classifier ``fc``.
"""
from typing import Sequence

from models.base import CIFAR_MODELS, register_variants
from models.resnet import BasicBlock, ResNet

NARROW = (16, 16, 32, 64)
WIDE = (32, 64, 128, 256)


def cifar_resnet(depth: int, widths: Sequence[int], num_classes: int = 100) -> ResNet:
    if (depth - 2) % 6:
        raise ValueError(f"a CIFAR ResNet has depth 6n + 2, not {depth}")
    n = (depth - 2) // 6
    return ResNet(BasicBlock, [n] * 3, widths[1:], widths[0], num_classes)


register_variants(CIFAR_MODELS, cifar_resnet, {
    **{f"resnet{depth}": (depth, NARROW) for depth in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": (8, WIDE), "resnet32x4": (32, WIDE)})
