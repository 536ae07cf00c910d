"""SRRL (Yang et al., ICLR 2021): knowledge distillation via softmax regression representation
learning. The student's last feature map, through a connector, must look like the teacher's to
the teacher's own (frozen) classifier."""
import torch.nn.functional as F
from torch import nn

from distillers import register_distiller
from distillers.base import Distiller
from distillers.losses import srrl_feature_loss, srrl_sr_loss
from utils.ranges import NonNegativeFloat


def build_connector(student_channels: int, teacher_channels: int) -> nn.Module:
    """1×1 conv (no bias) + BatchNorm + ReLU, the official code's ``transfer_conv``; its
    state-dict keys are the reference's ``Connectors.*`` without that prefix."""
    return nn.Sequential(
        nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False),
        nn.BatchNorm2d(teacher_channels),
        nn.ReLU(),
    )


@register_distiller("srrl")
class SRRL(Distiller):
    """loss = ce_weight·CE + feat_weight·L_FM + sr_weight·L_SR (paper Eq. 8: α = feat_weight,
    β = sr_weight).

    L_FM is the official code's per-channel spatial-mean gap between connector(f_s) and f_t
    (the last feature maps), L_SR the MSE between teacher_head(connector(f_s)) and the teacher's
    logits. The teacher head is frozen: gradients pass through it to the connector and the
    student, its parameters never change. The two last maps may differ in spatial size (e.g.
    MobileNetV2's 2×2 against a ResNet's 8×8): L_FM compares spatial means and the models'
    heads pool globally, so only the channel counts size the connector.

    Defaults α = β = 1: the official (ImageNet) code's ``CE + feature + 1·SR``; no CIFAR values
    were published (the authors grid-searched them per pair and suggest trying (1, 1), (1, 5),
    (10, 1)).
    """

    def __init__(self, student, teacher, *, ce_weight: NonNegativeFloat = 1.0,
                 feat_weight: NonNegativeFloat = 1.0, sr_weight: NonNegativeFloat = 1.0,
                 student_feature_shapes, teacher_feature_shapes):
        super().__init__(student, teacher)
        self.ce_weight, self.feat_weight = float(ce_weight), float(feat_weight)
        self.sr_weight = float(sr_weight)
        self.connector = self.place_like_student(
            build_connector(student_feature_shapes[-1][0], teacher_feature_shapes[-1][0]))

    def forward_train(self, batch, epoch):
        out = self.student.forward_features(batch.images)
        teacher_out = self.teacher.features(batch.images)
        connected = self.connector(out["feats"][-1])
        teacher_feature = teacher_out["feats"][-1].to(connected.dtype)
        through_teacher_head = self.teacher.head(connected)
        return out["logits"], {
            "loss_ce": self.ce_weight * F.cross_entropy(out["logits"], batch.targets),
            "loss_feat": self.feat_weight * srrl_feature_loss(connected, teacher_feature),
            "loss_sr": self.sr_weight * srrl_sr_loss(through_teacher_head,
                                                     teacher_out["logits"].to(connected.dtype)),
        }

    def describe(self) -> str:
        return (f"loss = {self.ce_weight:g}·CE"
                f" + {self.feat_weight:g}·FM(connector(feats_s[-1]), feats_t[-1])"
                f" + {self.sr_weight:g}·MSE(teacher_head(connector(feats_s[-1])), teacher_logits)")
