"""A device-resident loader for small uint8 image sets (CIFAR-100, synthetic data).

The whole set lives as one uint8 tensor on the device; a batch is gathered, cropped, flipped and
normalised there with tensor ops, so no CPU worker sits in the hot loop (airbench's habit). The
augmentation is the torchvision CIFAR recipe, RandomCrop(size, padding=4) with zero fill, then
RandomHorizontalFlip, ToTensor, Normalize, with the same distribution: both crop offsets uniform
in [0, 2·padding] and a flip with probability 1/2. It runs on any device, CPU included.

Determinism: the order is ``SeededSampler``'s for (seed, epoch, rank), the torch loader's too;
the views of all samples are the epoch's table ``samplers.epoch_views(seed, epoch)``, which the
torch loader applies too: sample i gets the same view, pixel for pixel, from either loader and
on whichever rank it lands.

Each ``Batch`` carries its samples' dataset indices; a training batch also carries their
``BatchViews`` (crop offsets (top, left) in the padded image, flip flags), which the cache of
teacher logits over the training views looks up. Validation batches are not augmented and carry
no views, so nothing can look a validation row up in a cache of training rows.

MLKD's strong view (``strong_view=True``) has no tensor version: its RandAugment operations are
Pillow's. Each training batch's strong views are drawn on the CPU, in the main process, from a
host copy of the uint8 set, by the function the torch loader's workers call
(``strong_augment.strong_view_of_row``): the same pixels for the same (seed, epoch, index). The
stacked views go to the device from pinned memory without blocking. Without it nothing of this
is kept or run.
"""
import math
from collections.abc import Iterator
from typing import Sequence

import torch
import torch.nn.functional as F

from datasets.arrays import ImageArrays
from datasets.samplers import SeededSampler, ShardSampler, epoch_views
from datasets.strong_augment import strong_view_of_row
from datasets.transforms import CIFAR_PADDING
from utils.batch import Batch, BatchViews


def normalize_batch(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 [B, C, H, W] -> float32, as ToTensor (/255) then Normalize ((x - mean) / std).

    Every division is by a tensor on the images' device: CUDA divides by a Python scalar as a
    multiplication by its reciprocal, one rounding off torchvision's CPU result; true division
    gives the CPU pipeline's floats bit for bit."""
    scale = torch.full((), 255.0, device=images.device)
    return images.float().div(scale).sub(mean.view(1, -1, 1, 1)).div(std.view(1, -1, 1, 1))


def augment_batch(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor,
                  mean: torch.Tensor, std: torch.Tensor,
                  padding: int = CIFAR_PADDING) -> torch.Tensor:
    """The given views of uint8 images [B, C, H, W]: zero-pad by ``padding``, crop H x W at
    ``offsets`` (top, left), mirror where ``flips``, normalise. One gather: the flip is folded
    into the column indices (column j of a mirrored crop is column W-1-j of the crop)."""
    batch, channels, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets = offsets.to(device)
    rows = offsets[:, :1] + torch.arange(height, device=device)
    columns = torch.arange(width, device=device).expand(batch, width)
    columns = offsets[:, 1:] + torch.where(flips.to(device)[:, None], width - 1 - columns, columns)
    crops = padded[torch.arange(batch, device=device)[:, None, None, None],
                   torch.arange(channels, device=device)[None, :, None, None],
                   rows[:, None, :, None], columns[:, None, None, :]]
    return normalize_batch(crops, mean, std)


class GpuCifarLoader:
    """``Batch``es (images float32 [B, C, H, W], targets, indices, views) of an ``ImageArrays`` held
    on ``device``. ``train=True``: shuffled, padded to equal shards per rank, augmented (call
    ``set_epoch`` before each epoch); ``train=False``: in order, shard ``rank::world_size``
    without padding, normalised only. The last batch may be smaller (no drop_last).
    ``strong_view``: training batches carry ``strong_images`` too (MLKD's, drawn on the CPU)."""

    def __init__(self, arrays: ImageArrays, *, batch_size: int, mean: Sequence[float],
                 std: Sequence[float], device="cpu", train: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1, padding: int = CIFAR_PADDING,
                 strong_view: bool = False):
        self.images = torch.as_tensor(arrays.images).permute(0, 3, 1, 2).contiguous().to(device)
        self.targets = torch.as_tensor(arrays.targets, dtype=torch.int64).to(device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device)
        self.std = torch.tensor(std, dtype=torch.float32, device=device)
        self.batch_size, self.train, self.seed, self.padding = batch_size, train, seed, padding
        # the strong view's PIL input, on the host whatever the device: the uint8 rows as read
        self.host_images = arrays.images if strong_view and train else None
        self.statistics = (tuple(mean), tuple(std))
        self.epoch = 0
        size = len(self.targets)
        self.sampler = (SeededSampler(size, seed=seed, rank=rank, world_size=world_size) if train
                        else ShardSampler(size, rank=rank, world_size=world_size))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.train:
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def epoch_views(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Crop offsets [N, 2] and flips [N] of every sample for the current epoch."""
        offsets, flips = epoch_views(self.seed, self.epoch, len(self.targets), self.padding)
        return offsets.to(self.images.device), flips.to(self.images.device)

    def strong_images(self, rows: Sequence[int]) -> torch.Tensor:
        """MLKD's strong views [B, C, H, W] of dataset ``rows`` for the current epoch, drawn on
        the CPU and moved to the loader's device (without blocking, from pinned memory, on CUDA)."""
        mean, std = self.statistics
        views = torch.stack([strong_view_of_row(self.host_images[row], self.seed, self.epoch, row,
                                                mean, std, self.padding) for row in rows])
        device = self.images.device
        if device.type == "cuda":
            return views.pin_memory().to(device, non_blocking=True)
        return views.to(device)

    def __iter__(self) -> Iterator[Batch]:
        host_order = torch.tensor(self.sampler.indices(), dtype=torch.int64)
        order = host_order.to(self.images.device)
        offsets, flips = self.epoch_views() if self.train else (None, None)
        for start in range(0, len(order), self.batch_size):
            indices = order[start:start + self.batch_size]
            raw, targets = self.images[indices], self.targets[indices]
            if not self.train:
                yield Batch(normalize_batch(raw, self.mean, self.std), targets, indices)
                continue
            views = BatchViews(indices, offsets[indices], flips[indices])
            images = augment_batch(raw, views.offsets, views.flips, self.mean, self.std, self.padding)
            strong = (None if self.host_images is None else
                      self.strong_images(host_order[start:start + self.batch_size].tolist()))
            yield Batch(images, targets, indices, views, strong)
