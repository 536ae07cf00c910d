"""Where a run's numeric precision is decided: the one place a method author looks.

``runtime.amp`` (``off``, ``bf16``, ``fp16``) acts through ``Precision`` alone:
- the networks' forward (student, teacher, a method's connectors) runs under ``autocast`` in
  the training step (engine/steps.py) and in evaluation (engine/evaluate.py);
- under fp16 the loss is scaled by ``grad_scaler`` before backward and the gradients are
  unscaled (and inf-checked) before the optimizer takes them; bf16 and fp32 need no scaling;
- every distillation loss computes in float32 whatever the autocast (distillers/precision.py,
  ``full_precision``: a method's own loss gains it by that decorator);
- the teacher may keep its own precision (``teacher.amp``, distillers/teacher.py).
"""
from contextlib import nullcontext
from dataclasses import dataclass

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """``amp`` on ``device_type``; ``cache=False`` recasts the weights at every use (needed
    inside a CUDA graph, where autocast's cached cast would not follow the weights' updates)."""
    device_type: str
    amp: str = "off"
    cache: bool = True

    def autocast(self):
        if self.amp == "off":
            return nullcontext()
        return torch.autocast(self.device_type, dtype=AMP_DTYPES[self.amp], cache_enabled=self.cache)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Enabled under fp16 only (a disabled scaler passes the loss and the step through)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.amp == "fp16")
