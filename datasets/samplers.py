"""What each epoch sees: the shuffled, sharded order of samples and one seed per sample.

Bit-exact resume needs an epoch to be a pure function of (seed, epoch, rank): the order comes from
``DistributedSampler`` (a ``torch.Generator`` seeded with seed + epoch), and each training sample's
augmentation from its own seed ``derive_seed(seed, epoch, index)``. Seeding per sample, rather
than reseeding torch's global RNG once per epoch, keeps the result independent of the number of
loader workers, of which worker gets which batch, and of the world size (sample i at epoch e is
cropped the same on any rank), and it never disturbs the trainer's own RNG stream.
"""
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.utils.data import DistributedSampler, Sampler

from utils.seeding import derive_seed


@contextmanager
def seeded_cpu_rng(sample_seed: int):
    """torch's CPU generator seeded with ``sample_seed`` inside the block (torchvision's random
    transforms draw from it), its previous state restored afterwards: with ``num_workers=0`` the
    trainer's RNG stream is left as it was."""
    state = torch.get_rng_state()
    torch.default_generator.manual_seed(sample_seed)
    try:
        yield
    finally:
        torch.set_rng_state(state)


def epoch_views(seed: int, epoch: int, dataset_size: int,
                padding: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The CIFAR recipe's view of every sample for one epoch: crop offsets (top, left) int64
    [N, 2], each uniform in [0, 2·padding], and flips bool [N] with probability 1/2 — the
    distribution of RandomCrop(padding=padding) + RandomHorizontalFlip.

    One table per (seed, epoch), drawn on the CPU from its own generator: both the torch loader
    and the GPU loader apply it, so sample i at epoch e gets the same view from either loader,
    on any rank and with any number of workers (and the teacher cache can look it up)."""
    generator = torch.Generator().manual_seed(derive_seed(seed, epoch, "views"))
    offsets = torch.randint(0, 2 * padding + 1, (dataset_size, 2), generator=generator)
    flips = torch.rand(dataset_size, generator=generator) < 0.5
    return offsets, flips


class SeededSampler(Sampler):
    """Yields ``(index, sample_seed)``: this rank's share of the epoch's shuffled order (padded as
    ``DistributedSampler`` pads, so every rank gets the same number of batches), each index with
    the seed of its augmentation. Call ``set_epoch`` before each epoch."""

    def __init__(self, dataset_size: int, *, seed: int, rank: int = 0, world_size: int = 1):
        self.order = DistributedSampler(range(dataset_size), num_replicas=world_size, rank=rank,
                                        shuffle=True, seed=seed, drop_last=False)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.order.set_epoch(epoch)
        self.epoch = epoch

    def indices(self) -> list[int]:
        """This rank's sample indices for the current epoch, in order."""
        return list(self.order)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.order:
            yield index, derive_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return len(self.order)


class ViewSampler(SeededSampler):
    """Yields ``(index, top, left, flip)``: this rank's share of the epoch's shuffled order (the
    same order as ``SeededSampler``), each index with its view from ``epoch_views``. For the
    in-memory CIFAR recipe of the torch loader; call ``set_epoch`` before each epoch.
    ``with_epoch``: the epoch is appended to each item (a dataset that draws more per sample,
    MLKD's strong view, seeds it from the epoch)."""

    def __init__(self, dataset_size: int, *, seed: int, padding: int, rank: int = 0,
                 world_size: int = 1, with_epoch: bool = False):
        super().__init__(dataset_size, seed=seed, rank=rank, world_size=world_size)
        self.padding, self.size, self.with_epoch = padding, dataset_size, with_epoch

    def __iter__(self) -> Iterator[tuple[int, int, int, bool]]:
        offsets, flips = epoch_views(self.seed, self.epoch, self.size, self.padding)
        offsets, flips = offsets.tolist(), flips.tolist()
        epoch = (self.epoch,) if self.with_epoch else ()
        for index in self.order:
            yield index, offsets[index][0], offsets[index][1], flips[index], *epoch


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` in order: disjoint shards without padding, so that
    counts summed over ranks see every validation sample exactly once (``DistributedSampler``
    would repeat samples to even the shards out)."""

    def __init__(self, dataset_size: int, *, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside [0, {world_size})")
        self.shard = range(rank, dataset_size, world_size)

    def indices(self) -> list[int]:
        return list(self.shard)

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard)

    def __len__(self) -> int:
        return len(self.shard)
