"""MobileNetV2 at CIFAR scale (Sandler et al., CVPR 2018), as the benchmark's ``MobileNetV2``
(mdistiller's ``mobile_half`` = expansion 6, width 0.5, ``models/cifar/mobilenetv2.py``).

Differences from the paper, all kept for checkpoint and logit compatibility: plain ReLU instead
of ReLU6; every inverted residual has its 1×1 expansion conv, even with expansion 1; the
stem is a 3×3/2 conv (so the network works at 16×16 from the start); the last 1×1 conv has
1280 channels whatever the width. Features: the stem and the outputs of block groups 1, 2, 4,
6. The reference reports no pre-activation features for this model; ours fill that gap for the
methods that distil them (OFD, ReviewKD): the stem's BN output before its ReLU, and for the
groups their output itself, since an inverted residual ends linearly (no ReLU follows it).
"""
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from models.base import CIFAR_MODELS, StageMaps, ZooModel, kaiming_init_

# (channels c, repeats n, first stride s) of the paper's Table 2; the first group has
# expansion 1, the others the model's expansion (the paper's t = 6)
SETTINGS = [(16, 1, 1), (24, 2, 1), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1)]
FEATURE_GROUPS = ((0, 1), (2,), (3, 4), (5, 6))  # block groups ending at each stage map


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class InvertedResidual(nn.Module):
    """1×1 expansion → BN → ReLU → 3×3 depthwise (stride) → BN → ReLU → 1×1 projection → BN,
    plus the input when the stride is 1 and the width is unchanged."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            *conv_bn_relu(in_channels, hidden, 1),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(ZooModel):
    classifier_name = "classifier"

    def __init__(self, expansion: int, width_mult: float, num_classes: int):
        super().__init__(num_classes)
        channels = int(32 * width_mult)
        self.conv1 = conv_bn_relu(3, channels, 3, stride=2)
        self.blocks = nn.ModuleList()
        for index, (c, n, s) in enumerate(SETTINGS):
            out_channels = int(c * width_mult)
            self.blocks.append(nn.Sequential(*[
                InvertedResidual(channels if i == 0 else out_channels, out_channels, s if i == 0 else 1,
                                 expansion if index else 1) for i in range(n)]))
            channels = out_channels
        last_channels = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = conv_bn_relu(channels, last_channels, 1)
        self.classifier = nn.Sequential(nn.Linear(last_channels, num_classes))
        self.stage_channels = [int(32 * width_mult)] + [int(SETTINGS[g[-1]][0] * width_mult) for g in FEATURE_GROUPS]
        kaiming_init_(self, linear_std=0.01)

    def _stages(self, x: torch.Tensor) -> StageMaps:
        conv, bn, _ = self.conv1
        preact = bn(conv(x))
        x = F.relu(preact)
        yield x, preact
        for group in FEATURE_GROUPS:
            for index in group:
                x = self.blocks[index](x)
            yield x, x

    def _bn_before_relu_names(self) -> List[Optional[str]]:
        """The stem's BN, then the projection BN ending each group's last block (the reference's
        ``get_bn_before_relu`` for the groups, though no ReLU follows a linear bottleneck)."""
        return ["conv1.1"] + [f"blocks.{g[-1]}.{len(self.blocks[g[-1]]) - 1}.conv.7" for g in FEATURE_GROUPS]

    def _pre_pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(x)


@CIFAR_MODELS.register("MobileNetV2")
def mobilenetv2(num_classes: int = 100) -> MobileNetV2:
    """The benchmark's ``mobile_half``: expansion 6, width 0.5."""
    return MobileNetV2(6, 0.5, num_classes)
