"""Optimizer and learning-rate schedule of the benchmark recipes, built from ``solver``.

``solver.optimizer``: ``sgd`` (torch's SGD, fused on CUDA) or ``dot``, DOT's two-momentum SGD
(engine/dot.py) with momentum - dot_delta for the task loss and momentum + dot_delta for the
distillation loss, as mdistiller's DOT trainer builds it from SOLVER.MOMENTUM and SOLVER.DOT.DELTA.

The schedule is a pure function of the (0-based) global step, so resuming at any step gives the
same learning rate as the uninterrupted run: multi-step decay applied per epoch
(lr · gamma^(number of milestones m with epoch > m), 1-based epochs as mdistiller counts them)
and an optional linear warm-up over the first ``warmup_epochs``, per step.
"""
import bisect
from typing import List

import torch

from engine.dot import DistillationOrientedSGD


def lr_factor(step: int, steps_per_epoch: int, milestones, gamma: float, warmup_epochs: int) -> float:
    epoch = step // steps_per_epoch + 1                       # 1-based, as the recipes count
    factor = gamma ** bisect.bisect_left(list(milestones), epoch)   # milestones m with epoch > m
    warmup_steps = warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        factor *= (step + 1) / warmup_steps
    return factor


def dot_momenta(solver):
    """(task momentum, distillation momentum) of a DOT run."""
    return solver.momentum - solver.dot_delta, solver.momentum + solver.dot_delta


def describe_schedule(solver, steps_per_epoch: int) -> List[str]:
    """The optimizer, the lr of each epoch range and the number of optimizer steps, as the run
    will use them (the start-up summary)."""
    decay = f"weight decay {solver.weight_decay:g}"
    if solver.optimizer == "dot":
        task, kd = dot_momenta(solver)
        optimizer = f"DOT (momentum {task:.4g} task / {kd:.4g} distillation, {decay})"
    else:
        nesterov = ", Nesterov" if solver.nesterov else ""
        optimizer = f"SGD (momentum {solver.momentum:g}{nesterov}, {decay})"
    bounds = [0, *[m for m in solver.milestones if m < solver.epochs], solver.epochs]
    ranges = [f"{solver.lr * solver.gamma ** i:.4g} (epochs {lo + 1}-{hi})"
              for i, (lo, hi) in enumerate(zip(bounds, bounds[1:])) if hi > lo]
    warmup = f", linear warm-up over {solver.warmup_epochs} epochs" if solver.warmup_epochs else ""
    steps = solver.epochs * steps_per_epoch
    return [f"optimizer: {optimizer}", f"lr = {', '.join(ranges)}{warmup}",
            f"{solver.epochs} epochs x {steps_per_epoch} steps = {steps} optimizer steps"]


def build_optimizer(params, solver, fused: bool = False) -> torch.optim.Optimizer:
    """``fused`` (CUDA) applies to SGD only; DOT's step is its own."""
    if solver.optimizer == "dot":
        task, kd = dot_momenta(solver)
        return DistillationOrientedSGD(params, lr=solver.lr, momentum=task, momentum_kd=kd,
                                       weight_decay=solver.weight_decay)
    return torch.optim.SGD(params, lr=solver.lr, momentum=solver.momentum, nesterov=solver.nesterov,
                           weight_decay=solver.weight_decay, fused=fused or None)


def build_scheduler(optimizer, solver, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps_per_epoch, solver.milestones, solver.gamma,
                                          solver.warmup_epochs))
