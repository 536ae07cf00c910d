"""Plain cross-entropy training: teachers and the no-distillation baselines."""
import torch.nn.functional as F

from distillers import register_distiller
from distillers.base import Distiller


@register_distiller("vanilla")
class Vanilla(Distiller):
    needs_teacher = False
    separates_task_loss = False   # the task loss alone

    def __init__(self, student, teacher=None):
        super().__init__(student, None)

    def forward_train(self, batch, epoch):
        logits = self.student(batch.images)
        return logits, {"loss_ce": F.cross_entropy(logits, batch.targets)}

    def describe(self) -> str:
        return "loss = 1·CE"
