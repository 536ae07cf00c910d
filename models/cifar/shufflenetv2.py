"""ShuffleNetV2 (Ma et al., ECCV 2018) at CIFAR scale, as the benchmark's ``ShuffleV2`` (size 1,
mdistiller's ``models/cifar/ShuffleNetv2.py``): a 1×1 conv stem of 24 channels at full
resolution, stages of one down-sampling unit and 3/7/3 basic units (widths 116/232/464), then
``conv2`` 1×1 to 1024 + ``bn2`` + ReLU, pooling and ``linear``.

Quirk kept from the reference: a stage's pre-activation feature is the concatenation *before*
the channel shuffle (and before the ReLU of the branch), while its feature is after the
shuffle, so the two differ in channel order.
"""
import torch
import torch.nn.functional as F
from torch import nn

from models.base import CIFAR_MODELS, StageMaps, channel_shuffle
from models.cifar.shufflenetv1 import ShuffleNet

LAST_CHANNELS = 1024  # conv2's width for the size-1 network


def dwconv3x3(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False)


def conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, bias=False)


class BasicUnit(nn.Module):
    """Keep the first half of the channels, run the second through 1×1 → BN → ReLU → 3×3
    depthwise → BN → 1×1 → BN → ReLU, concatenate, shuffle with 2 groups."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.conv1, self.bn1 = conv1x1(half, half), nn.BatchNorm2d(half)
        self.conv2, self.bn2 = dwconv3x3(half, 1), nn.BatchNorm2d(half)
        self.conv3, self.bn3 = conv1x1(half, half), nn.BatchNorm2d(half)

    def forward(self, x: torch.Tensor, with_preact: bool = False):
        """The unit's output; with ``with_preact`` also the unshuffled pre-ReLU concatenation."""
        kept, branch = x[:, : x.shape[1] // 2], x[:, x.shape[1] // 2:]
        branch = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(branch)))))
        preact = self.bn3(self.conv3(branch))
        out = channel_shuffle(torch.cat([kept, F.relu(preact)], 1), 2)
        return (out, torch.cat([kept, preact], 1)) if with_preact else out


class DownUnit(nn.Module):
    """Stride 2 on both halves: left 3×3 depthwise → BN → 1×1 → BN → ReLU; right 1×1 → BN →
    ReLU → 3×3 depthwise → BN → 1×1 → BN → ReLU; concatenate, shuffle with 2 groups."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 2
        self.conv1, self.bn1 = dwconv3x3(in_channels, 2), nn.BatchNorm2d(in_channels)
        self.conv2, self.bn2 = conv1x1(in_channels, mid), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = conv1x1(in_channels, mid), nn.BatchNorm2d(mid)
        self.conv4, self.bn4 = dwconv3x3(mid, 2), nn.BatchNorm2d(mid)
        self.conv5, self.bn5 = conv1x1(mid, mid), nn.BatchNorm2d(mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.bn4(self.conv4(F.relu(self.bn3(self.conv3(x)))))
        right = F.relu(self.bn5(self.conv5(right)))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(ShuffleNet):
    """The V1 skeleton with V2 units and a 1×1 ``conv2`` + ``bn2`` + ReLU before the pooling."""

    def _make_stage(self, in_planes: int, width: int, num_units: int, first: bool) -> nn.Sequential:
        return nn.Sequential(DownUnit(in_planes, width), *[BasicUnit(width) for _ in range(num_units)])

    def _make_head(self, in_planes: int, num_classes: int) -> None:
        self.conv2 = conv1x1(in_planes, LAST_CHANNELS)
        self.bn2 = nn.BatchNorm2d(LAST_CHANNELS)
        self.linear = nn.Linear(LAST_CHANNELS, num_classes)

    def _stage_maps(self, x: torch.Tensor) -> StageMaps:
        for stage in self._layers():
            units = list(stage)
            for unit in units[:-1]:
                x = unit(x)
            x, preact = units[-1](x, with_preact=True)
            yield x, preact

    def _pre_pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn2(self.conv2(x)))


@CIFAR_MODELS.register("ShuffleV2")
def shufflev2(num_classes: int = 100) -> ShuffleNetV2:
    return ShuffleNetV2((116, 232, 464), (3, 7, 3), num_classes)
