"""CIFAR ResNets of depth 6n + 2 (He et al., CVPR 2016, Sec. 4.2), as in mdistiller's
``models/cifar/resnet.py``: 3×3 stem without max-pool, three stages of n BasicBlocks at
32, 16, 8 pixels, widths [stem, s1, s2, s3] = [16, 16, 32, 64] (×4 models: [32, 64, 128, 256],
so ``layer1.0`` already has a projection), shortcut ``downsample``, classifier ``fc``.
"""
from typing import Sequence

from models.base import CIFAR_MODELS
from models.resnet import BasicBlock, ResNet

NARROW = (16, 16, 32, 64)
WIDE = (32, 64, 128, 256)


def cifar_resnet(depth: int, widths: Sequence[int], num_classes: int) -> ResNet:
    if (depth - 2) % 6:
        raise ValueError(f"a CIFAR ResNet has depth 6n + 2, not {depth}")
    n = (depth - 2) // 6
    return ResNet(BasicBlock, [n] * 3, widths[1:], widths[0], num_classes)


@CIFAR_MODELS.register("resnet8")
def resnet8(num_classes: int = 100) -> ResNet:
    return cifar_resnet(8, NARROW, num_classes)


@CIFAR_MODELS.register("resnet14")
def resnet14(num_classes: int = 100) -> ResNet:
    return cifar_resnet(14, NARROW, num_classes)


@CIFAR_MODELS.register("resnet20")
def resnet20(num_classes: int = 100) -> ResNet:
    return cifar_resnet(20, NARROW, num_classes)


@CIFAR_MODELS.register("resnet32")
def resnet32(num_classes: int = 100) -> ResNet:
    return cifar_resnet(32, NARROW, num_classes)


@CIFAR_MODELS.register("resnet44")
def resnet44(num_classes: int = 100) -> ResNet:
    return cifar_resnet(44, NARROW, num_classes)


@CIFAR_MODELS.register("resnet56")
def resnet56(num_classes: int = 100) -> ResNet:
    return cifar_resnet(56, NARROW, num_classes)


@CIFAR_MODELS.register("resnet110")
def resnet110(num_classes: int = 100) -> ResNet:
    return cifar_resnet(110, NARROW, num_classes)


@CIFAR_MODELS.register("resnet8x4")
def resnet8x4(num_classes: int = 100) -> ResNet:
    return cifar_resnet(8, WIDE, num_classes)


@CIFAR_MODELS.register("resnet32x4")
def resnet32x4(num_classes: int = 100) -> ResNet:
    return cifar_resnet(32, WIDE, num_classes)
