"""VID (Ahn et al., CVPR 2019, "Variational information distillation"): the regressor that
predicts the teacher's map from the student's, the per-channel variances, and the loss, as
mdistiller's ``VID.py`` computes them (tests/reference/BASELINES.md)."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from distillers.precision import full_precision


def build_vid_regressor(student_channels: int, teacher_channels: int) -> nn.Sequential:
    """The mean predictor μ(f_s): 1×1 conv (no bias) → ReLU → 1×1 → ReLU → 1×1, hidden width the
    teacher's channels; state-dict keys ``0.weight``, ``2.weight``, ``4.weight`` as the reference."""
    def conv1x1(c_in: int, c_out: int) -> nn.Conv2d:
        return nn.Conv2d(c_in, c_out, kernel_size=1, bias=False)
    return nn.Sequential(conv1x1(student_channels, teacher_channels), nn.ReLU(),
                         conv1x1(teacher_channels, teacher_channels), nn.ReLU(),
                         conv1x1(teacher_channels, teacher_channels))


def vid_initial_log_scale(teacher_channels: int, init_pred_var: float = 5.0,
                          eps: float = 1e-5) -> torch.Tensor:
    """The per-channel log-scale α with ``softplus(α) + eps = init_pred_var`` at the start."""
    return torch.full((teacher_channels,), math.log(math.expm1(init_pred_var - eps)))


@full_precision
def vid_loss(predicted_mean: torch.Tensor, teacher_map: torch.Tensor, log_scale: torch.Tensor,
             eps: float = 1e-5) -> torch.Tensor:
    """Gaussian negative log-likelihood of the teacher map (Eq. 6 without the constant):
    ``mean_{n,c,h,w} ½[(μ − t)² / σ²_c + log σ²_c]`` with ``σ²_c = softplus(α_c) + eps``.
    Both maps must already have the same size (``losses.pool_to_common_size`` before μ)."""
    if predicted_mean.shape != teacher_map.shape:
        raise ValueError(f"vid_loss: predicted mean {tuple(predicted_mean.shape)} and teacher map "
                         f"{tuple(teacher_map.shape)} must agree in shape")
    variance = (F.softplus(log_scale) + eps).to(predicted_mean).view(1, -1, 1, 1)
    return (0.5 * ((predicted_mean - teacher_map).pow(2) / variance + variance.log())).mean()
