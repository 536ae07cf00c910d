"""FitNets (Romero et al., ICLR 2015): a regressor maps a student stage onto the teacher's."""
from collections import OrderedDict

from torch import nn

from distillers import register_distiller
from distillers.base import FeatureDistiller
from distillers.losses import fitnet_loss
from utils.errors import UserError
from utils.ranges import NonNegativeFloat


def build_regressor(student_shape, teacher_shape) -> nn.Module:
    """Conv (or transposed conv) + BatchNorm + ReLU from a student map ``(C, H, W)`` to the
    teacher's, chosen as mdistiller's ``ConvReg`` chooses: 3×3 stride 2 when the student map
    is twice as large, transposed 4×4 stride 2 when half as large, otherwise a conv whose
    kernel ``(1+Hs−Ht, 1+Ws−Wt)`` shrinks it to size (1×1 when the sizes match). Its state-dict
    keys (``conv.*``, ``bn.*``) are the reference's."""
    (s_channels, s_height, s_width), (t_channels, t_height, t_width) = student_shape, teacher_shape
    if s_height == 2 * t_height:
        conv = nn.Conv2d(s_channels, t_channels, kernel_size=3, stride=2, padding=1)
    elif 2 * s_height == t_height:
        conv = nn.ConvTranspose2d(s_channels, t_channels, kernel_size=4, stride=2, padding=1)
    elif s_height >= t_height and s_width >= t_width:
        conv = nn.Conv2d(s_channels, t_channels,
                         kernel_size=(1 + s_height - t_height, 1 + s_width - t_width))
    else:
        raise ValueError(f"no FitNet regressor maps a student map {tuple(student_shape)} onto a "
                         f"teacher map {tuple(teacher_shape)}: the student's must be at least as "
                         f"large, or exactly half as large; choose another hint_layer")
    return nn.Sequential(OrderedDict(conv=conv, bn=nn.BatchNorm2d(t_channels), relu=nn.ReLU()))


@register_distiller("fitnet")
class FitNet(FeatureDistiller):
    """loss = ce_weight·CE + feat_weight·MSE(regressor(f_s), f_t) on ``feats[hint_layer]``.

    Defaults are mdistiller's CIFAR-100 ones (hint on ``feats[2]``, the second stage's output;
    CE 1, feature weight 100). The regressor is sized from both networks' feature shapes (the
    builder probes them once) and is trained and checkpointed with the student.
    """

    def __init__(self, student, teacher, *, student_feature_shapes, teacher_feature_shapes,
                 hint_layer: int = 2, feat_weight: NonNegativeFloat = 100.0, **weights):
        super().__init__(student, teacher, feat_weight=feat_weight, **weights)
        student_shapes, teacher_shapes = student_feature_shapes, teacher_feature_shapes
        depth = min(len(student_shapes), len(teacher_shapes))
        if not -depth <= hint_layer < depth:
            raise UserError(f"distiller.hint_layer={hint_layer} is out of range: the student has "
                            f"{len(student_shapes)} and the teacher {len(teacher_shapes)} feature maps")
        self.hint_layer = hint_layer
        self.formula = f"MSE(regressor(feats_s[{hint_layer}]), feats_t[{hint_layer}])"
        try:
            regressor = build_regressor(student_shapes[hint_layer], teacher_shapes[hint_layer])
        except ValueError as err:
            raise UserError(f"distiller.hint_layer={hint_layer}: {err}") from err
        self.regressor = self.place_like_student(regressor)

    def feature_loss(self, student_out, teacher_out, batch, epoch):
        layer = self.hint_layer
        return fitnet_loss(self.regressor(student_out["feats"][layer]), teacher_out["feats"][layer])
