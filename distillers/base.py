"""The distiller contract every method implements.

A ``Distiller`` owns the student and whatever learnable pieces its method adds (connectors,
regressors, gates); the trainer optimises ``distiller.parameters()`` and checkpoints
``checkpoint_state()``. The teacher is held outside the module tree on purpose: it is never in
``parameters()`` (so no optimizer can touch it), never in ``state_dict()`` (so it is never saved
with the student), always in eval mode and run without gradients. ``.to()``/``.double()`` still
move it, through ``_apply``.
"""
from contextlib import nullcontext
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

Losses = Dict[str, torch.Tensor]


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients: a teacher's BatchNorm statistics must never move."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


@torch.no_grad()
def probe_feature_shapes(model: nn.Module, input_shape) -> List[Tuple[int, ...]]:
    """``(C, H, W)`` of each map in ``model.forward_features(x)["feats"]`` for one zero image of
    ``input_shape``: what learnable connectors are sized from. Runs in eval mode (so no
    BatchNorm statistic moves) and gives the model back in the mode it had."""
    was_training = model.training
    first = next(model.parameters())
    model.eval()
    try:
        images = torch.zeros(1, *input_shape, device=first.device, dtype=first.dtype)
        feats = model.forward_features(images)["feats"]
    finally:
        model.train(was_training)
    return [tuple(f.shape[1:]) for f in feats]


def _as_float32(outputs, teacher_amp: Optional[str]):
    """A reduced-precision teacher's outputs (tensors, lists, dicts of them) back in float32, so
    the losses compute as with an fp32 teacher; unchanged when the step's context rules."""
    if teacher_amp in (None, "off"):
        return outputs
    if torch.is_tensor(outputs):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, dict):
        return {k: _as_float32(v, teacher_amp) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(_as_float32(v, teacher_amp) for v in outputs)
    return outputs


class Distiller(nn.Module):
    """Student (+ frozen teacher). Subclasses implement ``forward_train``."""

    needs_teacher = True

    def __init__(self, student: nn.Module, teacher: Optional[nn.Module] = None):
        super().__init__()
        self.student = student
        object.__setattr__(self, "teacher", freeze(teacher) if teacher is not None else None)
        self.teacher_cache = None   # distillers.teacher_cache.TeacherCache, set by the builder
        self.teacher_amp = None     # None: the step's autocast; "off" | "bf16" | "fp16" (teacher.amp)
        self._batch_views = None    # the views of the batch in forward_train, for the cache

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if self.teacher is not None:
            self.teacher._apply(fn, *args, **kwargs)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(self, images, targets=None, epoch: int = 1, views=None):
        """Training: ``(student_logits, {name: loss})``; eval: the student's logits only.

        ``views`` (the GPU loader's ``BatchViews`` of this batch) lets ``teacher_forward`` serve
        the teacher's logits from ``teacher_cache``; methods never see them."""
        if self.training:
            self._batch_views = views
            try:
                return self.forward_train(images, targets, epoch)
            finally:
                self._batch_views = None
        return self.forward_test(images)

    def forward_train(self, images, targets, epoch: int) -> Tuple[torch.Tensor, Losses]:
        raise NotImplementedError

    def forward_test(self, images):
        return self.student(images)

    @torch.no_grad()
    def teacher_forward(self, images, views=None) -> torch.Tensor:
        """The teacher's logits: looked up in the exact cache when there is one and the batch's
        views are known (``views`` or the batch in ``forward``), else one teacher forward."""
        views = views if views is not None else self._batch_views
        if self.teacher_cache is not None and views is not None:
            return self.teacher_cache(views)
        with self._teacher_precision():
            return _as_float32(self.teacher(images), self.teacher_amp)

    @torch.no_grad()
    def teacher_features(self, images) -> Dict[str, object]:
        """The teacher's ``forward_features`` (logits and stage maps), without gradients."""
        with self._teacher_precision():
            return _as_float32(self.teacher.forward_features(images), self.teacher_amp)

    def _teacher_precision(self):
        """``teacher_amp``: fp32 (``off``, even inside the step's autocast) or an autocast of
        the teacher alone; None leaves the step's context as it is."""
        if self.teacher_amp is None:
            return nullcontext()
        device_type = next(self.teacher.parameters()).device.type
        if self.teacher_amp == "off":
            return torch.autocast(device_type, enabled=False)
        dtype = torch.bfloat16 if self.teacher_amp == "bf16" else torch.float16
        return torch.autocast(device_type, dtype=dtype)

    # --- what the trainer saves and restores -------------------------------------------------
    def checkpoint_state(self) -> Dict[str, dict]:
        """``model``: the student alone, in the released checkpoints' format (loads into a bare
        student with ``strict=True``); ``distiller``: the method's own learnable modules."""
        extra = {k: v for k, v in self.state_dict().items() if not k.startswith("student.")}
        return {"model": self.student.state_dict(), "distiller": extra}

    def load_checkpoint_state(self, state: Dict[str, dict]) -> None:
        full = {f"student.{k}": v for k, v in state["model"].items()}
        full.update(state.get("distiller", {}))
        self.load_state_dict(full, strict=True)

    def describe(self) -> str:
        """The loss exactly as it is computed, for the start-up summary."""
        return type(self).__name__


class LogitDistiller(Distiller):
    """Shared pre-process of every logit-based loss: the optional Z-score standardization.

    Logit standardization (Sun et al., CVPR 2024, Eq. 9) replaces each side's logits by their
    Z-score; it is one switch here, so no loss is ever copied to gain it. As in that paper's code
    (``--logit-stand`` with ``--base-temp`` and ``--kd-weight``), the switch also selects the
    two numbers tuned for standardized logits: ``base_temperature`` replaces ``temperature`` and
    ``zscore_kd_weight`` replaces ``kd_weight``. So turning the switch on in a plain config gives
    the paper's recipe (e.g. KD: 0.1·CE + 9·KD at T=2), and ``self.kd_weight`` is the one in use.
    """

    def __init__(self, student, teacher, *, temperature: float, logit_standardization: bool,
                 base_temperature: float, kd_weight: float, zscore_kd_weight: float):
        super().__init__(student, teacher)
        self.temperature = float(temperature)
        self.logit_standardization = bool(logit_standardization)
        self.base_temperature = float(base_temperature)
        self.kd_weight = float(zscore_kd_weight if self.logit_standardization else kd_weight)

    def prepare_logits(self, student_logits, teacher_logits):
        """Return ``(student, teacher, temperature)`` as the loss must see them."""
        from distillers.losses import zscore
        if self.logit_standardization:
            return zscore(student_logits), zscore(teacher_logits), self.base_temperature
        return student_logits, teacher_logits, self.temperature

    def logits_and_loss_inputs(self, images):
        """The student's raw logits (for CE and the prediction) and ``(student, teacher, T)`` as
        the logit loss must see them, from one forward of each network."""
        logits = self.student(images)
        teacher_logits = self.teacher_forward(images).to(logits.dtype)
        return logits, self.prepare_logits(logits, teacher_logits)

    def describe_logits(self) -> str:
        if self.logit_standardization:
            return f"T={self.base_temperature:g}, z-score both sides"
        return f"T={self.temperature:g}"
