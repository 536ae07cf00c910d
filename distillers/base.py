"""The distiller contract every method implements.

A ``Distiller`` owns the student and whatever learnable pieces its method adds (connectors,
regressors, gates); the trainer optimises ``distiller.parameters()`` and checkpoints
``checkpoint_state()``. The teacher is a ``FrozenTeacher`` (distillers/teacher.py) held outside
the module tree on purpose: never in ``parameters()`` (so no optimizer can touch it), never in
``state_dict()`` (so it is never saved with the student); ``.to()``/``.double()`` still move it,
through ``_apply``. A method reads what it needs from the loader's ``Batch`` (images, targets,
the samples' dataset indices, their views) and asks the teacher for ``logits(batch)`` or
``features(images)``.
"""
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from distillers.losses import zscore
from distillers.teacher import FrozenTeacher
from utils.batch import Batch, as_batch
from utils.ranges import NonNegativeFloat, PositiveFloat

Losses = Dict[str, torch.Tensor]


@torch.no_grad()
def probe_shapes(model: nn.Module, input_shape) -> Tuple[List[Tuple[int, ...]], int]:
    """What learnable pieces are sized from, by one forward of a zero image of ``input_shape``:
    the ``(C, H, W)`` of each map of ``model.forward_features(x)["feats"]`` and the width of its
    ``pooled_feat`` (not always the last map's: MobileNetV2 pools a 1280-wide map after its last
    160-wide stage). Runs in eval mode (so no BatchNorm statistic moves) and gives the model back
    in the mode it had."""
    was_training = model.training
    first = next(model.parameters())
    model.eval()
    try:
        out = model.forward_features(torch.zeros(1, *input_shape, device=first.device, dtype=first.dtype))
    finally:
        model.train(was_training)
    return [tuple(f.shape[1:]) for f in out["feats"]], int(out["pooled_feat"].shape[1])


def parameter_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of ``model``'s weights: float32 in a run, also under autocast (where its
    activations are float16/bfloat16); float64 in the oracle tests."""
    return next(model.parameters()).dtype


class Distiller(nn.Module):
    """Student (+ frozen teacher). Subclasses implement ``forward_train(batch, epoch)``.

    A subclass's keyword-only constructor arguments are its config section (their defaults and
    type hints the schema); arguments named as the builder's context (``num_classes``,
    ``input_shape``, ``train_size``, ``train_targets``, ``seed``, ``student_feature_shapes``,
    ``teacher_feature_shapes``, ``student_pooled_dim``, ``teacher_pooled_dim``) are handed in
    by the builder instead (distillers/__init__.py)."""

    needs_teacher = True
    # whether the training batches must carry a strong view (``Batch.strong_images``): the
    # loaders draw one only for a method that says so (MLKD)
    needs_strong_view = False
    # whether the losses hold the task loss "loss_ce" and at least one other (distillation)
    # loss, which DOT (solver.optimizer=dot) steps with different momenta
    separates_task_loss = True
    # whether the whole step can be replayed as one CUDA graph (runtime.cuda_graph): no Python
    # state that changes per step, no read of the device inside the step; else say why
    captures_in_cuda_graph = True
    cuda_graph_refusal = ""

    def __init__(self, student: nn.Module, teacher: Optional[nn.Module] = None):
        super().__init__()
        self.student = student
        if teacher is not None and not isinstance(teacher, FrozenTeacher):
            teacher = FrozenTeacher(teacher)
        object.__setattr__(self, "teacher", teacher)

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if self.teacher is not None:
            self.teacher._apply(fn, *args, **kwargs)
        return self

    def place_like_student(self, module: nn.Module) -> nn.Module:
        """A learnable piece on the student's device and dtype (built after the student was)."""
        first = next(self.student.parameters())
        return module.to(device=first.device, dtype=first.dtype)

    def forward(self, batch, epoch: int = 1):
        """Training: ``(student_logits, {name: loss})``; eval: the student's logits only.

        ``batch`` is the loader's ``Batch``; bare images are taken as a batch of them (so a
        distiller in eval mode scores images as a plain model does)."""
        batch = as_batch(batch)
        if self.training:
            return self.forward_train(batch, epoch)
        return self.forward_test(batch.images)

    def forward_train(self, batch: Batch, epoch: int) -> Tuple[torch.Tensor, Losses]:
        raise NotImplementedError

    def forward_test(self, images):
        return self.student(images)

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

    @classmethod
    def smoke_section(cls, section: Dict[str, object], train_size: int) -> Dict[str, object]:
        """The method's resolved config section for a smoke run on ``train_size`` synthetic
        images: unchanged, unless a value is sized by the training set (CRD's negatives)."""
        return section


class LogitDistiller(Distiller):
    """Shared pre-process of every logit-based loss: the optional Z-score standardization.

    Logit standardization (Sun et al., CVPR 2024, Eq. 9) replaces each side's logits by their
    Z-score; it is one switch here, so no loss is ever copied to gain it. As in that paper's code
    (``--logit-stand`` with ``--base-temp`` and ``--kd-weight``), the switch also selects the
    two numbers tuned for standardized logits: ``base_temperature`` replaces ``temperature`` and
    ``zscore_kd_weight`` replaces ``kd_weight``. So turning the switch on in a plain config gives
    the paper's recipe (e.g. KD: 0.1·CE + 9·KD at T=2), and ``self.kd_weight`` is the one in use.

    The three switch arguments are declared here once, with the paper's defaults; a logit
    method passes them on as ``**standardization`` and redeclares one only to change its
    default (DIST's ``zscore_kd_weight``). The schema reads them from here.

    The step ``loss = ce_weight·CE + kd_weight·logit_loss(...)`` is written here once, from one
    forward of each network: a method implements ``logit_loss`` on the logits as its loss must
    see them (or its own ``forward_train`` when its step differs, as MLKD's two views). ``ce_weight`` and ``kd_weight`` have each method's own defaults, so the method
    declares them and passes them on.
    """

    def __init__(self, student, teacher, *, temperature: PositiveFloat, ce_weight: NonNegativeFloat,
                 kd_weight: NonNegativeFloat, logit_standardization: bool = False,
                 base_temperature: PositiveFloat = 2.0, zscore_kd_weight: NonNegativeFloat = 9.0):
        super().__init__(student, teacher)
        self.temperature, self.ce_weight = float(temperature), float(ce_weight)
        self.logit_standardization = bool(logit_standardization)
        self.base_temperature = float(base_temperature)
        self.kd_weight = float(zscore_kd_weight if self.logit_standardization else kd_weight)

    def logits_and_loss_inputs(self, batch: Batch):
        """The student's raw logits (for CE and the prediction) and ``(student, teacher, T)`` as
        the logit loss must see them, from one forward of each network (or the cache)."""
        logits = self.student(batch.images)
        teacher_logits = self.teacher.logits(batch).to(parameter_dtype(self.student))
        if self.logit_standardization:
            return logits, (zscore(logits), zscore(teacher_logits), self.base_temperature)
        return logits, (logits, teacher_logits, self.temperature)

    def logit_loss(self, student_in, teacher_in, temperature, batch: Batch, epoch: int):
        raise NotImplementedError

    def forward_train(self, batch: Batch, epoch: int) -> Tuple[torch.Tensor, Losses]:
        logits, (student_in, teacher_in, temperature) = self.logits_and_loss_inputs(batch)
        return logits, {
            "loss_ce": self.ce_weight * F.cross_entropy(logits, batch.targets),
            "loss_kd": self.kd_weight * self.logit_loss(student_in, teacher_in, temperature, batch, epoch),
        }

    def describe_logits(self) -> str:
        if self.logit_standardization:
            return f"T={self.base_temperature:g}, z-score both sides"
        return f"T={self.temperature:g}"


class FeatureDistiller(Distiller):
    """Shared shape of the feature- and relation-based methods: one forward of each network
    through ``forward_features`` and ``loss = ce_weight·CE + feat_weight·L_feat``.

    A method file implements ``feature_loss(student_out, teacher_out, batch, epoch)`` on the two
    ``forward_features`` dicts (``logits``, ``feats``, ``preact_feats``, ``pooled_feat``), so the
    maps it taps are written in one line of its own file, and ``formula`` (for ``describe``).
    ``ce_weight`` is declared here once (CE 1, as every baseline of the benchmark has it); a
    method declares ``feat_weight`` with its own default and passes the rest on as ``**weights``.
    The teacher's outputs reach the loss as the teacher computed them (never rounded down to
    the step's float16/bfloat16), and every loss computes in full precision
    (distillers/precision.py): a loss of your own gains that with ``@full_precision``.
    """

    formula = "L_feat"

    def __init__(self, student, teacher, *, feat_weight: NonNegativeFloat,
                 ce_weight: NonNegativeFloat = 1.0):
        super().__init__(student, teacher)
        self.ce_weight, self.feat_weight = float(ce_weight), float(feat_weight)

    def feature_loss(self, student_out, teacher_out, batch: Batch, epoch: int) -> torch.Tensor:
        raise NotImplementedError

    def forward_train(self, batch: Batch, epoch: int) -> Tuple[torch.Tensor, Losses]:
        # the teacher's maps in the precision it computed them in (the losses raise what they
        # use to float32 themselves: no map the loss does not tap is copied)
        student_out = self.student.forward_features(batch.images)
        teacher_out = self.teacher.features(batch.images)
        logits = student_out["logits"]
        return logits, {
            "loss_ce": self.ce_weight * F.cross_entropy(logits, batch.targets),
            "loss_feat": self.feat_weight * self.feature_loss(student_out, teacher_out, batch, epoch),
        }

    def describe(self) -> str:
        return f"loss = {self.ce_weight:g}·CE + {self.feat_weight:g}·{self.formula}"

