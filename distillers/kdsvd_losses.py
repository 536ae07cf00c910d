"""KDSVD (Lee et al., ECCV 2018, "Self-supervised knowledge distillation using singular value
decomposition") as the benchmark computes it: pure functions, equal in value and gradient to
mdistiller's ``KDSVD.py`` (tests/reference/BASELINES.md).

Each map ``[N, C, H, W]`` is read as N matrices of ``(C·H) × W`` (the benchmark's reshape of
NCHW maps) and decomposed; the leading right singular vectors of the student are sign-aligned
to the teacher's, scaled by the teacher's normalised singular values, and the method matches
the radial-basis relations between the vectors of consecutive stages.
"""
import torch
import torch.nn.functional as F

from distillers.losses import paired_maps
from distillers.precision import full_precision


def _finite_or_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def leading_right_singular_vectors(feature_map: torch.Tensor, count: int):
    """``(s, v)``: the first ``count`` singular values (L2-normalised per sample) and right
    singular vectors (``[N, W, count]``, unit columns) of the map read as ``(C·H) × W``.
    A half-precision map is raised to float32 first: no half-precision SVD exists, and
    ``full_precision`` upcasts only the lists, tuples and dicts it is handed."""
    if feature_map.dim() != 4:
        raise ValueError(f"kdsvd: expected a map [N, C, H, W], got {tuple(feature_map.shape)}")
    n, c, h, w = feature_map.shape
    x = feature_map.reshape(n, c * h, w)
    x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    s, v = _finite_or_zero(s), _finite_or_zero(vh.mH)
    return F.normalize(s[:, :count], dim=1), F.normalize(v[:, :, :count], dim=1)


def align_signs(student_vectors: torch.Tensor, teacher_vectors: torch.Tensor) -> torch.Tensor:
    """For each teacher vector, the student vector of largest |cosine| with it, with the sign of
    that cosine (a singular vector's sign is arbitrary): ``[N, W, k_t]``. The choice carries no
    gradient; the chosen vectors do."""
    cosine = student_vectors.transpose(-2, -1) @ teacher_vectors
    best = cosine.abs().max(dim=1, keepdim=True).values
    selection = torch.where(best == cosine.abs(), torch.sign(cosine), torch.zeros_like(cosine))
    return student_vectors @ selection


def _rbf_relations(current: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """``exp(−(v_i − v'_j)² / 8)`` between the vectors' entries of two consecutive stages."""
    return torch.exp(-(current.unsqueeze(2) - previous.unsqueeze(1)).pow(2) / 8)


@full_precision
def kdsvd_loss(student_maps, teacher_maps, k: int = 1) -> torch.Tensor:
    """``Σ_{stages i ≥ 1} Σ (R_s − R_t)² / N`` with R the RBF relations between the (aligned,
    teacher-value-scaled) leading right singular vectors of stage i and stage i−1; the teacher
    keeps ``k`` vectors, the student ``k + 3`` candidates for the alignment. Non-finite terms
    count 0. Student and teacher maps must have equal widths stage by stage."""
    total, previous = 0.0, None
    for f_s, f_t in paired_maps("kdsvd_loss", student_maps, teacher_maps):
        if f_s.shape[3] != f_t.shape[3]:
            raise ValueError(f"kdsvd_loss: student {tuple(f_s.shape)} and teacher "
                             f"{tuple(f_t.shape)} maps must have the same width")
        s_t, v_t = leading_right_singular_vectors(f_t, k)
        _, v_s = leading_right_singular_vectors(f_s, k + 3)
        v_s = align_signs(v_s, v_t)
        scale = s_t.unsqueeze(1)
        v_t, v_s = v_t * scale, v_s * scale
        if previous is not None:
            v_s_prev, v_t_prev = previous
            gap = (_rbf_relations(v_s, v_s_prev) - _rbf_relations(v_t, v_t_prev).detach()).pow(2)
            total = total + _finite_or_zero(gap).sum() / f_s.shape[0]
        previous = (v_s, v_t)
    return total
