"""Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018): the student's pooled features
give the batch the same conditional probability structure as the teacher's."""
from distillers import register_distiller
from distillers.base import FeatureDistiller
from distillers.losses import pkt_loss
from utils.collectives import gather_batch
from utils.ranges import NonNegativeFloat


@register_distiller("pkt")
class PKT(FeatureDistiller):
    """loss = ce_weight·CE + feat_weight·KL(P_t ‖ P_s) on ``pooled_feat``: the paper's
    divergence between the conditional probabilities P (row-normalised cosine affinities of the
    samples of a batch), as ``losses.pkt_loss`` computes it.

    Defaults are mdistiller's CIFAR-100 ones (CE 1, feature weight 30000). The features' widths
    may differ: only the batch is shared. The affinities couple the samples of a batch, so under
    DDP they are computed on the global batch (gathered from every process), as one process
    computes them on the recipe's batch.
    """

    def __init__(self, student, teacher, *, feat_weight: NonNegativeFloat = 30000.0, **weights):
        super().__init__(student, teacher, feat_weight=feat_weight, **weights)
        self.formula = "PKT(pooled_s, pooled_t)"

    def feature_loss(self, student_out, teacher_out, batch, epoch):
        return pkt_loss(gather_batch(student_out["pooled_feat"]),
                        gather_batch(teacher_out["pooled_feat"]))
