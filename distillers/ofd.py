"""OFD (Heo et al., ICCV 2019, "A comprehensive overhaul of feature distillation"): the
student's pre-activation stage maps, through connectors, must match the teacher's before its
ReLU, where the teacher's negative values count only down to a per-channel margin."""
import torch
from torch import nn

from distillers import register_distiller
from distillers.base import FeatureDistiller
from distillers.ofd_losses import build_ofd_connector, ofd_loss, ofd_margin
from utils.errors import UserError
from utils.ranges import AtLeastOneInt, NonNegativeFloat


def teacher_bns_before_relu(teacher_model: nn.Module, stages: int):
    """The BatchNorm before the ReLU of each of the teacher's ``stages`` deepest stages (the
    margins' source); a teacher that names none is the config's mistake, in one line."""
    name = type(teacher_model).__name__
    try:
        bns = list(teacher_model.bn_before_relu())[-stages:]
    except (AttributeError, NotImplementedError):
        raise UserError(f"distiller 'ofd' takes its margins from the teacher's BatchNorm before "
                        f"each stage's ReLU, and the teacher {name} has none; choose another "
                        f"teacher.arch") from None
    if len(bns) < stages or any(bn is None for bn in bns):
        raise UserError(f"distiller 'ofd': the teacher {name} has no BatchNorm before the ReLU of "
                        f"each of its {stages} deepest stages; choose another teacher.arch")
    return bns


@register_distiller("ofd")
class OFD(FeatureDistiller):
    """loss = ce_weight·CE + feat_weight·Σ_i 2^−(n−1−i)·d_p(connector_i(s_i), t_i, m_i)
    (paper Eq. 6, the deepest stage weighted 1, each shallower one half the next).

    As mdistiller's ``OFD.py``: the n distilled stages are the deepest ``preact_feats`` after
    the stem that both networks have (n = the shorter ``feats[1:]``: 3 for CIFAR ResNets, 3 for
    ResNet50 → MobileNetV1); each connector is a conv of ``connector_kernel_size`` + BatchNorm
    from the student's width to the teacher's (sized from the probed shapes); the teacher's map
    is average-pooled to the student's size; the margins m_i (Eq. 4) are computed once from the
    teacher's BatchNorm before each stage's ReLU (``bn_before_relu()``) and kept in float32, as
    the original keeps them. Defaults: mdistiller's CIFAR-100 (weight 1e-3, 1×1 connectors).

    Departure: the original's ``train()`` puts its teacher in train mode too, so there the
    teacher's pre-activation maps are normalised with each batch's own statistics (and its
    running statistics drift, unused). Here the teacher is frozen in eval mode (FrozenTeacher):
    its maps use its running statistics. The loss differs accordingly (target maps, and hence
    which branch of d_p applies where); the margins assume the BatchNorm's output is N(β, γ²),
    exact for batch statistics and close for running statistics of a trained teacher.
    """

    def __init__(self, student, teacher, *, student_feature_shapes, teacher_feature_shapes,
                 feat_weight: NonNegativeFloat = 0.001, connector_kernel_size: AtLeastOneInt = 1,
                 **weights):
        super().__init__(student, teacher, feat_weight=feat_weight, **weights)
        self.stages = min(len(student_feature_shapes), len(teacher_feature_shapes)) - 1
        if self.stages < 1:
            raise UserError("distiller 'ofd' needs at least one stage map after the stem in both "
                            "networks; choose another student.arch / teacher.arch pair")
        bns = teacher_bns_before_relu(self.teacher.model, self.stages)
        pairs = zip(student_feature_shapes[-self.stages:], teacher_feature_shapes[-self.stages:])
        self.connectors = self.place_like_student(nn.ModuleList(
            build_ofd_connector(s[0], t[0], connector_kernel_size) for s, t in pairs))
        self.widths = [bn.num_features for bn in bns]
        margins = torch.cat([ofd_margin(bn.weight, bn.bias).float().cpu() for bn in bns])
        self.register_buffer("margins", self.place_like_student(margins), persistent=False)
        self.formula = (f"Σ_i 2^−(n−1−i)·OFD(connector_i(preact_feats_s[i]), preact_feats_t[i]) "
                        f"over the {self.stages} deepest stages (k={connector_kernel_size}, "
                        f"teacher in eval mode)")

    def feature_loss(self, student_out, teacher_out, batch, epoch):
        n = self.stages
        connected = [c(s) for c, s in zip(self.connectors, student_out["preact_feats"][-n:])]
        return ofd_loss(connected, teacher_out["preact_feats"][-n:], self.margins.split(self.widths))
