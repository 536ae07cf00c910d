"""VID (Ahn et al., CVPR 2019, "Variational information distillation for knowledge transfer"):
each teacher stage map is modelled as a Gaussian whose mean a regressor predicts from the
student's map; the student maximises its likelihood."""
from torch import nn

from distillers import register_distiller
from distillers.base import FeatureDistiller
from distillers.losses import pool_to_common_size
from distillers.stage_pairs import common_size_pairs, tapped
from distillers.vid_losses import build_vid_regressor, vid_initial_log_scale, vid_loss
from utils.errors import UserError
from utils.ranges import NonNegativeFloat, PositiveFloat

@register_distiller("vid")
class VID(FeatureDistiller):
    """loss = ce_weight·CE + feat_weight·Σ_i NLL_i over the stage maps ``feats[1:]``:
    ``NLL_i = mean ½[(μ_i(f_s) − f_t)² / σ²_c + log σ²_c]`` (paper Eq. 6 without its constant),
    ``σ²_c = softplus(α_c) + eps``.

    As mdistiller's ``VID.py``: stage i of the student pairs with stage i of the teacher (the
    shallowest stages, where the counts differ: ``stage_pairs``); the larger map of a pair is average-pooled to the smaller one's size; each μ_i is three 1×1
    convolutions (student width → teacher width → teacher width → teacher width, ReLU between)
    sized from the probed shapes; α starts where σ² = ``init_pred_var``.

    The variances: the paper learns α. mdistiller keeps its α in a plain Python list, so they are
    neither optimised nor in its state dict, and its σ² stay at ``init_pred_var`` for the whole
    run. ``learn_variance: false`` (the default) reproduces that effective behaviour: α is a
    constant buffer, not optimised, not saved (the checkpoint holds the regressors only, as the
    original's). ``learn_variance: true`` makes α a parameter, as the paper intends: optimised
    with the student (weight decay included, as every parameter the trainer optimises) and
    saved as ``log_scales``. Defaults: mdistiller's CIFAR-100 (weight 1, eps 1e-5, σ² 5).
    """

    def __init__(self, student, teacher, *, student_feature_shapes, teacher_feature_shapes,
                 feat_weight: NonNegativeFloat = 1.0, eps: PositiveFloat = 1e-5,
                 init_pred_var: PositiveFloat = 5.0, learn_variance: bool = False, **weights):
        super().__init__(student, teacher, feat_weight=feat_weight, **weights)
        if not init_pred_var > eps:
            raise UserError(f"distiller.init_pred_var={init_pred_var:g} must exceed "
                            f"distiller.eps={eps:g}: the initial variance is softplus(α) + eps")
        pairs = common_size_pairs("vid", student_feature_shapes, teacher_feature_shapes)
        self.stages, stages = tapped(pairs)
        self.eps, self.learn_variance = float(eps), bool(learn_variance)
        self.widths = [t[0] for _, t in pairs]
        self.regressors = self.place_like_student(
            nn.ModuleList(build_vid_regressor(s[0], t[0]) for s, t in pairs))
        # one α per teacher channel, all stages in one tensor (split by ``widths``)
        log_scales = self.place_like_student(vid_initial_log_scale(sum(self.widths), init_pred_var, eps))
        if self.learn_variance:
            self.log_scales = nn.Parameter(log_scales)
        else:
            self.register_buffer("log_scales", log_scales, persistent=False)
        variance = "learnt" if self.learn_variance else "fixed"
        self.formula = (f"Σ_i VID(regressor_i(feats_s[i]), feats_t[i]) over feats{stages} "
                        f"({len(pairs)} stages, σ² {variance}, init {init_pred_var:g})")

    def feature_loss(self, student_out, teacher_out, batch, epoch):
        total = 0.0
        stages = zip(self.regressors, self.log_scales.split(self.widths),
                     student_out["feats"][self.stages], teacher_out["feats"][self.stages])
        for regressor, log_scale, student_map, teacher_map in stages:
            student_map, teacher_map = pool_to_common_size(student_map, teacher_map)
            total = total + vid_loss(regressor(student_map), teacher_map, log_scale, self.eps)
        return total
