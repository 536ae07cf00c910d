"""Neuron selectivity transfer (Huang & Wang, arXiv:1707.01219, "Like what you like"): the
distribution of the student's channel responses over space matches the teacher's."""
from distillers import register_distiller
from distillers.base import FeatureDistiller
from distillers.losses import nst_loss
from distillers.stage_pairs import common_size_pairs, tapped
from utils.ranges import NonNegativeFloat


@register_distiller("nst")
class NST(FeatureDistiller):
    """loss = ce_weight·CE + feat_weight·Σ_stages MMD²(feats_s[i], feats_t[i]) on ``feats[1:]``:
    the paper's L_NST, the squared maximum mean discrepancy between the channels of the two
    maps (each channel's spatial response L2-normalised, a sample of the distribution) with the
    polynomial kernel ``(xᵀy)²`` (d = 2, c = 0), feat_weight standing for λ/2.

    Defaults are mdistiller's CIFAR-100 ones (CE 1, feature weight 50). Channel counts may
    differ; maps of different sizes are compared after pooling the larger
    (``losses.pool_to_common_size``), the shallowest stages pair up (``stage_pairs``), each
    reaching a common size (checked here, before the first step).
    """

    def __init__(self, student, teacher, *, student_feature_shapes, teacher_feature_shapes,
                 feat_weight: NonNegativeFloat = 50.0, **weights):
        super().__init__(student, teacher, feat_weight=feat_weight, **weights)
        pairs = common_size_pairs("nst", student_feature_shapes, teacher_feature_shapes)
        self.stages, stages = tapped(pairs)
        self.formula = f"NST(feats_s{stages}, feats_t{stages})"

    def feature_loss(self, student_out, teacher_out, batch, epoch):
        return nst_loss(student_out["feats"][self.stages], teacher_out["feats"][self.stages])
