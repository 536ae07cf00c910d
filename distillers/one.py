"""ONE (Lan et al., NeurIPS 2018): on-the-fly native ensemble, distillation without a teacher."""
import torch.nn.functional as F

from distillers import register_distiller
from distillers.base import Distiller
from distillers.losses import one_kl_loss, sigmoid_rampup
from utils.ranges import NonNegativeFloat, NonNegativeInt, PositiveFloat


@register_distiller("one")
class ONE(Distiller):
    """loss = ce_weight·(Σ_b CE(branch_b) + CE(ensemble)) + w(epoch)·Σ_b KL_T(ensemble ‖ branch_b).

    The student is the multi-branch ONE network (e.g. ``one_resnet32``); its gated ensemble of
    the branches is the teacher. w is the sigmoid ramp-up over ``rampup`` epochs evaluated at
    ``epoch + epoch_offset``: the official code counts epochs from 0 while ours count from 1,
    so the default offset −1 reproduces its weights (0 ramps on the 1-based epoch instead).
    Defaults are the official CIFAR scripts' (T = 3, ramp-up 80). Evaluation returns every
    branch's logits and the ensemble's, branch 1 first (the reference's headline accuracy).
    """

    needs_teacher = False

    def __init__(self, student, teacher=None, *, ce_weight: NonNegativeFloat = 1.0,
                 temperature: PositiveFloat = 3.0, rampup: NonNegativeInt = 80,
                 epoch_offset: int = -1):
        super().__init__(student, None)
        self.ce_weight, self.temperature = float(ce_weight), float(temperature)
        self.rampup, self.epoch_offset = rampup, epoch_offset

    def consistency_weight(self, epoch: int) -> float:
        return sigmoid_rampup(epoch + self.epoch_offset, self.rampup)

    def forward_train(self, batch, epoch):
        out = self.student.forward_features(batch.images)
        branches, ensemble, targets = out["branch_logits"], out["ensemble_logits"], batch.targets
        ce = sum(F.cross_entropy(logits, targets) for logits in branches)
        return out["logits"], {
            "loss_ce": self.ce_weight * (ce + F.cross_entropy(ensemble, targets)),
            "loss_kl": self.consistency_weight(epoch) * one_kl_loss(branches, ensemble, self.temperature),
        }

    def forward_test(self, images):
        return self.student.named_outputs(images)

    def describe(self) -> str:
        return (f"loss = {self.ce_weight:g}·(Σ_b CE(branch_b) + CE(ensemble)) + "
                f"sigmoid_rampup(epoch{self.epoch_offset:+g}, {self.rampup:g})·"
                f"Σ_b KL(ensemble ‖ branch_b)(T={self.temperature:g}, ensemble detached)")
