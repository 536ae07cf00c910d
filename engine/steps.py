"""One training step, read top to bottom: forward, losses, backward, optimizer, scaler, sums.

Every step has the signature ``step(batch, epoch) -> StepResult`` and holds what it needs (the
module to train, the optimizer, the GradScaler, the precision): the trainer calls it and never
hands it anything back. A change to the step (clipping, accumulation, an average of the
weights) is an edit of ``SgdStep.__call__``; the variants take the same signature:

``SgdStep`` (``solver.optimizer: sgd``): one backward of the summed losses, the fp16 GradScaler
around it, the gradients clipped by their global norm when ``solver.clip_grad_norm`` is set
(unscaled first, so the norm is the true one); under DDP the reducer averages the gradients over
processes while the backward runs.

``DotStep`` (``solver.optimizer: dot``) replaces it: DOT (Zhao et al., "DOT: A Distillation-
Oriented Trainer", ICCV 2023, Sec. 3), in the order of calls of mdistiller's DOT trainer: one
forward, then the distillation loss's backward (graph kept), ``step_kd``, the task loss's
backward, ``step``. The task loss is ``"loss_ce"``; the distillation loss is the sum of every
other loss the module returns, so a method with several terms (feature + logit) trusts them all
with the larger momentum. DDP's reducer allows one backward per forward, so the forward runs
under ``no_sync`` and each pass's gradients are averaged over processes by one all-reduce before
the optimizer takes them: N processes x B/N then step exactly as one process x B does. Under
fp16 both losses are scaled by the one GradScaler and each pass's gradients are unscaled and
inf-checked before the optimizer takes them; an overflow in either pass skips the whole step
(neither momentum buffer moves) and backs the scale off, as one overflowing backward does under
SGD.

``engine.graphed.GraphedStep`` wraps either of the eager steps it can capture
(``runtime.cuda_graph``).
"""
from contextlib import nullcontext
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Dict, Optional, Tuple

import torch

from engine.distributed import average_gradients
from engine.precision import Precision
from utils.errors import UserError

TASK_LOSS = "loss_ce"


@dataclass
class StepResult:
    """The method's named losses (its weights applied) and the batch's ``step_sums``."""
    losses: Dict[str, torch.Tensor]
    sums: torch.Tensor


def step_sums(logits: torch.Tensor, losses: Dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """One batch's float64 sums ``[loss·n, each named loss·n, correct predictions, n]`` (named by
    ``engine.trainer.RunningSums``), on the device: computed with the step (inside its CUDA graph
    under ``runtime.cuda_graph``), so the epoch's running sums cost one addition a step and one
    read per report."""
    n = targets.numel()
    values = torch.stack([sum(losses.values()).detach(), *[v.detach() for v in losses.values()]])
    correct = (logits.detach().argmax(dim=1) == targets).sum()
    count = torch.full((1,), float(n), dtype=torch.float64, device=values.device)
    return torch.cat([values.double() * n, correct.double()[None], count])


class SgdStep:
    """``module``: what trains (the method, maybe wrapped by DDP or torch.compile)."""

    def __init__(self, module, optimizer, scaler, precision: Precision,
                 clip_grad_norm: Optional[float] = None):
        self.module, self.optimizer, self.scaler = module, optimizer, scaler
        self.precision, self.clip_grad_norm = precision, clip_grad_norm

    def forward(self, batch, epoch: int):
        """``(logits, {name: loss})`` of the module, in the run's precision (engine/precision.py)."""
        with self.precision.autocast():
            return self.module(batch, epoch)

    def __call__(self, batch, epoch: int) -> StepResult:
        logits, losses = self.forward(batch, epoch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(sum(losses.values())).backward()
        if self.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)   # the true gradients' norm, not the scaled one
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return StepResult(losses, step_sums(logits, losses, batch.targets))


def split_losses(losses: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(task loss, distillation loss = the sum of every loss but the task loss). A method that
    declares ``separates_task_loss`` is refused before the run (launch/combination.py); this
    catches one whose losses do not match its declaration."""
    others = [name for name in losses if name != TASK_LOSS]
    if TASK_LOSS not in losses or not others:
        raise UserError(f"solver.optimizer=dot needs the task loss '{TASK_LOSS}' and at least one "
                        f"other (distillation) loss; this method returns {sorted(losses)}: use "
                        "solver.optimizer=sgd")
    return losses[TASK_LOSS], sum(losses[name] for name in others)


class DotStep(SgdStep):
    """``ddp``: the DistributedDataParallel wrapper inside ``module``, if any."""

    def __init__(self, module, optimizer, scaler, precision: Precision,
                 ddp: Optional[torch.nn.Module] = None):
        super().__init__(module, optimizer, scaler, precision)
        # the parameter groups under another identity: the GradScaler keeps one unscale/inf-check
        # record per optimizer object, so the distillation pass gets its own, and ``update``
        # backs the scale off when either pass overflowed
        self.ddp, self.distillation_pass = ddp, SimpleNamespace(param_groups=optimizer.param_groups)

    def __call__(self, batch, epoch: int) -> StepResult:
        params, scaler = self.optimizer.param_groups[0]["params"], self.scaler
        with self.ddp.no_sync() if self.ddp is not None else nullcontext():
            logits, losses = self.forward(batch, epoch)
            task, distillation = split_losses(losses)
            self.optimizer.zero_grad(set_to_none=True)
            scaler.scale(distillation).backward(retain_graph=True)
            average_gradients(params)
            scaler.unscale_(self.distillation_pass)
            distillation_finite = not scaler.is_enabled() or all_finite(p.grad for p in params)
            self.optimizer.step_kd()
            self.optimizer.zero_grad(set_to_none=True)
            scaler.scale(task).backward()
            average_gradients(params)
        if distillation_finite:
            scaler.step(self.optimizer)   # unscales the task pass; skips the step on its overflow
        scaler.update()
        return StepResult(losses, step_sums(logits, losses, batch.targets))


def all_finite(tensors) -> bool:
    """Whether every value of every tensor (None: no gradient) is finite, in one host read."""
    checks = [torch.isfinite(t).all() for t in tensors if t is not None]
    return bool(torch.stack(checks).all()) if checks else True
