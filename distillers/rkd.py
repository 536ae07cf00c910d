"""Relational KD (Park et al., CVPR 2019): the student's pooled features keep the distances and
angles the teacher's draw between the samples of a batch."""
from distillers import register_distiller
from distillers.base import FeatureDistiller
from distillers.losses import rkd_loss
from utils.collectives import gather_batch
from utils.ranges import NonNegativeFloat, PositiveFloat


@register_distiller("rkd")
class RKD(FeatureDistiller):
    """loss = ce_weight·CE + feat_weight·(distance_weight·L_RKD-D + angle_weight·L_RKD-A) on
    ``pooled_feat`` (paper Eqs. 4-7; distance_weight and angle_weight are its λ_D and λ_A):
    Huber gaps of the mean-normalised pairwise distances and of the triplet angles.

    Defaults are mdistiller's CIFAR-100 ones (CE 1, feature weight 1, λ_D 25, λ_A 50, Euclidean
    not squared distances, ``eps`` 1e-12 the floor of the squared distances). The features'
    widths may differ: only the batch is shared. The relations couple the samples of a batch,
    so under DDP they are computed on the global batch (gathered from every process), as one
    process computes them on the recipe's batch.
    """

    def __init__(self, student, teacher, *, feat_weight: NonNegativeFloat = 1.0,
                 distance_weight: NonNegativeFloat = 25.0, angle_weight: NonNegativeFloat = 50.0,
                 squared: bool = False, eps: PositiveFloat = 1e-12, **weights):
        super().__init__(student, teacher, feat_weight=feat_weight, **weights)
        self.distance_weight, self.angle_weight = float(distance_weight), float(angle_weight)
        self.squared, self.eps = bool(squared), float(eps)
        distance = "squared distance" if self.squared else "distance"
        self.formula = (f"RKD({self.distance_weight:g}·{distance} + {self.angle_weight:g}·angle)"
                        f"(pooled_s, pooled_t)")

    def feature_loss(self, student_out, teacher_out, batch, epoch):
        return rkd_loss(gather_batch(student_out["pooled_feat"]),
                        gather_batch(teacher_out["pooled_feat"]),
                        distance_weight=self.distance_weight, angle_weight=self.angle_weight,
                        squared=self.squared, eps=self.eps)
