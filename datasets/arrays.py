"""In-memory image sets (CIFAR-100, synthetic data): uint8 HWC arrays and their labels.

Both loaders read this one form: the torch loader through ``ArrayDataset`` (PIL images, as
torchvision's CIFAR classes hand them to the transforms) and the GPU loader as one tensor.
"""
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from datasets.strong_augment import strong_view_of_row
from datasets.transforms import CIFAR_PADDING, cifar_view


class ImageArrays(NamedTuple):
    images: np.ndarray   # uint8 [N, H, W, 3]
    targets: np.ndarray  # int64 [N]


class ArrayDataset(Dataset):
    """``(transform(PIL image), label)`` for each row of an ``ImageArrays``."""

    def __init__(self, arrays: ImageArrays, transform: Optional[Callable] = None):
        self.arrays, self.transform = arrays, transform

    def __len__(self) -> int:
        return len(self.arrays.targets)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.arrays.images[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.arrays.targets[index])


class ArrayViews(ArrayDataset):
    """Training items of the CIFAR recipe with the view given: item ``(index, top, left, flip)``
    -> ``(normalised view [C, H, W], label, index, top, left, flip)``. The sampler
    (``samplers.ViewSampler``) hands each index its view from the epoch's table, the one the GPU
    loader applies too.

    With ``strong_seed``, MLKD's strong view of each sample too: item ``(index, top, left, flip,
    epoch)`` -> the weak item and, last, the strong view, a function of (strong_seed, epoch,
    index) (``strong_augment.strong_view_of_row``; independent of the weak view, as the
    original's two transform pipelines). The epoch travels with the item, as the sample seed
    does for ``SeededAugmentation``, so persistent workers see every new epoch."""

    def __init__(self, arrays: ImageArrays, mean: Sequence[float], std: Sequence[float],
                 padding: int = CIFAR_PADDING, *, strong_seed: Optional[int] = None):
        super().__init__(arrays)
        self.mean, self.std, self.padding, self.strong_seed = mean, std, padding, strong_seed

    def __getitem__(self, item: tuple):
        index, top, left, flip = item[:4]   # then the epoch, only when a strong view is drawn
        pixels = self.arrays.images[index]
        weak = (cifar_view(Image.fromarray(pixels), top, left, flip, self.mean, self.std, self.padding),
                int(self.arrays.targets[index]), index, top, left, flip)
        if self.strong_seed is None:
            return weak
        epoch = item[4]
        return (*weak, strong_view_of_row(pixels, self.strong_seed, epoch, index, self.mean, self.std,
                                          self.padding))
