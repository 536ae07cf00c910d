"""Distillation losses as pure functions on tensors (public API, see DESIGN.md).

Each returns a batch-mean scalar exactly as the reference implementation computes it
(tests/reference/LOSSES.md); loss weights and warm-up factors belong to the distillers.
"""
import torch
import torch.nn.functional as F


def zscore(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Logit standardization (Sun et al., CVPR 2024, Eq. 9): per row ``(z - mean) / (std + eps)``
    with the unbiased std over classes, as the reference's ``normalize``."""
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True)
    return (logits - mean) / (std + eps)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float) -> torch.Tensor:
    """Hinton et al. 2015: ``T² · mean_n KL(softmax(t/T) ‖ softmax(s/T))``."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()
    return kl * temperature ** 2
