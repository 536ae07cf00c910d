"""MLKD (Jin et al., CVPR 2023, "Multi-Level Logit Distillation") as the logit-standardization
paper's code runs it (sunshangquan/logit-standardization-KD f6e5aa5, the code of its MLKD and
MLKD + Z-score rows; tests/reference/LS_ORACLES.md describes it and holds the oracle).

The paper aligns predictions at three levels, each at several temperatures ("prediction
augmentation"), on a weak and a strong view of every image: the instance level (KD), the batch
level (the samples' correlation matrix, "input correlation") and the class level (the classes'
correlation matrix, "category correlation"); the teacher's confidence on the weak view gates
them (confidence-based masking).

As that code does, and unlike a per-sample reading of the paper: each masked term is the
batch-reduced loss times the *fraction* of samples (or classes) whose teacher confidence is at
or below the median, so the mask sets a weight, not which samples count; the strong-view KD sum
takes the weak view's logits at temperatures 2 and 6; only the KD terms see the Z-score. The
medians are computed on the device (``torch.quantile``, numpy's linear interpolation), without
the original's per-step host read (``np.percentile``).
"""
import torch
import torch.nn.functional as F

from distillers.losses import kd_loss, zscore
from distillers.precision import full_precision

EXTRA_TEMPERATURES = (3.0, 5.0, 2.0, 6.0)    # the original's, after the configured one
STRONG_VIEW_EXTRA_TEMPERATURES = (3.0, 5.0)  # the strong-view sum's own views ...
WEAK_VIEW_REPEATS = (2.0, 6.0)               # ... and its weak-view, unmasked, terms


def median_threshold(values: torch.Tensor) -> torch.Tensor:
    """The median of a 1-D tensor, linearly interpolated between the two middle values (numpy's
    ``percentile(·, 50)``), as a 0-dim tensor on the values' device."""
    return torch.quantile(values, 0.5, interpolation="linear")


def confidence_masks(teacher_weak_logits: torch.Tensor):
    """MLKD's masks from the teacher's weak-view softmax p (T = 1): samples whose confidence
    ``max_c p`` is ≤ its median over the batch, and classes whose confidence ``Σ_n p`` is ≤ its
    median over the classes (ties at the median are inside). Boolean ``[N]`` and ``[C]``."""
    p = F.softmax(teacher_weak_logits.detach(), dim=1)
    sample_confidence = p.max(dim=1).values
    class_confidence = p.sum(dim=0)
    return (sample_confidence <= median_threshold(sample_confidence),
            class_confidence <= median_threshold(class_confidence))


@full_precision
def class_consistency_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                           temperature: float) -> torch.Tensor:
    """Class-level alignment (category correlation): with P = softmax(z/T) ``[N, C]``, the squared
    Frobenius distance of the class-correlation matrices ``PᵀP`` divided by C."""
    p_s = F.softmax(student_logits / temperature, dim=1)
    p_t = F.softmax(teacher_logits / temperature, dim=1)
    return (p_t.t() @ p_t - p_s.t() @ p_s).pow(2).sum() / student_logits.shape[1]


@full_precision
def batch_consistency_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                           temperature: float) -> torch.Tensor:
    """Batch-level alignment (input correlation): with P = softmax(z/T) ``[N, C]``, the squared
    Frobenius distance of the sample-correlation matrices ``PPᵀ`` divided by N."""
    p_s = F.softmax(student_logits / temperature, dim=1)
    p_t = F.softmax(teacher_logits / temperature, dim=1)
    return (p_t @ p_t.t() - p_s @ p_s.t()).pow(2).sum() / student_logits.shape[0]


def _summed(loss, student, teacher, temperatures) -> torch.Tensor:
    return sum(loss(student, teacher, t) for t in temperatures)


@full_precision
def mlkd_loss_terms(student_weak: torch.Tensor, student_strong: torch.Tensor,
                    teacher_weak: torch.Tensor, teacher_strong: torch.Tensor,
                    target: torch.Tensor, temperature: float,
                    logit_standardization: bool = False) -> dict:
    """MLKD's unweighted terms, the distiller weighs them (CE weight; KD weight on the rest):

    - ``ce``: CE(weak) + CE(strong);
    - ``kd``: ``Σ_τ KD_τ(weak)·|m|/N + Σ_{τ∈{T,3,5}} KD_τ(strong) + Σ_{τ∈{2,6}} KD_τ(weak)``;
    - ``cc``: ``Σ_τ CC_τ(weak)·|k|/C``;  ``bc``: ``Σ_τ BC_τ(weak)·|m|/N``;

    τ over the temperatures ``(temperature, 3, 5, 2, 6)``, KD the Hinton loss (``kd_loss``) on
    Z-scored logits when ``logit_standardization`` is set (the original's
    ``cfg.EXPERIMENT.LOGIT_STAND``, set by its ``--logit-stand``; not inverted), m and k the
    sample and class masks of ``confidence_masks``.
    """
    temperatures = (temperature, *EXTRA_TEMPERATURES)
    sample_mask, class_mask = confidence_masks(teacher_weak)
    sample_weight = sample_mask.to(student_weak.dtype).mean()
    class_weight = class_mask.to(student_weak.dtype).mean()
    kd_views = [student_weak, teacher_weak, student_strong, teacher_strong]
    if logit_standardization:
        kd_views = [zscore(z) for z in kd_views]
    s_weak, t_weak, s_strong, t_strong = kd_views
    strong_sum = (_summed(kd_loss, s_strong, t_strong, (temperature, *STRONG_VIEW_EXTRA_TEMPERATURES))
                  + _summed(kd_loss, s_weak, t_weak, WEAK_VIEW_REPEATS))
    return {
        "ce": F.cross_entropy(student_weak, target) + F.cross_entropy(student_strong, target),
        "kd": _summed(kd_loss, s_weak, t_weak, temperatures) * sample_weight + strong_sum,
        "cc": _summed(class_consistency_loss, student_weak, teacher_weak, temperatures) * class_weight,
        "bc": _summed(batch_consistency_loss, student_weak, teacher_weak, temperatures) * sample_weight,
    }
