"""Optimizer and learning-rate schedule of the benchmark recipes.

The schedule is a pure function of the (0-based) global step, so resuming at any step gives the
same learning rate as the uninterrupted run: multi-step decay applied per epoch
(lr · gamma^(number of milestones m with epoch > m), 1-based epochs as mdistiller counts them)
and an optional linear warm-up over the first ``warmup_epochs``, per step.
"""
import bisect

import torch


def lr_factor(step: int, steps_per_epoch: int, milestones, gamma: float, warmup_epochs: int) -> float:
    epoch = step // steps_per_epoch + 1                       # 1-based, as the recipes count
    factor = gamma ** bisect.bisect_left(list(milestones), epoch)   # milestones m with epoch > m
    warmup_steps = warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        factor *= (step + 1) / warmup_steps
    return factor


def build_optimizer(params, solver, fused: bool = False) -> torch.optim.Optimizer:
    kwargs = dict(lr=solver.lr, momentum=solver.momentum, weight_decay=solver.weight_decay,
                  nesterov=solver.nesterov)
    if fused:
        kwargs["fused"] = True
    return torch.optim.SGD(params, **kwargs)


def build_scheduler(optimizer, solver, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps_per_epoch, solver.milestones, solver.gamma,
                                          solver.warmup_epochs))
