"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017, "Paying more attention to attention"):
the student's spatial attention maps follow the teacher's, stage by stage."""
from distillers import register_distiller
from distillers.base import FeatureDistiller
from distillers.losses import at_loss
from distillers.stage_pairs import common_size_pairs, tapped
from utils.ranges import NonNegativeFloat, PositiveFloat


@register_distiller("at")
class AT(FeatureDistiller):
    """loss = ce_weight·CE + feat_weight·Σ_stages ‖Q_s − Q_t‖² on ``feats[1:]`` (paper
    Eq. 2, with Q = L2-normalised ``mean_c f^p`` and the benchmark's mean squared gap in place
    of the p-norm, so feat_weight stands for β/2).

    Defaults are mdistiller's CIFAR-100 ones (p = 2, CE 1, feature weight 1000). Stage maps of
    different sizes are compared after pooling the larger (``losses.pool_to_common_size``); the
    shallowest stages pair up (``stage_pairs``: the original's ``zip``), each must reach a common
    size (checked here, from the probed shapes, before the first step).
    """

    def __init__(self, student, teacher, *, student_feature_shapes, teacher_feature_shapes,
                 p: PositiveFloat = 2.0, feat_weight: NonNegativeFloat = 1000.0, **weights):
        super().__init__(student, teacher, feat_weight=feat_weight, **weights)
        pairs = common_size_pairs("at", student_feature_shapes, teacher_feature_shapes)
        self.stages, stages = tapped(pairs)
        self.p = float(p)
        self.formula = f"AT(feats_s{stages}, feats_t{stages}, p={self.p:g})"

    def feature_loss(self, student_out, teacher_out, batch, epoch):
        return at_loss(student_out["feats"][self.stages], teacher_out["feats"][self.stages],
                       self.p)
