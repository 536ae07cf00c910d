"""ReviewKD (Chen et al., CVPR 2021, "Distilling knowledge via knowledge review"): each student
level, fused with the deeper ones by attention-based fusion (ABF), is matched with the
teacher's level by the hierarchical context loss (HCL)."""
from distillers import register_distiller
from distillers.base import FeatureDistiller
from distillers.reviewkd_losses import ReviewFusion, hcl_loss
from utils.errors import UserError
from utils.ranges import AtLeastOneInt, NonNegativeFloat


@register_distiller("reviewkd")
class ReviewKD(FeatureDistiller):
    """loss = ce_weight·CE + feat_weight·min(epoch / warmup_epochs, 1)·HCL(ABF(student levels),
    teacher levels) (epochs counted from 1, as the original's).

    As mdistiller's ``ReviewKD.py``: the teacher's levels are its ``preact_feats[1:]`` and its
    pooled feature (as a 1×1 map); the student's are its as many deepest ``feats`` (or
    ``preact_feats`` with ``student_preact``, as its ImageNet configs set) and its pooled
    feature. The ABFs are sized from the probed shapes, so the original's SHAPES, OUT_SHAPES,
    IN_CHANNELS and OUT_CHANNELS are not config keys: for resnet32x4 → resnet8x4, ResNet34 →
    ResNet18 and ResNet50 → MobileNetV1 the probe gives the values of its configs
    (tests/test_learnable_methods.py). The ABF width is ``min(max_mid_channels, student's
    pooled width)``. The original hard-codes ``min(512, ·)`` and never reads its
    ``MAX_MID_CHANNEL`` (its ResNet50 → MobileNetV1 config sets 256 and runs with 512), so the
    default 512 is its effective behaviour, and setting 256 there would depart from it.
    Defaults: mdistiller's (weight 1, 20 warm-up epochs; its CIFAR config sets weight 5).
    """

    def __init__(self, student, teacher, *, student_feature_shapes, teacher_feature_shapes,
                 student_pooled_dim, teacher_pooled_dim, feat_weight: NonNegativeFloat = 1.0,
                 warmup_epochs: AtLeastOneInt = 20, max_mid_channels: AtLeastOneInt = 512,
                 student_preact: bool = False, **weights):
        super().__init__(student, teacher, feat_weight=feat_weight, **weights)
        self.maps = min(len(student_feature_shapes), len(teacher_feature_shapes) - 1)
        if self.maps < 1:
            raise UserError("distiller 'reviewkd' needs a teacher with a stage map after its stem; "
                            "choose another teacher.arch")
        student_pooled, teacher_pooled = (student_pooled_dim, 1, 1), (teacher_pooled_dim, 1, 1)
        # levels shallowest first, the pooled feature last: (C, H, W) of each side's map
        self.student_levels = [*map(tuple, student_feature_shapes[-self.maps:]), student_pooled]
        self.teacher_levels = [*map(tuple, teacher_feature_shapes[-self.maps:]), teacher_pooled]
        for s, t in zip(self.student_levels, self.teacher_levels):
            if s[1] != s[2] or t[1] != t[2]:
                raise UserError(f"distiller 'reviewkd' resizes square maps only, got a student "
                                f"map {s} and a teacher map {t}; use square images")
        self.warmup_epochs, self.student_preact = int(warmup_epochs), bool(student_preact)
        self.source = "preact_feats" if self.student_preact else "feats"
        self.mid_channels = min(int(max_mid_channels), student_pooled[0])
        self.fusion = self.place_like_student(ReviewFusion(
            [s[0] for s in self.student_levels], [t[0] for t in self.teacher_levels],
            self.mid_channels))
        self.formula = (f"min(epoch/{self.warmup_epochs}, 1)·HCL(ABF({self.source}_s[-{self.maps}:] + "
                        f"pooled_s), preact_feats_t[-{self.maps}:] + pooled_t) "
                        f"(ABF width {self.mid_channels})")

    def feature_loss(self, student_out, teacher_out, batch, epoch):
        student_maps = [*student_out[self.source][-self.maps:], student_out["pooled_feat"][:, :, None, None]]
        teacher_maps = [*teacher_out["preact_feats"][-self.maps:],
                        teacher_out["pooled_feat"][:, :, None, None]]
        fused = self.fusion(student_maps, [t.shape[2] for t in teacher_maps])
        return min(epoch / self.warmup_epochs, 1.0) * hcl_loss(fused, teacher_maps)
