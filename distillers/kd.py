"""Hinton KD (Hinton et al., 2015), optionally on Z-score standardized logits (Sun et al., 2024)."""
from distillers import register_distiller
from distillers.base import LogitDistiller
from distillers.losses import kd_loss
from utils.ranges import NonNegativeFloat, PositiveFloat


@register_distiller("kd")
class KD(LogitDistiller):
    """loss = ce_weight·CE + kd_weight·KD_T.

    Defaults: mdistiller's CIFAR-100 KD (0.1, 0.9, T=4); with ``logit_standardization`` the
    logit-standardization-KD defaults (base temperature 2, KD weight 9; see LogitDistiller).
    """

    def __init__(self, student, teacher, *, ce_weight: NonNegativeFloat = 0.1,
                 kd_weight: NonNegativeFloat = 0.9, temperature: PositiveFloat = 4.0,
                 **standardization):
        super().__init__(student, teacher, temperature=temperature, ce_weight=ce_weight,
                         kd_weight=kd_weight, **standardization)

    def logit_loss(self, student_in, teacher_in, temperature, batch, epoch):
        return kd_loss(student_in, teacher_in, temperature)

    def describe(self) -> str:
        return f"loss = {self.ce_weight:g}·CE + {self.kd_weight:g}·KD({self.describe_logits()})"
