"""Similarity-preserving KD (Tung & Mori, ICCV 2019): samples that the teacher's last stage map
finds alike (or not), the student's must find alike (or not) too."""
from distillers import register_distiller
from distillers.base import FeatureDistiller
from distillers.losses import sp_loss
from utils.collectives import gather_batch
from utils.ranges import NonNegativeFloat


@register_distiller("sp")
class SP(FeatureDistiller):
    """loss = ce_weight·CE + feat_weight·‖G_t − G_s‖²_F / N² on ``feats[-1]`` only (paper
    Eq. 4, G the row-normalised batch similarity of the flattened maps; feat_weight is its γ).

    Defaults are mdistiller's CIFAR-100 ones (the last stage map, CE 1, feature weight 3000).
    The maps' shapes may differ freely: only the batch is shared. The similarities couple the
    samples of a batch, so under DDP they are computed on the global batch (gathered from every
    process), as one process computes them on the recipe's batch.
    """

    def __init__(self, student, teacher, *, feat_weight: NonNegativeFloat = 3000.0, **weights):
        super().__init__(student, teacher, feat_weight=feat_weight, **weights)
        self.formula = "SP(feats_s[-1], feats_t[-1])"

    def feature_loss(self, student_out, teacher_out, batch, epoch):
        return sp_loss([gather_batch(student_out["feats"][-1])],
                       [gather_batch(teacher_out["feats"][-1])])
