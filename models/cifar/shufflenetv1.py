"""ShuffleNet (Zhang et al., CVPR 2018) at CIFAR scale, as the benchmark's ``ShuffleV1``
(mdistiller's ``models/cifar/ShuffleNetv1.py``): 3 groups, stage widths 240/480/960 with 4/8/4
units, a 1×1 conv stem of 24 channels at full resolution (no max-pool), ``linear`` classifier.
"""
import torch
import torch.nn.functional as F
from torch import nn

from models.base import CIFAR_MODELS, Stage, StageMaps, ZooModel, channel_shuffle, run_stages


class ShuffleUnit(nn.Module):
    """1×1 group conv → BN → ReLU → shuffle → 3×3 depthwise (stride) → BN → ReLU → 1×1 group
    conv → BN, added to the input (stride 1) or concatenated with its 3×3/2 average pool
    (stride 2); returned before the final ReLU. The bottleneck is a quarter of the output."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int, first_groups: int):
        super().__init__()
        mid_planes = out_planes // 4
        self.stride, self.first_groups = stride, first_groups
        self.conv1 = nn.Conv2d(in_planes, mid_planes, 1, groups=first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_planes)
        self.conv2 = nn.Conv2d(mid_planes, mid_planes, 3, stride, 1, groups=mid_planes, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_planes)
        self.conv3 = nn.Conv2d(mid_planes, out_planes, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            return torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], 1)
        return out + x


class ShuffleNet(ZooModel):
    """ShuffleNet V1; also the skeleton of ShuffleNetV2, which brings its own units and head:
    a 1×1 conv stem of 24 channels (``conv1``, ``bn1``, ReLU), stages ``layer1 … layer3``,
    pooling, ``linear``."""

    classifier_name = "linear"

    def __init__(self, widths, units, num_classes: int, groups: int = 3):
        super().__init__(num_classes)
        self.groups = groups
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        in_planes = 24
        for s, (width, num_units) in enumerate(zip(widths, units)):
            setattr(self, f"layer{s + 1}", self._make_stage(in_planes, width, num_units, first=s == 0))
            in_planes = width
        self._make_head(in_planes, num_classes)
        self.stage_channels = [24] + list(widths)

    def _make_stage(self, in_planes: int, width: int, num_units: int, first: bool) -> nn.Sequential:
        # the first unit concatenates its input, so its branch makes the missing channels;
        # the network's very first 1×1 conv (24 input channels) is not grouped
        stage = [ShuffleUnit(in_planes, width - in_planes, 2, self.groups, 1 if first else self.groups)]
        stage += [ShuffleUnit(width, width, 1, self.groups, self.groups) for _ in range(num_units - 1)]
        return Stage(*stage)

    def _make_head(self, in_planes: int, num_classes: int) -> None:
        self.linear = nn.Linear(in_planes, num_classes)

    def _layers(self):
        return self.layer1, self.layer2, self.layer3

    def _stages(self, x: torch.Tensor) -> StageMaps:
        x = F.relu(self.bn1(self.conv1(x)))
        yield x, x
        yield from self._stage_maps(x)

    def _stage_maps(self, x: torch.Tensor) -> StageMaps:
        return run_stages(x, self._layers())


@CIFAR_MODELS.register("ShuffleV1")
def shufflev1(num_classes: int = 100) -> ShuffleNet:
    return ShuffleNet((240, 480, 960), (4, 8, 4), num_classes, groups=3)
