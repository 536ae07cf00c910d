"""OFD (Heo et al., ICCV 2019, "A comprehensive overhaul of feature distillation"): the
connectors, the margins and the partial L2 distance, as mdistiller's ``OFD.py`` computes them
(tests/reference/BASELINES.md). OFD distils *pre-activation* maps: the teacher's map before
its ReLU, against the student's connected map.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from distillers.precision import full_precision


def build_ofd_connector(student_channels: int, teacher_channels: int,
                        kernel_size: int = 1) -> nn.Sequential:
    """Conv (no bias, 'same' padding) + BatchNorm from the student's channels to the teacher's;
    conv weights N(0, 2 / (k·k·out)), BatchNorm 1 / 0 as the reference initialises them.
    Keys ``0.weight``, ``1.*`` (the reference's ``connectors.connectors.<i>.*``)."""
    conv = nn.Conv2d(student_channels, teacher_channels, kernel_size=kernel_size, stride=1,
                     padding=(kernel_size - 1) // 2, bias=False)
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (kernel_size * kernel_size * teacher_channels)))
    return nn.Sequential(conv, nn.BatchNorm2d(teacher_channels))


def ofd_margin(bn_weight: torch.Tensor, bn_bias: torch.Tensor) -> torch.Tensor:
    """Per channel, the expectation of the teacher's negative pre-activations (Eq. 4): with the
    BatchNorm before the ReLU giving N(m, s²), s = |γ|, m = β,
    ``m − s·φ(m/s)/Φ(−m/s)``, or ``−3s`` where Φ(−m/s) ≤ 0.001; float64, shape ``[C]``."""
    s = bn_weight.detach().double().abs()
    m = bn_bias.detach().double()
    ratio = m / s
    cdf_negative = 0.5 * torch.special.erfc(ratio / math.sqrt(2.0))  # Φ(−m/s)
    expected = -s * torch.exp(-ratio.pow(2) / 2) / math.sqrt(2 * math.pi) / cdf_negative + m
    return torch.where(cdf_negative > 0.001, expected, -3 * s)


def ofd_stage_loss(connected_student: torch.Tensor, teacher_preact: torch.Tensor,
                   margin: torch.Tensor) -> torch.Tensor:
    """The partial L2 distance (Eq. 6) of one stage, summed over C, H, W, mean over the batch.
    The teacher's map is average-pooled to the student's size; with t the teacher, m the margin
    (``[C]``): (s − m)² where s > m ≥ t; (s − t)² where s > t, m < t ≤ 0; (s − t)² where t > 0."""
    target = F.adaptive_avg_pool2d(teacher_preact, connected_student.shape[-2:]).detach()
    m = margin.to(connected_student).view(1, -1, 1, 1)
    s, t = connected_student, target
    loss = ((s - m).pow(2) * ((s > m) & (t <= m)).to(s)
            + (s - t).pow(2) * ((s > t) & (t > m) & (t <= 0)).to(s)
            + (s - t).pow(2) * (t > 0).to(s))
    return loss.abs().mean(dim=0).sum()


@full_precision
def ofd_loss(connected_students, teacher_preacts, margins) -> torch.Tensor:
    """``Σ_i ofd_stage_loss_i / 2^(n−1−i)`` over n stages, shallowest first (the deepest stage
    weighs 1, each shallower one half the next)."""
    connected_students, teacher_preacts, margins = (list(connected_students), list(teacher_preacts),
                                                    list(margins))
    n = len(connected_students)
    if not n == len(teacher_preacts) == len(margins):
        raise ValueError(f"ofd_loss: {n} student maps, {len(teacher_preacts)} teacher maps and "
                         f"{len(margins)} margins; pass equally long lists")
    total = 0.0
    for i, (s, t, m) in enumerate(zip(connected_students, teacher_preacts, margins)):
        total = total + ofd_stage_loss(s, t, m) / 2 ** (n - i - 1)
    return total
