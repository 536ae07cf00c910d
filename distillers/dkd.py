"""Decoupled KD (Zhao et al., CVPR 2022), optionally on Z-score logits (Sun et al., CVPR 2024)."""

from distillers import register_distiller
from distillers.base import LogitDistiller
from distillers.losses import dkd_loss
from utils.errors import UserError
from utils.ranges import AtLeastOneInt, NonNegativeFloat, PositiveFloat


@register_distiller("dkd")
class DKD(LogitDistiller):
    """loss = ce_weight·CE + min(epoch/warmup, 1)·kd_weight·(alpha·TCKD + beta·NCKD).

    Defaults are mdistiller's CIFAR-100 ones (CE 1, alpha 1, beta 8, T 4, warm-up 20 epochs,
    epochs counted from 1). The KD weight multiplies the whole DKD term, which equals the
    logit-standardization paper's "DKD+ours" runs multiplying alpha and beta by it; with
    ``logit_standardization`` that paper's defaults apply (``zscore_kd_weight`` 9 and
    ``base_temperature`` 2 as T, see LogitDistiller) while alpha and beta keep DKD's own values.
    Plain DKD has no KD weight (``kd_weight`` 1).
    """

    def __init__(self, student, teacher, *, num_classes: int, ce_weight: NonNegativeFloat = 1.0,
                 alpha: NonNegativeFloat = 1.0, beta: NonNegativeFloat = 8.0,
                 temperature: PositiveFloat = 4.0, warmup: AtLeastOneInt = 20,
                 kd_weight: NonNegativeFloat = 1.0, **standardization):
        super().__init__(student, teacher, temperature=temperature, ce_weight=ce_weight,
                         kd_weight=kd_weight, **standardization)
        if num_classes < 3:
            raise UserError(f"DKD needs at least 3 classes (a target and 2+ non-target classes to "
                            f"decouple); this data has {num_classes}: use kd instead")
        self.alpha, self.beta, self.warmup = float(alpha), float(beta), warmup

    def logit_loss(self, student_in, teacher_in, temperature, batch, epoch):
        """DKD ramped in linearly over the first ``warmup`` epochs."""
        ramp = min(epoch / self.warmup, 1.0)
        return ramp * dkd_loss(student_in, teacher_in, batch.targets, self.alpha, self.beta, temperature)

    def describe(self) -> str:
        return (f"loss = {self.ce_weight:g}·CE + min(epoch/{self.warmup:g},1)·{self.kd_weight:g}·"
                f"({self.alpha:g}·TCKD + {self.beta:g}·NCKD)({self.describe_logits()})")
