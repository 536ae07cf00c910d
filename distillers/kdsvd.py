"""KDSVD (Lee et al., ECCV 2018, "Self-supervised knowledge distillation using singular value
decomposition"): the relations between the leading singular vectors of consecutive stages."""
from distillers import register_distiller
from distillers.base import FeatureDistiller
from distillers.kdsvd_losses import kdsvd_loss
from distillers.stage_pairs import equal_width_pairs, tapped
from utils.ranges import AtLeastOneInt, NonNegativeFloat


@register_distiller("kdsvd")
class KDSVD(FeatureDistiller):
    """loss = ce_weight·CE + feat_weight·KDSVD_k(feats_s[1:], feats_t[1:]): the squared gap of
    the radial-basis relations between the k leading right singular vectors (the teacher's,
    and the student's sign-aligned to them) of each stage and the stage before
    (``kdsvd_losses.kdsvd_loss``).

    Defaults are mdistiller's CIFAR-100 ones (k = 1, CE 1, feature weight 1). The singular
    vectors have one entry per column of a map, so the two networks' maps must be equally wide
    stage by stage over the paired stages (``stage_pairs``; checked before the first step).
    """

    captures_in_cuda_graph = False
    cuda_graph_refusal = "reads the device inside its step (torch.linalg.svd checks its convergence on the host)"

    def __init__(self, student, teacher, *, student_feature_shapes, teacher_feature_shapes,
                 k: AtLeastOneInt = 1, feat_weight: NonNegativeFloat = 1.0, **weights):
        super().__init__(student, teacher, feat_weight=feat_weight, **weights)
        pairs = equal_width_pairs("kdsvd", student_feature_shapes, teacher_feature_shapes)
        self.stages, stages = tapped(pairs)
        self.k = int(k)
        self.formula = f"KDSVD(feats_s{stages}, feats_t{stages}, k={self.k})"

    def feature_loss(self, student_out, teacher_out, batch, epoch):
        return kdsvd_loss(student_out["feats"][self.stages], teacher_out["feats"][self.stages],
                          self.k)
