"""DIST (Huang et al., NeurIPS 2022): relations, not values, of the teacher's predictions."""
from distillers import register_distiller
from distillers.base import LogitDistiller
from distillers.losses import dist_loss
from utils.collectives import gather_batch
from utils.ranges import NonNegativeFloat, PositiveFloat


@register_distiller("dist")
class DIST(LogitDistiller):
    """loss = ce_weight·CE + kd_weight·τ²·(beta·inter + gamma·intra).

    Defaults are DIST_KD's CIFAR-100 recipe (``dist_cifar.yaml``: CE 1, KD 2, β = γ = 1, τ = 4).
    With ``logit_standardization`` both sides are Z-scored first and ``base_temperature``
    replaces ``tau`` and ``zscore_kd_weight`` replaces ``kd_weight`` (the logit-standardization
    paper's switch; it did not tune DIST, so the base temperature keeps that paper's default 2
    and the KD weight DIST's own 2).

    The intra-class term correlates each class over the batch, so under DDP the relations are
    computed on the global batch (gathered from every process): N processes x B/N train as one
    process x B, the recipe's batch on any number of GPUs. (The official ImageNet runs computed
    them per GPU; that grouping is not reproduced.)
    """

    def __init__(self, student, teacher, *, ce_weight: NonNegativeFloat = 1.0,
                 kd_weight: NonNegativeFloat = 2.0, beta: NonNegativeFloat = 1.0,
                 gamma: NonNegativeFloat = 1.0, tau: PositiveFloat = 4.0,
                 zscore_kd_weight: NonNegativeFloat = 2.0, **standardization):
        super().__init__(student, teacher, temperature=tau, ce_weight=ce_weight, kd_weight=kd_weight,
                         zscore_kd_weight=zscore_kd_weight, **standardization)
        self.beta, self.gamma = float(beta), float(gamma)

    def logit_loss(self, student_in, teacher_in, tau, batch, epoch):
        return dist_loss(gather_batch(student_in), gather_batch(teacher_in), self.beta, self.gamma, tau)

    def describe(self) -> str:
        return (f"loss = {self.ce_weight:g}·CE + {self.kd_weight:g}·τ²·({self.beta:g}·inter + "
                f"{self.gamma:g}·intra)({self.describe_logits().replace('T=', 'τ=')})")
