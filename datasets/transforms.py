"""The image pipelines of the reference recipes (tests/reference/recipes.md) and their statistics.

Small images (CIFAR and anything up to 64 pixels) take the CIFAR recipe: random crop with 4-pixel
zero padding and a horizontal flip; larger ones take the ImageNet recipe: RandomResizedCrop and a
flip for training, resize to 256/224 of the size and centre-crop for validation.
"""
from typing import Sequence

from torchvision import transforms as T
from torchvision.transforms import functional as TF

CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_PADDING = 4
SMALL_IMAGE_MAX = 64  # up to this size, images take the CIFAR recipe


def is_small(image_size: int) -> bool:
    return image_size <= SMALL_IMAGE_MAX


def image_transforms(image_size: int, mean: Sequence[float], std: Sequence[float], *,
                     train: bool, resize: bool = False) -> T.Compose:
    """The recipe for ``image_size``; ``resize`` first brings images of any size to a centred
    ``image_size`` square (users' folders of small images), a no-op on images already that size."""
    if is_small(image_size):
        steps = [T.Resize(image_size), T.CenterCrop(image_size)] if resize else []
        if train:
            steps += [T.RandomCrop(image_size, padding=CIFAR_PADDING), T.RandomHorizontalFlip()]
    elif train:
        steps = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()]
    else:
        steps = [T.Resize(round(image_size * 256 / 224)), T.CenterCrop(image_size)]
    return T.Compose(steps + [T.ToTensor(), T.Normalize(mean, std)])


def cifar_crop(image, top: int, left: int, flip: bool, padding: int = CIFAR_PADDING):
    """The PIL crop RandomCrop(size, padding=padding) (zero fill) + RandomHorizontalFlip make
    when they draw the crop offsets (top, left) of the padded image and ``flip``."""
    width, height = image.size
    view = TF.crop(TF.pad(image, padding), top, left, height, width)
    return TF.hflip(view) if flip else view


def cifar_view(image, top: int, left: int, flip: bool, mean: Sequence[float],
               std: Sequence[float], padding: int = CIFAR_PADDING):
    """One given view of a PIL image under the CIFAR recipe: ``cifar_crop``, ToTensor, Normalize."""
    return TF.normalize(TF.to_tensor(cifar_crop(image, top, left, flip, padding)), mean, std)
