"""DOT, the distillation-oriented trainer (Zhao et al., ICCV 2023), as an optimizer.

SGD with two momenta: the task loss's gradient runs with momentum ``momentum`` (the recipe's
momentum − Δ) and the distillation loss's with ``momentum_kd`` (momentum + Δ), so the
distillation direction is trusted more. One step takes two backward passes::

    optimizer.zero_grad(set_to_none=True); loss_kd.backward(retain_graph=True); optimizer.step_kd()
    optimizer.zero_grad(set_to_none=True); loss_task.backward(); optimizer.step()

``step_kd`` takes the distillation gradients; ``step`` then applies, per parameter:
  task buffer  b ← μ_task·b + (g_task + wd·p)  (first step: b = g_task + wd·p), p ← p − lr·b;
  kd buffer    c ← μ_kd·c + g_kd                (first step: c = g_kd),           p ← p − lr·c.
A parameter reached by one loss only uses the mean momentum (μ_task + μ_kd)/2 for its buffer
and takes the weight decay with that loss's gradient. Equal step for step to the authors'
``DistillationOrientedTrainer`` (tests/reference/BASELINES.md); its state-dict buffers keep the
names ``momentum_buffer`` and ``momentum_kd_buffer``. One parameter group, no dampening.
"""
from typing import List, Optional

import torch
from torch.optim import Optimizer


class DistillationOrientedSGD(Optimizer):
    def __init__(self, params, lr: float, momentum: float = 0.0, momentum_kd: float = 0.0,
                 weight_decay: float = 0.0):
        for name, value in (("lr", lr), ("momentum", momentum), ("momentum_kd", momentum_kd),
                            ("weight_decay", weight_decay)):
            if value < 0:
                raise ValueError(f"DistillationOrientedSGD: {name} must be ≥ 0, got {value}")
        super().__init__(params, dict(lr=lr, momentum=momentum, momentum_kd=momentum_kd,
                                      weight_decay=weight_decay))
        if len(self.param_groups) != 1:
            raise ValueError("DistillationOrientedSGD takes one parameter group")
        self._kd_grads: List[torch.Tensor] = []
        self._kd_params: List[torch.Tensor] = []

    @torch.no_grad()
    def step_kd(self) -> None:
        """Take the distillation loss's gradients (they are moved out of ``p.grad``, so the task
        loss's backward starts from none)."""
        self._kd_params, self._kd_grads = [], []
        for p in self.param_groups[0]["params"]:
            if p.grad is not None:
                self._kd_params.append(p)
                self._kd_grads.append(p.grad)
                p.grad = None

    @staticmethod
    def _accumulate(state: dict, key: str, grad: torch.Tensor, momentum: float) -> torch.Tensor:
        buffer: Optional[torch.Tensor] = state.get(key)
        if buffer is None:
            buffer = state[key] = grad.detach().clone()
        else:
            buffer.mul_(momentum).add_(grad)
        return buffer

    @torch.no_grad()
    def step(self, closure=None):
        """Apply the task gradients now in ``p.grad`` and the distillation ones of ``step_kd``."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if len(self.param_groups) != 1:
            raise ValueError("DistillationOrientedSGD takes one parameter group")
        group = self.param_groups[0]
        lr, wd = group["lr"], group["weight_decay"]
        mu_task, mu_kd = group["momentum"], group["momentum_kd"]
        mu_mean = (mu_task + mu_kd) / 2.0
        kd_ids = {id(p) for p in self._kd_params}
        task_params = [p for p in group["params"] if p.grad is not None]
        task_ids = {id(p) for p in task_params}
        for p in task_params:
            grad = p.grad.add(p, alpha=wd) if wd != 0 else p.grad
            if mu_task != 0:
                grad = self._accumulate(self.state[p], "momentum_buffer", grad,
                                        mu_task if id(p) in kd_ids else mu_mean)
            p.add_(grad, alpha=-lr)
        for p, grad in zip(self._kd_params, self._kd_grads):
            state = self.state[p]
            if "momentum_kd_buffer" in state and id(p) not in task_ids and wd != 0:
                grad = grad.add(p, alpha=wd)
            buffer = self._accumulate(state, "momentum_kd_buffer", grad,
                                      mu_kd if id(p) in task_ids else mu_mean)
            p.add_(buffer, alpha=-lr)
        self._kd_params, self._kd_grads = [], []
        return loss
