"""ReviewKD (Chen et al., CVPR 2021, "Distilling knowledge via knowledge review"): the
attention-based fusion (ABF) modules that let each student level review the deeper ones, and
the hierarchical context loss (HCL), as mdistiller's ``ReviewKD.py`` computes them
(tests/reference/BASELINES.md).
"""
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distillers.losses import paired_maps
from distillers.precision import full_precision


class AttentionFusion(nn.Module):
    """One ABF: a 1×1 conv + BN brings the student map to ``mid_channels``; when ``fuse``, it is
    mixed with the (nearest-upsampled) fused map of the deeper level by two per-pixel weights
    from a 1×1 conv + sigmoid; a 3×3 conv + BN then gives the map matched with the teacher's.
    Keys ``conv1.*``, ``conv2.*``, ``att_conv.0.*`` as the reference's ``ABF``."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False),
                                   nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
                                   nn.BatchNorm2d(out_channels))
        self.att_conv = (nn.Sequential(nn.Conv2d(mid_channels * 2, 2, kernel_size=1), nn.Sigmoid())
                         if fuse else None)
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: torch.Tensor, deeper: torch.Tensor = None, out_size: int = None):
        """``(output for the loss, fused map handed to the next shallower level)``."""
        n, _, h, w = x.shape
        x = self.conv1(x)
        if self.att_conv is not None:
            deeper = F.interpolate(deeper, (h, w), mode="nearest")
            weights = self.att_conv(torch.cat([x, deeper], dim=1))
            x = x * weights[:, 0].view(n, 1, h, w) + deeper * weights[:, 1].view(n, 1, h, w)
        if out_size is not None and x.shape[-1] != out_size:
            x = F.interpolate(x, (out_size, out_size), mode="nearest")
        return self.conv2(x), x


class ReviewFusion(nn.Module):
    """The ABFs of all levels, deepest first (``abfs.0`` reviews the pooled feature), as the
    reference's ``abfs``. Level i maps ``student_channels[i]`` to ``teacher_channels[i]``
    (shallowest first, the pooled feature last) through ``mid_channels``, by default the
    reference's ``min(512, student_channels[-1])`` (the width of the student's pooled feature)."""

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int],
                 mid_channels: Optional[int] = None):
        super().__init__()
        mid_channels = min(512, student_channels[-1]) if mid_channels is None else mid_channels
        if len(student_channels) != len(teacher_channels):
            raise ValueError(f"ReviewFusion: {len(student_channels)} student levels and "
                             f"{len(teacher_channels)} teacher levels")
        last = len(student_channels) - 1
        levels = [AttentionFusion(c_s, mid_channels, c_t, fuse=i < last)
                  for i, (c_s, c_t) in enumerate(zip(student_channels, teacher_channels))]
        self.abfs = nn.ModuleList(levels[::-1])

    def forward(self, student_maps: Sequence[torch.Tensor], out_sizes: Sequence[int]) -> List[torch.Tensor]:
        """Student maps shallowest first (the pooled feature as a ``1×1`` map last) → the maps
        to compare with the teacher's, shallowest first, each resized to ``out_sizes[i]``."""
        if not len(student_maps) == len(out_sizes) == len(self.abfs):
            raise ValueError(f"ReviewFusion: {len(self.abfs)} levels, got {len(student_maps)} "
                             f"student maps and {len(out_sizes)} output sizes")
        maps, sizes = list(student_maps)[::-1], list(out_sizes)[::-1]
        out, fused = self.abfs[0](maps[0], out_size=sizes[0])
        results = [out]
        for x, abf, size in zip(maps[1:], self.abfs[1:], sizes[1:]):
            out, fused = abf(x, fused, size)
            results.insert(0, out)
        return results


@full_precision
def hcl_loss(student_maps: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Hierarchical context loss: per level, the MSE of the maps and of their average-pooled
    4×4, 2×2, 1×1 versions (those smaller than the map), weighted 1, ½, ¼, ⅛ and divided by
    the sum of the weights used; summed over levels."""
    total = 0.0
    for f_s, f_t in paired_maps("hcl_loss", student_maps, teacher_maps):
        height = f_s.shape[2]
        loss, weight, weights = F.mse_loss(f_s, f_t), 1.0, 1.0
        for size in (4, 2, 1):
            if size >= height:
                continue
            weight /= 2.0
            loss = loss + F.mse_loss(F.adaptive_avg_pool2d(f_s, size), F.adaptive_avg_pool2d(f_t, size)) * weight
            weights += weight
        total = total + loss / weights
    return total
