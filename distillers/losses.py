"""Distillation losses as pure functions on tensors (public API, listed in the README, Methods).

Each returns a batch-mean scalar exactly as the reference implementation computes it
(tests/reference/LOSSES.md); loss weights and warm-up factors belong to the distillers.
"""
import math

import torch
import torch.nn.functional as F

from distillers.precision import full_precision


@full_precision
def zscore(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Logit standardization (Sun et al., CVPR 2024, Eq. 9): per row ``(z - mean) / (std + eps)``
    with the unbiased std over classes, as the reference's ``normalize``."""
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True)
    return (logits - mean) / (std + eps)


def _require_same_shape(loss: str, student: torch.Tensor, teacher: torch.Tensor, dims=None) -> None:
    """One-line error for a student/teacher pair whose shapes (or first ``dims`` sizes) differ."""
    if student.shape[:dims] != teacher.shape[:dims]:
        raise ValueError(f"{loss}: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} "
                         f"must agree in {'shape' if dims is None else f'the first {dims} sizes'}")


@full_precision
def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float) -> torch.Tensor:
    """Hinton et al. 2015: ``T² · mean_n KL(softmax(t/T) ‖ softmax(s/T))``."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()
    return kl * temperature ** 2


def _binary_log_probs(logits: torch.Tensor, target_mask: torch.Tensor, temperature: float):
    """log of (p[target], Σ_{c≠target} p[c]) with p = softmax(z/T): DKD's binary distribution."""
    p = F.softmax(logits / temperature, dim=1)
    p_target = (p * target_mask).sum(dim=1)
    p_rest = (p * (1 - target_mask)).sum(dim=1)
    return torch.stack([p_target, p_rest], dim=1).log()


@full_precision
def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
             alpha: float, beta: float, temperature: float) -> torch.Tensor:
    """Decoupled KD (Zhao et al., CVPR 2022, Eq. 7): ``alpha·TCKD + beta·NCKD``, each T²-scaled.

    TCKD is the KL between the binary (target, non-target) probabilities; NCKD the KL between
    the distributions over the non-target classes, obtained as the reference does by
    subtracting 1000 from the target logit (after dividing by T) before the softmax.
    """
    _require_same_shape("dkd_loss", student_logits, teacher_logits)
    num_classes = student_logits.shape[1]
    if num_classes < 3:
        raise ValueError(f"dkd_loss needs at least 3 classes (NCKD is over the non-target "
                         f"classes); got {num_classes}")
    mask = F.one_hot(target, num_classes).to(student_logits.dtype)
    log_b_s = _binary_log_probs(student_logits, mask, temperature)
    log_b_t = _binary_log_probs(teacher_logits, mask, temperature)
    tckd = (log_b_t.exp() * (log_b_t - log_b_s)).sum()
    log_q_s = F.log_softmax(student_logits / temperature - 1000.0 * mask, dim=1)
    log_q_t = F.log_softmax(teacher_logits / temperature - 1000.0 * mask, dim=1)
    nckd = (log_q_t.exp() * (log_q_t - log_q_s)).sum()
    return (alpha * tckd + beta * nckd) * temperature ** 2 / target.shape[0]


def _mean_pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean over rows of the Pearson correlation of ``a[i]`` and ``b[i]`` (DIST's eps 1e-8)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return ((a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)).mean()


@full_precision
def dist_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
              beta: float, gamma: float, tau: float) -> torch.Tensor:
    """DIST (Huang et al., NeurIPS 2022, Eqs. 5-8): ``τ²·(β·inter + γ·intra)``.

    With y = softmax(z/τ): inter = 1 − mean over samples of Pearson(y_s[i], y_t[i]); intra =
    the same over classes (columns), which is undefined for a batch of one sample.
    """
    _require_same_shape("dist_loss", student_logits, teacher_logits)
    if student_logits.shape[0] < 2:
        raise ValueError(f"dist_loss needs a batch of at least 2 samples (its intra-class "
                         f"term correlates each class over the batch); got {student_logits.shape[0]}")
    y_s = F.softmax(student_logits / tau, dim=1)
    y_t = F.softmax(teacher_logits / tau, dim=1)
    inter = 1 - _mean_pearson_rows(y_s, y_t)
    intra = 1 - _mean_pearson_rows(y_s.t(), y_t.t())
    return tau ** 2 * (beta * inter + gamma * intra)


@full_precision
def fitnet_loss(regressed_student_feature: torch.Tensor,
                teacher_feature: torch.Tensor) -> torch.Tensor:
    """FitNets (Romero et al., ICLR 2015, Eq. 3): hint loss, here the mean squared error of
    the regressed student map and the teacher's map, averaged over all elements (mdistiller)."""
    _require_same_shape("fitnet_loss", regressed_student_feature, teacher_feature)
    return F.mse_loss(regressed_student_feature, teacher_feature)


@full_precision
def srrl_feature_loss(connected_student_feature: torch.Tensor,
                      teacher_feature: torch.Tensor) -> torch.Tensor:
    """SRRL feature matching (Yang et al., ICLR 2021, L_FM of Eq. 8) as the official code's
    ``statm_loss``: squared gap of the per-channel spatial means, mean over channels and batch.
    The spatial sizes of the two maps may differ."""
    _require_same_shape("srrl_feature_loss", connected_student_feature, teacher_feature, dims=2)
    student_means = connected_student_feature.flatten(2).mean(dim=2)
    teacher_means = teacher_feature.flatten(2).mean(dim=2)
    return (student_means - teacher_means).pow(2).mean()


@full_precision
def srrl_sr_loss(student_logits_through_teacher_head: torch.Tensor,
                 teacher_logits: torch.Tensor) -> torch.Tensor:
    """SRRL softmax regression (Yang et al., ICLR 2021, L_SR of Eq. 8): the teacher's classifier
    applied to the connected student feature should give the teacher's logits (element MSE)."""
    _require_same_shape("srrl_sr_loss", student_logits_through_teacher_head, teacher_logits)
    return F.mse_loss(student_logits_through_teacher_head, teacher_logits)


@full_precision
def one_kl_loss(branch_logits: torch.Tensor, ensemble_logits: torch.Tensor,
                temperature: float) -> torch.Tensor:
    """ONE (Lan et al., NeurIPS 2018, Eq. 5), summed over the branches as the official code:
    ``Σ_b T² · Σ_{n,c} q (log q − log_softmax(b/T)) / N`` with ``q = softmax(e/T) + 1e-7``
    held constant, so the ensemble teaches the branches and is not pulled towards them.

    ``branch_logits`` is ``[B, N, C]`` (B branches), ``ensemble_logits`` ``[N, C]``.
    """
    if branch_logits.dim() != 3 or branch_logits.shape[1:] != ensemble_logits.shape:
        raise ValueError(f"one_kl_loss expects branch logits [B, N, C] and ensemble logits "
                         f"[N, C]; got {tuple(branch_logits.shape)} and {tuple(ensemble_logits.shape)}")
    q = (F.softmax(ensemble_logits.detach() / temperature, dim=1) + 1e-7).unsqueeze(0)
    log_p = F.log_softmax(branch_logits / temperature, dim=2)
    return temperature ** 2 * (q * (q.log() - log_p)).sum() / ensemble_logits.shape[0]


def sigmoid_rampup(epoch: float, length: float) -> float:
    """ONE's consistency weight (the mean-teacher ramp, Laine & Aila 2017):
    ``exp(−5 (1 − min(epoch, length)/length)²)``, clipped to [0, length]; 1 when length is 0."""
    if length <= 0:
        return 1.0
    phase = 1.0 - min(max(float(epoch), 0.0), float(length)) / length
    return math.exp(-5.0 * phase * phase)


# ---------------------------------------------------------------------------------------------
# Feature- and relation-based baselines of the benchmark (AT, NST, PKT, SP, RKD). Each equals
# mdistiller's implementation in value and gradient (tests/reference/BASELINES.md); which maps a
# method taps, and the loss weights, are the method's business.

def pool_to_common_size(student_map: torch.Tensor, teacher_map: torch.Tensor):
    """The benchmark's rule for maps of different sizes (AT, NST, VID): the larger map is
    average-pooled (adaptive) to the smaller one's height, as a square map."""
    s_height, t_height = student_map.shape[2], teacher_map.shape[2]
    if s_height > t_height:
        student_map = F.adaptive_avg_pool2d(student_map, (t_height, t_height))
    elif s_height < t_height:
        teacher_map = F.adaptive_avg_pool2d(teacher_map, (s_height, s_height))
    return student_map, teacher_map


def paired_maps(loss: str, student_maps, teacher_maps):
    """The (student, teacher) pairs of two equally long map lists; which maps pair up is the
    caller's choice, so lists of different lengths are refused rather than truncated."""
    student_maps, teacher_maps = list(student_maps), list(teacher_maps)
    if len(student_maps) != len(teacher_maps):
        raise ValueError(f"{loss}: {len(student_maps)} student maps and {len(teacher_maps)} "
                         f"teacher maps; pass equally long lists")
    return zip(student_maps, teacher_maps)


def attention_map(feature_map: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """AT's spatial attention (Zagoruyko & Komodakis, ICLR 2017, Eq. 2 with the channel mean):
    ``normalize_rows(mean_c f^p)`` flattened to ``[N, H·W]`` (L2, eps 1e-12)."""
    return F.normalize(feature_map.pow(p).mean(dim=1).flatten(1))


@full_precision
def at_loss(student_maps, teacher_maps, p: float = 2.0) -> torch.Tensor:
    """Attention transfer: ``Σ_stages mean_{n,hw} (Q_s − Q_t)²`` with Q = ``attention_map``,
    maps first brought to a common size (``pool_to_common_size``)."""
    total = 0.0
    for f_s, f_t in paired_maps("at_loss", student_maps, teacher_maps):
        f_s, f_t = pool_to_common_size(f_s, f_t)
        total = total + (attention_map(f_s, p) - attention_map(f_t, p)).pow(2).mean()
    return total


def _squared_poly_kernel_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``mean_{n,i,j} (a[n,i] · b[n,j])²``: NST's polynomial kernel (degree 2, c = 0)."""
    return torch.bmm(a, b.transpose(1, 2)).pow(2).mean()


@full_precision
def nst_loss(student_maps, teacher_maps) -> torch.Tensor:
    """Neuron selectivity transfer (Huang & Wang 2017), the squared MMD with the polynomial
    kernel ``k(x, y) = (xᵀy)²`` between the channels of the two maps, each channel's spatial
    response L2-normalised: ``Σ_stages [K(t,t) + K(s,s) − 2 K(s,t)]`` (K a kernel mean; the
    teacher-only term is detached as in the reference)."""
    total = 0.0
    for f_s, f_t in paired_maps("nst_loss", student_maps, teacher_maps):
        f_s, f_t = pool_to_common_size(f_s, f_t)
        f_s = F.normalize(f_s.flatten(2), dim=2)
        f_t = F.normalize(f_t.flatten(2), dim=2)
        total = total + (_squared_poly_kernel_mean(f_t, f_t).detach()
                         + _squared_poly_kernel_mean(f_s, f_s)
                         - 2 * _squared_poly_kernel_mean(f_s, f_t))
    return total


def _cosine_affinity_rows(features: torch.Tensor, eps: float) -> torch.Tensor:
    """PKT's conditional probabilities: cosine similarities mapped to [0, 1], rows summing to 1."""
    unit = features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)
    unit = torch.where(torch.isnan(unit), torch.zeros_like(unit), unit)
    similarity = (unit @ unit.t() + 1.0) / 2.0
    return similarity / similarity.sum(dim=1, keepdim=True)


@full_precision
def pkt_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor,
             eps: float = 1e-7) -> torch.Tensor:
    """Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018): with P the row-normalised
    cosine affinities of the batch, ``mean_{i,j} P_t log((P_t + eps) / (P_s + eps))``."""
    _require_same_shape("pkt_loss", student_feature, teacher_feature, dims=1)
    p_s = _cosine_affinity_rows(student_feature.flatten(1), eps)
    p_t = _cosine_affinity_rows(teacher_feature.flatten(1), eps)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


@full_precision
def sp_loss(student_maps, teacher_maps) -> torch.Tensor:
    """Similarity-preserving KD (Tung & Mori, ICCV 2019, Eq. 4): with G = row-L2-normalised
    ``F Fᵀ`` over the batch (F the flattened map), ``Σ_stages ‖G_t − G_s‖²_F / N²``."""
    total = 0.0
    for f_s, f_t in paired_maps("sp_loss", student_maps, teacher_maps):
        _require_same_shape("sp_loss", f_s, f_t, dims=1)
        batch = f_s.shape[0]
        f_s, f_t = f_s.reshape(batch, -1), f_t.reshape(batch, -1)
        g_s = F.normalize(f_s @ f_s.t())
        g_t = F.normalize(f_t @ f_t.t())
        total = total + (g_t - g_s).pow(2).sum() / (batch * batch)
    return total


def _normalised_distances(e: torch.Tensor, squared: bool, eps: float) -> torch.Tensor:
    """Euclidean distances of the rows (squared distances clamped at ``eps``), diagonal 0, over
    their mean over the non-zero ones. No entry is negative, so the sum of the non-zero ones is
    the sum of all: no boolean selection (a read of the device to size it, on a GPU)."""
    sq_norms = e.pow(2).sum(dim=1)
    d = (sq_norms.unsqueeze(1) + sq_norms.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps)
    if not squared:
        d = d.sqrt()
    d = d * (1.0 - torch.eye(len(e), dtype=d.dtype, device=d.device))
    return d / (d.sum() / (d > 0).sum())


def _triplet_angles(e: torch.Tensor) -> torch.Tensor:
    """cos of the angle at j between i and k, ``⟨(e_i − e_j)/‖·‖, (e_k − e_j)/‖·‖⟩``, flat."""
    directions = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
    return torch.bmm(directions, directions.transpose(1, 2)).reshape(-1)


@full_precision
def rkd_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor,
             distance_weight: float = 25.0, angle_weight: float = 50.0,
             squared: bool = False, eps: float = 1e-12) -> torch.Tensor:
    """Relational KD (Park et al., CVPR 2019, Eqs. 4-7): ``distance_weight · Huber(ψ_D_s, ψ_D_t)
    + angle_weight · Huber(ψ_A_s, ψ_A_t)``; ψ_D the pairwise distances divided by their mean
    over the non-zero ones, ψ_A the cosines of all triplet angles, Huber the smooth L1 (δ = 1)
    averaged over the entries. The teacher's side carries no gradient."""
    _require_same_shape("rkd_loss", student_feature, teacher_feature, dims=1)
    student = student_feature.reshape(student_feature.shape[0], -1)
    teacher = teacher_feature.reshape(teacher_feature.shape[0], -1)
    with torch.no_grad():
        t_distances = _normalised_distances(teacher, squared, eps)
        t_angles = _triplet_angles(teacher)
    loss_distance = F.smooth_l1_loss(_normalised_distances(student, squared, eps), t_distances)
    loss_angle = F.smooth_l1_loss(_triplet_angles(student), t_angles)
    return distance_weight * loss_distance + angle_weight * loss_angle
