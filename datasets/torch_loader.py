"""``torch.utils.data.DataLoader``s whose epochs depend only on (seed, epoch, rank).

The sampler (``SeededSampler``) decides the order and hands each index over with its sample seed;
``SeededAugmentation`` runs the dataset's random transforms under that seed. The sampler runs in
the main process and the seed travels with the index, so persistent workers, which keep the
dataset object they were started with, still see each new epoch. See datasets/samplers.py for why
the seed is per sample. In-memory CIFAR-recipe sets (``ArrayViews``) take their views from the
epoch's table instead (``ViewSampler``), the one the GPU loader applies: same view per sample.
Both loaders yield ``utils.batch.Batch``es: each item carries its dataset index, and
``collate_batch`` stacks them.
"""
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from datasets.arrays import ArrayViews
from datasets.samplers import SeededSampler, ShardSampler, ViewSampler, derive_seed, seeded_cpu_rng
from utils.batch import Batch, BatchViews


class Indexed(Dataset):
    """Item ``index`` -> ``(*dataset[index], index)``: the validation items with their row."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return (*self.dataset[index], index)


def collate_batch(items) -> Batch:
    """``(image, target, index)`` items -> one ``Batch`` (images stacked, targets and indices int64)."""
    images, targets, indices = default_collate(items)
    return Batch(images, targets, indices)


def collate_view_batch(items) -> Batch:
    """``(image, target, index, top, left, flip)`` items (``ArrayViews``) -> one ``Batch`` that
    reports its views, as the GPU loader's do."""
    images, targets, indices, tops, lefts, flips = default_collate(items)
    return Batch(images, targets, indices,
                 BatchViews(indices, torch.stack([tops, lefts], dim=1), flips.bool()))


def collate_two_view_batch(items) -> Batch:
    """``ArrayViews`` items with the strong view (a view batch's fields, then the strong view) -> one ``Batch``
    with ``strong_images``."""
    *weak, strong = zip(*items)
    return collate_view_batch(list(zip(*weak))).replace(strong_images=default_collate(strong))


class SeededAugmentation(Indexed):
    """Item ``(index, sample_seed)`` -> ``(*dataset[index], index)``, the sample computed under
    ``samplers.seeded_cpu_rng(sample_seed)``."""

    def __getitem__(self, item: tuple[int, int]):
        index, sample_seed = item
        with seeded_cpu_rng(sample_seed):
            return super().__getitem__(index)


class EpochDataLoader(DataLoader):
    """A training DataLoader with ``set_epoch``: it fixes the epoch's order and augmentation, and
    gives the loader a generator seeded from (seed, epoch), from which DataLoader draws its
    worker base seed instead of drawing from (and advancing) torch's global RNG."""

    def __init__(self, dataset: Dataset, *, seed: int, rank: int, world_size: int, **kwargs):
        """An ``ArrayViews`` takes its views (and, with the strong view, the epoch) from the
        sampler, which reads the epoch's table; any other dataset draws its own, per-sample
        seeded."""
        shard = dict(seed=seed, rank=rank, world_size=world_size)
        if isinstance(dataset, ArrayViews):
            strong = dataset.strong_seed is not None
            sampler = ViewSampler(len(dataset), padding=dataset.padding, with_epoch=strong, **shard)
            kwargs["collate_fn"] = collate_two_view_batch if strong else collate_view_batch
        else:
            sampler, dataset = SeededSampler(len(dataset), **shard), SeededAugmentation(dataset)
        super().__init__(dataset, sampler=sampler, **kwargs)
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch, "workers"))


def build_torch_loaders(train_set: Dataset, val_set: Dataset, *, batch_size: int,
                        val_batch_size: int, num_workers: int, seed: int, rank: int,
                        world_size: int, device) -> tuple[EpochDataLoader, DataLoader]:
    """Train: shuffled, DistributedSampler shards, no drop_last (as the reference recipes).
    Val: in order, disjoint unpadded shards. Pinned memory for CUDA; persistent workers."""
    common = dict(num_workers=num_workers, persistent_workers=num_workers > 0,
                  pin_memory=torch.device(device).type == "cuda", collate_fn=collate_batch)
    train = EpochDataLoader(train_set, seed=seed, rank=rank, world_size=world_size,
                            batch_size=batch_size, drop_last=False, **common)
    val = DataLoader(Indexed(val_set), batch_size=val_batch_size,
                     sampler=ShardSampler(len(val_set), rank=rank, world_size=world_size),
                     **common)
    return train, val
