"""ImageNet ResNets (He et al., CVPR 2016), as mdistiller's ``models/imagenet/resnet.py``, whose
parameters, keys and order are torchvision's ``resnet18/34/50/101``: 7×7/2 stem + 3×3/2
max-pool, four stages of 64/128/256/512 planes, ``downsample`` shortcuts, ``fc``. So
torchvision's weights (the benchmark's ImageNet teachers, ``IMAGENET1K_V1``) load unchanged.

Features: the stem's output (after its ReLU, before the max-pool) and the four stage outputs,
each before (``preact_feats``) and after (``feats``) the ReLU. The stem's pre-activation entry
is its ReLU output as well: the reference keeps a reference to the BN output and then applies
an in-place ReLU to it, and the reference data reflects that.
"""
from models.base import IMAGENET_MODELS, register_variants
from models.resnet import BasicBlock, Bottleneck, ResNet

PLANES = (64, 128, 256, 512)


def imagenet_resnet(block, depths, num_classes: int = 1000) -> ResNet:
    return ResNet(block, depths, PLANES, 64, num_classes, imagenet_stem=True)


register_variants(IMAGENET_MODELS, imagenet_resnet, {
    "ResNet18": (BasicBlock, [2, 2, 2, 2]), "ResNet34": (BasicBlock, [3, 4, 6, 3]),
    "ResNet50": (Bottleneck, [3, 4, 6, 3]), "ResNet101": (Bottleneck, [3, 4, 23, 3])})
