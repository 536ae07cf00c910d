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
from typing import Dict, Optional

import torch
from torch import nn

from distillers.precision import map_floating
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
        """The network's logits, as ``model(images)`` (the teacher check evaluates it as a model;
        gradients as the caller's context says)."""
        return self.model(images)

    @torch.no_grad()
    def logits(self, batch: Batch) -> torch.Tensor:
        """The teacher's logits for ``batch``: from the exact cache when there is one and the
        batch carries its views, else one forward in the teacher's precision."""
        if self.cache is not None and batch.views is not None:
            return self.cache(batch.views)
        return self._in_its_precision(self.model, batch.images)

    @torch.no_grad()
    def features(self, images) -> Dict[str, object]:
        """The network's ``forward_features`` (logits and stage maps), without gradients."""
        return self._in_its_precision(self.model.forward_features, images)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """The teacher's classifier on given features, gradients flowing to them (SRRL): the
        head's own parameters stay frozen."""
        return self.model.forward_head(features)

    def _in_its_precision(self, forward, images):
        """``forward(images)`` under the step's autocast (``amp`` None), without autocast
        ("off"), or autocast to bf16/fp16 with the outputs handed back in float32."""
        if self.amp is None:
            return forward(images)
        device_type = next(self.model.parameters()).device.type
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)
        with torch.autocast(device_type, dtype=dtype, enabled=self.amp != "off"):
            outputs = forward(images)
        return outputs if self.amp == "off" else map_floating(outputs, torch.Tensor.float)
