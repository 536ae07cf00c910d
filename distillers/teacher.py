"""The frozen teacher a method asks for answers: one object owns everything done to it.

Frozen means: eval mode for good (its BatchNorm statistics never move), no parameter that
requires a gradient, answers computed without autograd. Its precision is its own
(``teacher.amp``): ``None`` follows the step's autocast; ``"off"`` keeps it in float32 even
inside a reduced-precision step; ``"bf16"``/``"fp16"`` autocast the teacher alone, and its
outputs are handed back in float32 so the losses compute as with a float32 teacher. When an
exact cache of its logits over the training views is attached (distillers/teacher_cache.py)
and a batch carries its views, ``logits`` looks the answer up instead of running the network.

A ``Distiller`` holds it outside its module tree, so it is never optimised nor saved with the
student; ``.to()`` on the distiller still moves it.
"""
from contextlib import nullcontext
from typing import Dict, Optional

import torch
from torch import nn

from distillers.precision import cast_floating
from utils.batch import Batch


class FrozenTeacher(nn.Module):
    """A pretrained network, frozen; ``amp`` and ``cache`` as the module docstring says."""

    def __init__(self, model: nn.Module, amp: Optional[str] = None, cache=None):
        super().__init__()
        self.model = model.eval().requires_grad_(False)   # its BatchNorm statistics never move
        self.amp = amp       # None | "off" | "bf16" | "fp16" (config teacher.amp; None = "auto")
        self.cache = cache   # a TeacherCache, attached by the builder when the loader has views
        self.eval()

    def train(self, mode: bool = True):
        """Always eval mode, whatever the caller asks."""
        return super().train(False)

    def forward(self, images):
        """The network's logits, as ``model(images)`` (gradients as the caller's context says)."""
        return self.model(images)

    @torch.no_grad()
    def logits(self, batch: Batch) -> torch.Tensor:
        """The teacher's logits for ``batch``: from the exact cache when there is one and the
        batch carries its views, else one forward in the teacher's precision."""
        if self.cache is not None and batch.views is not None:
            return self.cache(batch.views)
        with self._precision():
            return self._handed_back(self.model(batch.images))

    @torch.no_grad()
    def features(self, images) -> Dict[str, object]:
        """The network's ``forward_features`` (logits and stage maps), without gradients."""
        with self._precision():
            return self._handed_back(self.model.forward_features(images))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """The teacher's classifier on given features, gradients flowing to them (SRRL): the
        head's own parameters stay frozen."""
        return self.model.forward_head(features)

    def _handed_back(self, outputs):
        """A reduced-precision teacher's outputs in float32; unchanged when the step rules."""
        return outputs if self.amp in (None, "off") else cast_floating(outputs, torch.float32)

    def _precision(self):
        if self.amp is None:
            return nullcontext()
        device_type = next(self.model.parameters()).device.type
        if self.amp == "off":
            return torch.autocast(device_type, enabled=False)
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(device_type, dtype=dtype)
