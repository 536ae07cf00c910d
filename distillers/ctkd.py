"""Curriculum Temperature KD (Li et al., AAAI 2023), optionally on Z-score logits (Sun et al.,
CVPR 2024): KD at a learnable global temperature trained against the student.

The temperature is ``t_start + t_end·sigmoid(θ)``, θ one learnable scalar (``ctkd_losses.
GlobalTemperature``) read through a gradient reversal of strength λ, λ following a curriculum
over epochs (cosine, as every published row, or linear) from ``strength_start`` to
``strength_end`` in ``curriculum_epochs`` epochs. θ is a module of the distiller, so it is
optimised with the student (SGD, weight decay included, as the original's ``trainable_list``),
saved in the checkpoint's ``distiller`` part, restored on resume, and left out of the exported
student. λ changes once an epoch, so the step still captures in a CUDA graph (recaptured each
epoch, as DKD's warm-up).
"""
from typing import Literal

from distillers import register_distiller
from distillers.base import LogitDistiller
from distillers.ctkd_losses import GlobalTemperature, cosine_curriculum, linear_curriculum
from distillers.losses import kd_loss
from utils.ranges import AtLeastOneInt, NonNegativeFloat, PositiveFloat

CURRICULA = {"cosine": cosine_curriculum, "linear": linear_curriculum}


@register_distiller("ctkd")
class CTKD(LogitDistiller):
    """loss = ce_weight·CE + kd_weight·KD_T, T = t_start + t_end·sigmoid(GRL_λ(θ)).

    Defaults are the CTKD paper's CIFAR-100 runs (zhengli97/CTKD ``-r 0.1 -a 0.9``, ``t_start`` 1,
    ``t_end`` 20, cosine λ 0 → 1 over 10 epochs). With ``logit_standardization`` both sides are
    Z-scored and, as for every logit method (LogitDistiller), ``base_temperature`` replaces the
    temperature this method has, its lowest value ``t_start`` (the logit-standardization logs
    start at 2.0018: ``t_start`` 2), and ``zscore_kd_weight`` replaces ``kd_weight``.
    ``temperature`` has no use here (the learnable one replaces it) and is no key.
    """

    def __init__(self, student, teacher, *, ce_weight: NonNegativeFloat = 0.1,
                 kd_weight: NonNegativeFloat = 0.9, t_start: PositiveFloat = 1.0,
                 t_end: NonNegativeFloat = 20.0, curriculum: Literal["cosine", "linear"] = "cosine",
                 curriculum_epochs: AtLeastOneInt = 10, strength_start: NonNegativeFloat = 0.0,
                 strength_end: NonNegativeFloat = 1.0, **standardization):
        super().__init__(student, teacher, temperature=t_start, ce_weight=ce_weight,
                         kd_weight=kd_weight, **standardization)
        lowest = self.base_temperature if self.logit_standardization else float(t_start)
        self.curriculum, self.curriculum_epochs = curriculum, int(curriculum_epochs)
        self.strengths = (float(strength_start), float(strength_end))
        self.global_temperature = self.place_like_student(GlobalTemperature(lowest, t_end))

    def strength(self, epoch: int) -> float:
        """λ at ``epoch`` (counted from 1, as the original's loop and its curriculum)."""
        return CURRICULA[self.curriculum](epoch, self.curriculum_epochs, *self.strengths)

    def logit_loss(self, student_in, teacher_in, temperature, batch, epoch):
        """KD at the learnable temperature (``temperature``, the fixed one, has no use here)."""
        return kd_loss(student_in, teacher_in, self.global_temperature(self.strength(epoch)))

    def describe(self) -> str:
        t = self.global_temperature
        zscored = ", z-score both sides" if self.logit_standardization else ""
        start, end = self.strengths
        return (f"loss = {self.ce_weight:g}·CE + {self.kd_weight:g}·KD(T={t.t_start:g}+{t.t_end:g}·"
                f"sigmoid(θ), lowest T={t.t_start:g}{zscored}; θ learnable through gradient "
                f"reversal of strength λ: {self.curriculum} {start:g}→{end:g} over epochs "
                f"1–{self.curriculum_epochs}, then {end:g})")
