"""Multi-Level Logit Distillation (Jin et al., CVPR 2023), optionally on Z-score logits (Sun et
al., CVPR 2024), as the logit-standardization paper's code runs it (distillers/mlkd_losses.py
says what that is, term by term, and holds it to the original).

Every sample comes in two views: the loader's weak one (``Batch.images``) and a strong one
(``Batch.strong_images``, datasets/strong_augment.py); ``needs_strong_view`` makes the loaders
draw it for this method only. The confidence masks (medians over the batch's samples and over the
classes) and the batch-level correlation couple the samples of a batch, so under DDP every term is
computed on the global batch (gathered from every process, ``utils.collectives.gather_batch``,
as DIST does): N processes × B/N train as one process × B, the recipe's batch on any number of
GPUs. (The original ran one process with DataParallel, whose loss saw the whole batch too.)
"""

from distillers import register_distiller
from distillers.base import LogitDistiller, parameter_dtype
from distillers.mlkd_losses import EXTRA_TEMPERATURES, mlkd_loss_terms
from utils.batch import Batch
from utils.collectives import gather_batch
from utils.errors import UserError
from utils.ranges import NonNegativeFloat, PositiveFloat


@register_distiller("mlkd")
class MLKD(LogitDistiller):
    """loss = ce_weight·(CE_weak + CE_strong) + kd_weight·(KD terms + class consistency + batch
    consistency), at the temperatures (T, 3, 5, 2, 6), T the configured one.

    Defaults are MLKD's CIFAR-100 runs (its repository's ``KD_ours``: CE 0.1, KD 0.9, T 4); with
    ``logit_standardization`` the KD terms see Z-scored logits, ``base_temperature`` replaces T
    and ``zscore_kd_weight`` the KD weight (LogitDistiller), as the logit-standardization code's
    ``--logit-stand --base-temp --kd-weight``.
    """

    needs_strong_view = True   # so runtime.cuda_graph refuses it (launch/combination.py)

    def __init__(self, student, teacher, *, ce_weight: NonNegativeFloat = 0.1,
                 kd_weight: NonNegativeFloat = 0.9, temperature: PositiveFloat = 4.0,
                 **standardization):
        super().__init__(student, teacher, temperature=temperature, ce_weight=ce_weight,
                         kd_weight=kd_weight, **standardization)

    def forward_train(self, batch: Batch, epoch: int):
        if batch.strong_images is None:
            raise UserError("mlkd needs a strong view of every sample (Batch.strong_images): "
                            "build the loaders with strong_view=True")
        dtype = parameter_dtype(self.student)
        weak, strong = self.student(batch.images), self.student(batch.strong_images)
        teacher_weak = self.teacher.logits(batch).to(dtype)
        teacher_strong = self.teacher.logits(Batch(batch.strong_images)).to(dtype)
        temperature = self.base_temperature if self.logit_standardization else self.temperature
        terms = mlkd_loss_terms(*(gather_batch(z) for z in (weak, strong, teacher_weak,
                                                            teacher_strong, batch.targets)),
                                temperature, self.logit_standardization)
        return weak, {
            "loss_ce": self.ce_weight * terms["ce"],
            "loss_kd": self.kd_weight * terms["kd"],
            "loss_cc": self.kd_weight * terms["cc"],
            "loss_bc": self.kd_weight * terms["bc"],
        }

    def describe(self) -> str:
        temperatures = ",".join(f"{t:g}" for t in EXTRA_TEMPERATURES)
        return (f"loss = {self.ce_weight:g}·(CE_weak + CE_strong) + {self.kd_weight:g}·"
                f"(Σ_τ KD_τ(weak)·|m|/N + Σ_τ∈{{T,3,5}} KD_τ(strong) + Σ_τ∈{{2,6}} KD_τ(weak) + "
                f"Σ_τ CC_τ·|k|/C + Σ_τ BC_τ·|m|/N), τ ∈ {{T,{temperatures}}}, m/k the samples/"
                f"classes at or below the teacher's median confidence ({self.describe_logits()}"
                f"{'; KD terms only' if self.logit_standardization else ''}), global batch")
