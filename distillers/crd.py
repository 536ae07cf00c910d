"""CRD (Tian et al., ICLR 2020): contrastive representation distillation. Each side's pooled
feature is embedded and scored against a memory bank of the other side's embeddings over the
whole training set, its own sample (the positive) against ``nce_k`` negatives, by NCE
(distillers/crd_losses.py, paper Eq. 18–19)."""
from typing import Optional

import torch
from torch import nn

from distillers import register_distiller
from distillers.base import FeatureDistiller
from distillers.crd_losses import ContrastMemory, CRDEmbedding, contrast_scores, crd_loss
from utils.collectives import gather_batch, process_rank
from utils.errors import UserError
from utils.ranges import AtLeastOneInt, Momentum, NonNegativeFloat, PositiveFloat
from utils.seeding import derive_seed

MODES = ("exact", "relax")


def uniform_below(bounds: torch.Tensor, generator: torch.Generator, columns: int) -> torch.Tensor:
    """``[B, columns]`` integers, row i uniform in ``[0, bounds[i])`` (``bounds`` ``[B, 1]``)."""
    raw = torch.randint(0, 2 ** 62, (bounds.shape[0], columns), generator=generator,
                        device=bounds.device)
    return raw % bounds


class ContrastSampler(nn.Module):
    """Each sample's contrast set, as mdistiller's ``CIFAR100InstanceSample`` draws it: the
    positive first (``exact``: the sample itself; ``relax``: a random sample of its class), then
    ``k`` negatives uniform over the training samples of the OTHER classes, with replacement
    (as its ImageNet sampler; its CIFAR one draws a sample's k distinct ones: the same law for
    each negative, so the same expected loss and gradient).

    A batch's draw comes from a generator seeded with (run seed, number of draws so far), so the
    ``draws`` buffer is its whole state (resume continues the stream bit for bit) and no loader
    worker is involved. Every process draws for the global batch, in the order of its sorted
    indices, so a sample's set does not depend on which process holds it, nor where."""

    def __init__(self, train_targets: torch.Tensor, k: int, mode: str, seed: int):
        super().__init__()
        self.k, self.mode, self.seed = int(k), mode, int(seed)
        counts = torch.bincount(train_targets)
        self.register_buffer("labels", train_targets, persistent=False)
        self.register_buffer("by_class", torch.argsort(train_targets, stable=True), persistent=False)
        self.register_buffer("class_counts", counts, persistent=False)
        self.register_buffer("class_starts", torch.cumsum(counts, 0) - counts, persistent=False)
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))
        self._draws_on_host: Optional[int] = None   # ``draws``, read once, then counted here

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._draws_on_host = None   # a loaded count is read again at the next draw

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """``[B, 1 + k]`` dataset indices for the samples ``indices`` (the global batch)."""
        device = self.labels.device
        if self._draws_on_host is None:   # one read of the device after construction or a load
            self._draws_on_host = int(self.draws)
        generator = torch.Generator(device).manual_seed(derive_seed(self.seed, "crd", self._draws_on_host))
        self._draws_on_host += 1
        self.draws += 1
        ordered, order = torch.sort(indices.to(device), stable=True)
        classes = self.labels[ordered]
        counts, starts = self.class_counts[classes, None], self.class_starts[classes, None]
        positive = ordered[:, None]
        if self.mode == "relax":
            positive = self.by_class[starts + uniform_below(counts, generator, 1)]
        # the other classes' samples are by_class without the block of the sample's class
        offsets = uniform_below(len(self.labels) - counts, generator, self.k)
        negatives = self.by_class[offsets + counts * (offsets >= starts)]
        drawn = torch.cat([positive, negatives], dim=1)
        return torch.empty_like(drawn).index_copy_(0, order, drawn)


@register_distiller("crd")
class CRD(FeatureDistiller):
    """loss = ce_weight·CE + feat_weight·(NCE_student + NCE_teacher) on ``pooled_feat``.

    Defaults are mdistiller's (CE 1, CRD 0.8, 128-d embeddings, K = 16384, momentum 0.5,
    T = 0.07, exact mode); the embeddings are sized from the probed pooled-feature widths. The
    memory bank (``train_size`` rows, indexed by ``batch.indices``) and the draw count are
    buffers: checkpointed with the method, never exported with the student.

    Under DDP each process scores its own samples; the bank is updated with the gathered
    embeddings of the global batch, and the NCE constants are fixed from the global batch's
    scores, so N processes x B/N update and train as one process x B.
    """

    captures_in_cuda_graph = False
    cuda_graph_refusal = "draws each batch's negatives from a generator seeded on the host per step"

    @classmethod
    def smoke_section(cls, section, train_size):
        """A smoke run's few images cannot hold the recipe's 16384 negatives: at most all the
        others."""
        return {**section, "nce_k": min(section["nce_k"], train_size - 1)}

    def __init__(self, student, teacher, *, train_size, train_targets, seed, student_pooled_dim,
                 teacher_pooled_dim, feat_weight: NonNegativeFloat = 0.8,
                 embed_dim: AtLeastOneInt = 128, nce_k: AtLeastOneInt = 16384,
                 nce_momentum: Momentum = 0.5, nce_temperature: PositiveFloat = 0.07,
                 mode: str = "exact", **weights):
        super().__init__(student, teacher, feat_weight=feat_weight, **weights)
        if mode not in MODES:
            raise UserError(f"distiller.mode='{mode}': choose one of {', '.join(MODES)}")
        if not 1 <= nce_k < train_size:
            raise UserError(f"distiller.nce_k={nce_k} must be in [1, {train_size}) for a training "
                            f"set of {train_size} images; lower it")
        if len(train_targets) != train_size or int(torch.bincount(train_targets).max()) == train_size:
            raise UserError(f"crd needs the labels of all {train_size} training images, in at "
                            f"least two classes (its negatives come from the other classes)")
        self.num_data = int(train_size)
        self.formula = (f"NCE(embed(pooled_s), embed(pooled_t); K={nce_k}, T={nce_temperature:g}, "
                        f"momentum {nce_momentum:g}, {mode})")
        self.embed_s = self.place_like_student(CRDEmbedding(student_pooled_dim, embed_dim))
        self.embed_t = self.place_like_student(CRDEmbedding(teacher_pooled_dim, embed_dim))
        initial = torch.Generator().manual_seed(derive_seed(seed, "crd memory"))
        self.memory = self.place_like_student(ContrastMemory(
            embed_dim, train_size, nce_temperature, nce_momentum, generator=initial))
        self.sampler = self.place_like_student(ContrastSampler(train_targets, nce_k, mode, seed))
        # every process updates its bank identically: DDP need not broadcast it at each step
        self._ddp_params_and_buffers_to_ignore = ["memory.memory_v1", "memory.memory_v2"]
        self._normalizers_fixed = False   # known set: no device read per step to ask

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._normalizers_fixed = False   # loaded constants are checked again at the next batch

    def feature_loss(self, student_out, teacher_out, batch, epoch):
        if batch.indices is None:
            raise UserError("crd scores each sample against its row of the memory bank: the "
                            "batch must carry the samples' dataset indices (Batch.indices)")
        dtype = self.memory.memory_v1.dtype
        with torch.autocast(batch.images.device.type, enabled=False):   # exp(score / T) in full precision
            v_s = self.embed_s(student_out["pooled_feat"].to(dtype))
            v_t = self.embed_t(teacher_out["pooled_feat"].to(dtype))
            indices = gather_batch(batch.indices)
            first = process_rank() * len(batch)
            contrast = self.sampler(indices)[first:first + len(batch)]
            self.fix_normalizers(v_s, v_t, contrast)
            p_s, p_t = self.memory(v_s, v_t, contrast)
            self.memory.update(indices, gather_batch(v_s.detach()), gather_batch(v_t.detach()))
            return crd_loss(p_s, p_t, self.num_data)

    @torch.no_grad()
    def fix_normalizers(self, v_s, v_t, contrast) -> None:
        """The first batch sets Z = mean(scores)·train_size, the mean over the global batch (each
        process's rows have K+1 scores, so it is the mean of the gathered row means)."""
        memory = self.memory
        if not self._normalizers_fixed and bool((memory.normalizers < 0).any()):
            for side, (v, bank) in enumerate(((v_s, memory.memory_v2), (v_t, memory.memory_v1))):
                scores = contrast_scores(v, bank, contrast, memory.temperature)
                memory.normalizers[side] = gather_batch(scores.mean(dim=1)).mean() * memory.num_data
        self._normalizers_fixed = True
