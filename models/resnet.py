"""Residual networks (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016),
one implementation for every ResNet of the zoo.

mdistiller's CIFAR ``resnet.py`` (resnet8 … resnet32x4), its CIFAR ``resnetv2.py`` (ResNet18/50),
its ImageNet ``resnet.py`` (= torchvision's layout) and ONE's CIFAR ResNet all use the same two
blocks with the same key names, stride on the 3×3 conv and a 1×1 conv + BN projection shortcut
when the stride or the width changes; they differ only in the stem, the number of stages, the
name of the shortcut (``downsample`` / ``shortcut``) and of the classifier (``fc`` /
``linear``). Blocks return their sum before the final ReLU (see ``models.base.chain_preact``),
which is where the benchmark reads its pre-activation features.
"""
from typing import List, Optional, Sequence, Type

import torch
import torch.nn.functional as F
from torch import nn

from models.base import Stage, StageMaps, ZooModel, kaiming_init_, run_stages


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


class ResidualBlock(nn.Module):
    """``residual(x) + shortcut(x)``, without the final ReLU. Subclasses build their convs, then
    call ``_add_shortcut`` so the shortcut's keys come last, as in the references."""

    expansion = 1

    def _add_shortcut(self, in_planes: int, out_planes: int, stride: int, name: str) -> None:
        self._shortcut_name = name
        shortcut = nn.Identity()
        if stride != 1 or in_planes != out_planes:   # a 1×1 projection where the shape changes
            shortcut = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                                     nn.BatchNorm2d(out_planes))
        setattr(self, name, shortcut)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + getattr(self, self._shortcut_name)(x)


class BasicBlock(ResidualBlock):
    """3×3 conv → BN → ReLU → 3×3 conv → BN."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "downsample"):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self._add_shortcut(in_planes, planes, stride, shortcut)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return self.bn2(self.conv2(out))


class Bottleneck(ResidualBlock):
    """1×1 conv → BN → ReLU → 3×3 conv (stride) → BN → ReLU → 1×1 conv (×4 width) → BN."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "downsample"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self._add_shortcut(in_planes, planes * self.expansion, stride, shortcut)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        return self.bn3(self.conv3(out))


def make_stage(block: Type[ResidualBlock], in_planes: int, planes: int, num_blocks: int,
               stride: int, shortcut: str = "downsample") -> Stage:
    """``num_blocks`` blocks, the first one with ``stride`` (and the projection, if any)."""
    blocks = [block(in_planes, planes, stride, shortcut)]
    blocks += [block(planes * block.expansion, planes, 1, shortcut) for _ in range(num_blocks - 1)]
    return Stage(*blocks)


def add_trunk(model: nn.Module, block: Type[ResidualBlock], depths: Sequence[int], planes: Sequence[int],
              stem_width: int, imagenet_stem: bool, shortcut: str = "downsample") -> int:
    """``conv1``, ``bn1``, ``maxpool`` and stages ``layer1 … layerK`` (strides 1, 2, 2, ...) on
    ``model``: the CIFAR stem (3×3/1 conv, BN, ReLU; no pool) or torchvision's ImageNet stem
    (7×7/2 conv, BN, ReLU, 3×3/2 max-pool). Returns the last stage's output width."""
    model.conv1 = (nn.Conv2d(3, stem_width, 7, stride=2, padding=3, bias=False) if imagenet_stem
                   else conv3x3(3, stem_width))
    model.bn1 = nn.BatchNorm2d(stem_width)
    model.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if imagenet_stem else None
    in_planes = stem_width
    for i, (num_blocks, width) in enumerate(zip(depths, planes)):
        stage = make_stage(block, in_planes, width, num_blocks, 1 if i == 0 else 2, shortcut)
        setattr(model, f"layer{i + 1}", stage)
        in_planes = width * block.expansion
    return in_planes


def stem_and_stages(model: nn.Module, x: torch.Tensor, stages: Sequence[nn.Module]) -> StageMaps:
    """The stem's map (its ReLU output, which is also its "pre-activation" map), then those of
    ``stages``, the first fed the max-pooled stem map where there is a max-pool."""
    feat = F.relu(model.bn1(model.conv1(x)))
    yield feat, feat
    yield from run_stages(feat if model.maxpool is None else model.maxpool(feat), stages)


class ResNet(ZooModel):
    """Stem, stages ``layer1 … layerK`` (strides 1, 2, 2, ...), global pooling, classifier.

    ``imagenet_stem``: torchvision's stem instead of the CIFAR one (``add_trunk``). Either way
    the stem's "pre-activation" feature is its ReLU output:
    for the CIFAR stems the references say so; in mdistiller's ImageNet ResNet the in-place ReLU
    overwrites the saved BN output, so the reference data holds the ReLU output there too.
    """

    def __init__(self, block: Type[ResidualBlock], depths: Sequence[int], planes: Sequence[int],
                 stem_width: int, num_classes: int, *, imagenet_stem: bool = False,
                 shortcut: str = "downsample", classifier: str = "fc"):
        super().__init__(num_classes)
        in_planes = add_trunk(self, block, depths, planes, stem_width, imagenet_stem, shortcut)
        self.classifier_name = classifier
        setattr(self, classifier, nn.Linear(in_planes, num_classes))
        self.stage_channels = [stem_width] + [width * block.expansion for width in planes]
        kaiming_init_(self)

    def _layers(self) -> List[Stage]:
        return [getattr(self, f"layer{i}") for i in range(1, len(self.stage_channels))]

    def _bn_before_relu_names(self) -> List[Optional[str]]:
        """The stem's BN, then each stage's last block's last BN (before the addition)."""
        return ["bn1"] + [f"layer{i}.{len(layer) - 1}.{'bn3' if isinstance(layer[-1], Bottleneck) else 'bn2'}"
                          for i, layer in enumerate(self._layers(), start=1)]

    def _stages(self, x: torch.Tensor) -> StageMaps:
        return stem_and_stages(self, x, self._layers())
