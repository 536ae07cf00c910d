"""How one training step turns a forward's named losses into a parameter update.

``SumStep`` (``solver.optimizer: sgd``): one backward of the summed losses, the fp16 GradScaler
around it; under DDP the reducer averages the gradients over processes while the backward runs.

``DotStep`` (``solver.optimizer: dot``): DOT (Zhao et al., "DOT: A Distillation-Oriented
Trainer", ICCV 2023, Sec. 3), in the order of calls of mdistiller's DOT trainer: one forward, then
the distillation loss's backward (graph kept), ``step_kd``, the task loss's backward, ``step``.
The task loss is ``"loss_ce"``; the distillation loss is the sum of every other loss the module
returns, so a method with several terms (feature + logit) trusts them all with the larger
momentum. DDP's reducer allows one backward per forward, so the forward runs under ``no_sync``
and each pass's gradients are averaged over processes by one all-reduce before the optimizer
takes them: N processes x B/N then step exactly as one process x B does. Under fp16 both losses
are scaled by the one GradScaler and each pass's gradients are unscaled and inf-checked before
the optimizer takes them; an overflow in either pass skips the whole step (neither momentum
buffer moves) and backs the scale off, as one overflowing backward does under SGD.
"""
from contextlib import nullcontext
from typing import Callable, Dict, Optional, Tuple

import torch

from engine.distributed import average_gradients
from utils.errors import UserError

TASK_LOSS = "loss_ce"
Forward = Callable[[], Tuple[torch.Tensor, Dict[str, torch.Tensor]]]


class SumStep:
    def __init__(self, optimizer, scaler):
        self.optimizer, self.scaler = optimizer, scaler

    def __call__(self, forward: Forward):
        logits, losses = forward()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(sum(losses.values())).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return logits, losses


def split_losses(losses: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(task loss, distillation loss = the sum of every loss but the task loss)."""
    others = [name for name in losses if name != TASK_LOSS]
    if TASK_LOSS not in losses or not others:
        raise UserError(f"solver.optimizer=dot needs the task loss '{TASK_LOSS}' and at least one "
                        f"other (distillation) loss; this method returns {sorted(losses)}: use "
                        "solver.optimizer=sgd")
    return losses[TASK_LOSS], sum(losses[name] for name in others)


class _DistillationPass:
    """The optimizer's parameter groups under another identity: the GradScaler keeps one
    unscale/inf-check record per optimizer object, so the distillation pass gets its own, and
    ``update`` backs the scale off when either pass overflowed."""

    def __init__(self, optimizer):
        self.param_groups = optimizer.param_groups


class DotStep:
    def __init__(self, optimizer, scaler, ddp: Optional[torch.nn.Module] = None):
        self.optimizer, self.scaler, self.ddp = optimizer, scaler, ddp
        self.distillation_pass = _DistillationPass(optimizer)

    def __call__(self, forward: Forward):
        params, scaler = self.optimizer.param_groups[0]["params"], self.scaler
        with self.ddp.no_sync() if self.ddp is not None else nullcontext():
            logits, losses = forward()
            task, distillation = split_losses(losses)
            self.optimizer.zero_grad(set_to_none=True)
            scaler.scale(distillation).backward(retain_graph=True)
            average_gradients(params)
            scaler.unscale_(self.distillation_pass)
            distillation_finite = not scaler.is_enabled() or all_finite(params)
            self.optimizer.step_kd()
            self.optimizer.zero_grad(set_to_none=True)
            scaler.scale(task).backward()
            average_gradients(params)
        if distillation_finite:
            scaler.step(self.optimizer)   # unscales the task pass; skips the step on its overflow
        scaler.update()
        return logits, losses


def all_finite(params) -> bool:
    """Whether every gradient is finite (one host read; fp16 only, as the GradScaler's step)."""
    grads = [p.grad for p in params if p.grad is not None]
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()) if grads else True


def build_step(solver, optimizer, scaler, ddp: Optional[torch.nn.Module] = None):
    """The step of ``solver.optimizer``; ``ddp``: the DistributedDataParallel wrapper, if any."""
    if getattr(solver, "optimizer", "sgd") == "dot":
        return DotStep(optimizer, scaler, ddp)
    return SumStep(optimizer, scaler)
