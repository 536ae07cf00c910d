"""CTKD (Li et al., AAAI 2023, "Curriculum Temperature for Knowledge Distillation"): a learnable
temperature trained *against* the student through a gradient reversal layer, the reversal's
strength rising over the first epochs by a curriculum. The KD loss itself is ``losses.kd_loss``
at that temperature (on Z-scored logits for CTKD + Z-score). Checked against the code of the
logit-standardization paper's CTKD runs (sunshangquan/logit-standardization-KD f6e5aa5,
``CTKD/``; tests/reference/LS_ORACLES.md).

Z-score: ours is ``kd_loss(zscore(s), zscore(t), T)`` when a method asks for it, which is the
original's ``DistillKL_logit_stand``; its plain ``DistillKL`` is ``kd_loss(s, t, T)``. Beware the
original's switch is inverted: its ``train_student.py`` builds ``DistillKL_logit_stand`` when
``--logit_stand`` is *absent* (upstream issue #15).

Sign convention: here a *strength* λ ≥ 0 reverses the gradient (it is multiplied by −λ), as in
the paper. The original passes the curriculum's value itself as the gradient's factor, with
``--decay_max 0 --decay_min -1``: its factor −λ is our strength λ rising from 0 to 1.
"""
import math

import torch
from torch import nn


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, strength):
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.strength * grad, None


def reverse_gradient(x: torch.Tensor, strength: float) -> torch.Tensor:
    """Gradient reversal (Ganin & Lempitsky, ICML 2015): the identity forward, the gradient
    multiplied by ``−strength`` backward, so what follows minimises while ``x`` maximises."""
    return _ReverseGradient.apply(x, float(strength))


class GlobalTemperature(nn.Module):
    """CTKD's global temperature ``t_start + t_end·sigmoid(θ)``, θ one learnable scalar (1 at
    the start, as the original) read through ``reverse_gradient``: the student's loss pushes θ
    towards the temperature that makes distillation *harder*."""

    def __init__(self, t_start: float = 1.0, t_end: float = 20.0, initial_theta: float = 1.0):
        super().__init__()
        self.t_start, self.t_end = float(t_start), float(t_end)
        self.theta = nn.Parameter(torch.tensor(float(initial_theta)))

    def forward(self, strength: float) -> torch.Tensor:
        """The temperature (a 0-dim tensor) whose gradient reaches θ reversed with ``strength``."""
        return self.t_start + self.t_end * torch.sigmoid(reverse_gradient(self.theta, strength))


def _clamped_epoch(epoch: float, loops: float) -> float:
    if loops <= 0:
        raise ValueError(f"a curriculum needs a positive number of epochs (loops); got {loops}")
    return min(max(float(epoch), 0.0), float(loops))


def cosine_curriculum(epoch: float, loops: float, start: float = 0.0, end: float = 1.0) -> float:
    """CTKD's cosine curriculum of the reversal strength: ``end + (start − end)·(1 + cos(π·i/
    loops))/2`` with i the epoch clamped to [0, loops], from ``start`` to ``end`` in ``loops``
    epochs, then constant (the original's ``CosineDecay`` with max −start, min −end)."""
    i = _clamped_epoch(epoch, loops)
    return end + (start - end) * (1.0 + math.cos(i * math.pi / loops)) / 2.0


def linear_curriculum(epoch: float, loops: float, start: float = 0.0, end: float = 1.0) -> float:
    """A linear ramp of the reversal strength from ``start`` to ``end`` over ``loops`` epochs,
    then constant. The original's ``LinearDecay`` equals it for ``start`` 0 up to epoch
    loops − 1 only: it adds no start value and stops one step short of ``end``."""
    i = _clamped_epoch(epoch, loops)
    return start + (end - start) * i / loops
