"""Wide residual networks WRN-d-k (Zagoruyko & Komodakis, BMVC 2016), as in mdistiller's
``models/cifar/wrn.py``: depth 6n + 4, widths [16, 16k, 32k, 64k], pre-activation blocks
(BN → ReLU → 3×3 conv → BN → ReLU → 3×3 conv) under ``block{1,2,3}.layer.{i}``, a bare 3×3 stem
conv, final BN + ReLU + pooling + ``fc``. No dropout (the benchmark's rate is 0).

wrn_16_1/2 and wrn_40_1/2 are the benchmark's; wrn_40_4, wrn_16_4, wrn_16_10 and wrn_10_10 are
SRRL's (Yang et al., ICLR 2021: 8.97M, 2.77M, 17.2M and 7.49M parameters at 100 classes).
"""
from collections import OrderedDict
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from models.base import CIFAR_MODELS, StageMaps, ZooModel, kaiming_init_, register_variants


class WideBlock(nn.Module):
    """Pre-activation block. When the width changes, BN + ReLU of the input feeds both the conv
    path and the 1×1 ``convShortcut``; otherwise the shortcut is the raw input."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, padding=1, bias=False)
        self.convShortcut = (nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)
                             if in_planes != out_planes else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        shortcut = x if self.convShortcut is None else self.convShortcut(activated)
        out = self.conv2(F.relu(self.bn2(self.conv1(activated)), inplace=True))
        return shortcut + out


def wide_stage(num_blocks: int, in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    """``num_blocks`` blocks under ``.layer`` (the reference's ``NetworkBlock`` key layout)."""
    return nn.Sequential(OrderedDict(layer=nn.Sequential(*[
        WideBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1)
        for i in range(num_blocks)])))


def peek_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``bn(x)`` without updating ``bn``'s running statistics: reading a feature must not
    change the model (the reference's forward updates them a second time while training)."""
    if not bn.training:
        return bn(x)
    return F.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)


class WideResNet(ZooModel):
    """Features: the stem conv's output, then the three stage outputs (pre-activation blocks
    end without a ReLU). Their pre-activation features are the next BatchNorm applied to them
    (``block2.layer.0.bn1``, ``block3.layer.0.bn1``, ``bn1``), BN without ReLU, as the reference
    computes them."""

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 100):
        super().__init__(num_classes)
        if (depth - 4) % 6:
            raise ValueError(f"a WRN has depth 6n + 4, not {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        for i in (1, 2, 3):
            setattr(self, f"block{i}", wide_stage(n, widths[i - 1], widths[i], 1 if i == 1 else 2))
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        self.stage_channels = widths
        kaiming_init_(self)
        nn.init.zeros_(self.fc.bias)

    def _stages(self, x: torch.Tensor) -> StageMaps:
        x = self.conv1(x)
        yield x, x
        for stage in (self.block1, self.block2, self.block3):
            x = stage(x)
            yield x, None

    def _preact_feats(self, feats: List[torch.Tensor], preacts: List) -> Optional[List[torch.Tensor]]:
        next_bns = (self.block2.layer[0].bn1, self.block3.layer[0].bn1, self.bn1)
        return [feats[0]] + [peek_batch_norm(bn, feat) for bn, feat in zip(next_bns, feats[1:])]

    def _pre_pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn1(x))

    def _bn_before_relu_names(self) -> List[Optional[str]]:
        """The bare stem has none; a stage's output is read by the next BN (pre-activation)."""
        return [None, "block2.layer.0.bn1", "block3.layer.0.bn1", "bn1"]


# the benchmark's, then SRRL's
register_variants(CIFAR_MODELS, WideResNet, {f"wrn_{depth}_{k}": (depth, k) for depth, k in (
    (16, 1), (16, 2), (40, 1), (40, 2), (40, 4), (16, 4), (16, 10), (10, 10))})
