"""VGG with BatchNorm at CIFAR scale (Simonyan & Zisserman, ICLR 2015), as in mdistiller's
``models/cifar/vgg.py`` (``vggN_bn``): five blocks ``block0 … block4`` of 3×3 convs (with bias)
+ BN + ReLU, 2×2 max-pools between blocks 0→1, 1→2, 2→3 (and 3→4 only for 64-pixel inputs,
so at 32 pixels blocks 3 and 4 both run at 4×4), global pooling, one ``classifier`` Linear.

Each block drops its last ReLU (the forward applies it), which is what exposes the
pre-activation features and what makes the keys ``blockB.{0,1,3,4,...}``.
"""
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.base import CIFAR_MODELS, StageMaps, ZooModel, kaiming_init_, register_variants

CONFIGS = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256] * 3, [512] * 3, [512] * 3],
    "vgg19": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


def vgg_block(in_channels: int, widths: Sequence[int]) -> nn.Sequential:
    layers = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        in_channels = width
    return nn.Sequential(*layers[:-1])


class VGG(ZooModel):
    classifier_name = "classifier"

    def __init__(self, config: Sequence[Sequence[int]], num_classes: int = 100):
        super().__init__(num_classes)
        in_channels = 3
        for i, widths in enumerate(config):
            setattr(self, f"block{i}", vgg_block(in_channels, widths))
            in_channels = widths[-1]
        self.classifier = nn.Linear(in_channels, num_classes)
        self.stage_channels = [widths[-1] for widths in config]
        kaiming_init_(self, linear_std=0.01)

    def _stages(self, x: torch.Tensor) -> StageMaps:
        pool_before_last = x.shape[2] == 64
        x = F.relu(self.block0(x))
        yield x, x
        for i in range(1, 5):
            if i < 4 or pool_before_last:
                x = F.max_pool2d(x, 2)
            preact = getattr(self, f"block{i}")(x)
            x = F.relu(preact)
            yield x, preact

    def _bn_before_relu_names(self) -> List[Optional[str]]:
        """Each block ends with its last BN (the forward applies the ReLU)."""
        return [f"block{i}.{len(getattr(self, f'block{i}')) - 1}" for i in range(5)]


register_variants(CIFAR_MODELS, VGG, {name: (config,) for name, config in CONFIGS.items()})
