"""In-memory image sets (CIFAR-100, synthetic data): uint8 HWC arrays and their labels.

Both loaders read this one form: the torch loader through ``ArrayDataset`` (PIL images, as
torchvision's CIFAR classes hand them to the transforms) and the GPU loader as one tensor.
"""
from typing import Callable, NamedTuple, Optional

import numpy as np
from PIL import Image
from torch.utils.data import Dataset


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
