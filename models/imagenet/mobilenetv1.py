"""MobileNetV1 (Howard et al., 2017, Table 1), as mdistiller's ``models/imagenet/mobilenetv1.py``
(the benchmark's ImageNet student): ``model.0`` a 3×3/2 conv of 32 + BN + ReLU, ``model.1 …
model.13`` depthwise-separable units (3×3 depthwise + BN + ReLU, 1×1 pointwise + BN + ReLU,
keys ``model.{i}.{0,1,3,4}``), global pooling, ``fc``. Default PyTorch initialisation, as the
reference. Features: the outputs of units 3, 5, 11 and 13 (56, 28, 14, 7 pixels), before and
after their ReLU. The reference always has 1000 classes; here ``num_classes`` is honoured.
"""
from functools import partial
from typing import List, Optional

import torch
from torch import nn

from models.base import IMAGENET_MODELS, StageMaps, ZooModel, chain_preact, run_stages

# (output channels, stride) of units 1 … 13
UNITS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
FEATURE_UNITS = ((0, 4), (4, 6), (6, 12), (12, 14))  # unit ranges ending at each stage map


def separable_unit(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Depthwise + pointwise, returned before the last ReLU (applied by ``chain_preact``)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))


class MobileNetV1(ZooModel):
    def __init__(self, num_classes: int = 1000):
        super().__init__(num_classes)
        in_channels = [32] + [out_channels for out_channels, _ in UNITS]
        self.model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32)),
                                   *[separable_unit(c_in, *unit) for c_in, unit in zip(in_channels, UNITS)])
        self.fc = nn.Linear(in_channels[-1], num_classes)
        self.stage_channels = [UNITS[stop - 2][0] for _, stop in FEATURE_UNITS]

    def _stages(self, x: torch.Tensor) -> StageMaps:
        units = list(self.model)
        yield from run_stages(x, [partial(chain_preact, units[start:stop]) for start, stop in FEATURE_UNITS])

    def _bn_before_relu_names(self) -> List[Optional[str]]:
        """The pointwise BN of the last unit of each stage."""
        return [f"model.{stop - 1}.4" for _, stop in FEATURE_UNITS]


@IMAGENET_MODELS.register("MobileNetV1")
def mobilenetv1(num_classes: int = 1000) -> MobileNetV1:
    return MobileNetV1(num_classes)
