"""CRD (Tian et al., ICLR 2020, "Contrastive representation distillation"): the embeddings,
the memory bank over the training set and the NCE loss, as mdistiller's ``CRD.py`` computes
them (tests/reference/BASELINES.md).

Randomness stays outside: the indices of each sample's contrast set (its own index first, then
``nce_k`` negatives) are an argument, so the caller owns the sampling and its state.
"""
import math
from typing import Optional, Tuple

import torch
from torch import nn

from distillers.precision import full_precision


class CRDEmbedding(nn.Module):
    """The projection head of one side (student or teacher), sized from its pooled feature's
    width: a linear projection of the (flattened) feature followed by L2 normalisation (no eps,
    as the reference). Keys ``linear.weight``, ``linear.bias`` as the reference's ``Embed``."""

    def __init__(self, in_dim: int, out_dim: int = 128):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x.reshape(x.shape[0], -1))
        return x / x.pow(2).sum(dim=1, keepdim=True).pow(0.5)


def contrast_scores(embedding: torch.Tensor, memory: torch.Tensor, contrast_index: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """``exp(⟨memory[idx], v⟩ / T)`` for each sample's contrast set: ``[N, K+1]``, column 0 the
    positive. The memory rows carry no gradient."""
    rows = memory.index_select(0, contrast_index.reshape(-1)).detach()
    rows = rows.view(contrast_index.shape[0], contrast_index.shape[1], -1)
    return torch.exp(torch.bmm(rows, embedding.unsqueeze(2)).squeeze(2) / temperature)


def nce_loss(probabilities: torch.Tensor, num_data: int, eps: float = 1e-7) -> torch.Tensor:
    """NCE with a uniform noise distribution Pn = 1/num_data and K noise samples (Eq. 18):
    ``−Σ_n [log(P₀ / (P₀ + K·Pn + eps)) + Σ_k log(K·Pn / (P_k + K·Pn + eps))] / N`` where P are
    the normalised scores ``[N, K+1]``, column 0 the positive."""
    batch, negatives = probabilities.shape[0], probabilities.shape[1] - 1
    noise = negatives / float(num_data)
    positive, negative = probabilities[:, 0], probabilities[:, 1:]
    log_d1 = torch.log(positive / (positive + (noise + eps)))
    log_d0 = torch.log(noise / (negative + (noise + eps)))
    return -(log_d1.sum() + log_d0.sum()) / batch


def momentum_rows(rows: torch.Tensor, embedding: torch.Tensor, momentum: float) -> torch.Tensor:
    """The memory update: ``normalize(momentum·row + (1 − momentum)·v)`` (L2, no eps)."""
    mixed = rows * momentum + embedding * (1 - momentum)
    return mixed / mixed.pow(2).sum(dim=1, keepdim=True).pow(0.5)


class ContrastMemory(nn.Module):
    """The two memory banks over the training set (``memory_v1``: student embeddings, against
    which the teacher's are scored; ``memory_v2``: teacher embeddings, for the student's) and
    the NCE normalisation constants ``normalizers`` (Z for the student side, then the teacher
    side; −1 until the first batch sets them to ``mean(scores)·num_data``).

    Initial rows are uniform in ``±1/sqrt(dim/3)`` as the reference draws them (``generator``
    makes that draw reproducible)."""

    def __init__(self, feature_dim: int, num_data: int, temperature: float = 0.07,
                 momentum: float = 0.5, generator: Optional[torch.Generator] = None):
        super().__init__()
        self.num_data, self.temperature, self.momentum = int(num_data), float(temperature), float(momentum)
        bound = 1.0 / math.sqrt(feature_dim / 3)
        for name in ("memory_v1", "memory_v2"):
            draw = torch.rand(num_data, feature_dim, generator=generator)
            self.register_buffer(name, draw.mul_(2 * bound).add_(-bound))
        self.register_buffer("normalizers", torch.full((2,), -1.0))

    def forward(self, student_embedding: torch.Tensor, teacher_embedding: torch.Tensor,
                contrast_index: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Normalised scores ``(P_student, P_teacher)`` ``[N, K+1]`` against the memory as it is;
        the first call fixes the normalisation constants. Call ``update`` afterwards."""
        scores_s = contrast_scores(student_embedding, self.memory_v2, contrast_index, self.temperature)
        scores_t = contrast_scores(teacher_embedding, self.memory_v1, contrast_index, self.temperature)
        with torch.no_grad():   # set where still unset, without reading the device
            first = torch.stack([scores_s.mean(), scores_t.mean()]) * self.num_data
            self.normalizers.copy_(torch.where(self.normalizers < 0, first, self.normalizers))
        return scores_s / self.normalizers[0], scores_t / self.normalizers[1]

    @torch.no_grad()
    def update(self, index: torch.Tensor, student_embedding: torch.Tensor,
               teacher_embedding: torch.Tensor) -> None:
        """Move the rows of the batch's samples towards their new embeddings (``momentum_rows``)."""
        for memory, embedding in ((self.memory_v1, student_embedding), (self.memory_v2, teacher_embedding)):
            rows = memory.index_select(0, index.reshape(-1))
            memory.index_copy_(0, index.reshape(-1), momentum_rows(rows, embedding.to(memory), self.momentum))


@full_precision
def crd_loss(student_probabilities: torch.Tensor, teacher_probabilities: torch.Tensor,
             num_data: int) -> torch.Tensor:
    """The CRD objective: NCE of the student's scores plus NCE of the teacher's."""
    return nce_loss(student_probabilities, num_data) + nce_loss(teacher_probabilities, num_data)
