"""ImageNet-shaped ResNets at CIFAR scale, as in mdistiller's ``models/cifar/resnetv2.py``: a
3×3/1 stem of width 64 without max-pool, four stages (64, 128, 256, 512 planes at 32, 16, 8, 4
pixels), shortcut ``shortcut``, classifier ``linear``.

ResNet18 and ResNet50 are the benchmark's; ResNet10 and ResNet34 are SRRL's CIFAR networks
(Yang et al., ICLR 2021, Table 1: ResNet-34 21.33M and ResNet-10 4.95M parameters at 100
classes, which [3, 4, 6, 3] and [1, 1, 1, 1] BasicBlocks give: 21,328,292 and 4,949,412).
"""
from models.base import CIFAR_MODELS, register_variants
from models.resnet import BasicBlock, Bottleneck, ResNet

PLANES = (64, 128, 256, 512)


def cifar_resnet_v2(block, depths, num_classes: int = 100) -> ResNet:
    return ResNet(block, depths, PLANES, 64, num_classes, shortcut="shortcut", classifier="linear")


register_variants(CIFAR_MODELS, cifar_resnet_v2, {
    "ResNet10": (BasicBlock, [1, 1, 1, 1]), "ResNet18": (BasicBlock, [2, 2, 2, 2]),
    "ResNet34": (BasicBlock, [3, 4, 6, 3]), "ResNet50": (Bottleneck, [3, 4, 6, 3])})
