"""MLKD's strong view of a CIFAR image, on the CPU, its randomness a function of
(seed, epoch, index, view).

The logit-standardization code trains MLKD on two views of every image (its
``get_cifar100_train_transform_strong``): the weak one is the CIFAR recipe; the strong one is the
same random crop (4-pixel zero padding) and flip, then RandAugment as FixMatch writes it: two
operations drawn uniformly *with replacement* from the fourteen below, each at a magnitude
uniform in its range (the "m = 10" argument is unused), then Cutout, a square of side
``u·0.5·width`` (u uniform), filled with (125, 123, 114), placed as its ``CutoutAbs`` places it;
then ToTensor and Normalize. The operations are Pillow's, applied here to the same PIL image in
the same order, so a plan gives the original's pixels.

What differs: the original draws from Python's and numpy's global generators inside each loader
worker; here ``draw_strong_plan`` draws the whole plan from a generator seeded by
``derive_seed(seed, epoch, index, view)``, so a sample's view does not depend on workers, ranks
or resumption. The original's Cutout centre comes from ``np.random.uniform(width)``, which is
``uniform(low=width, high=1)``: uniform in (1, width], not [0, width); kept.
"""
from typing import NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps
from torchvision.transforms import functional as TF

from datasets.transforms import CIFAR_PADDING, cifar_crop
from utils.seeding import derive_seed

OPERATIONS_PER_IMAGE = 2
CUTOUT_MAX_FRACTION = 0.5
CUTOUT_FILL = (125, 123, 114)


def _affine(image: Image.Image, coefficients) -> Image.Image:
    return image.transform(image.size, Image.AFFINE, coefficients)


# name -> (what it does to a PIL image at magnitude v, lowest magnitude, highest magnitude)
OPERATIONS = {
    "AutoContrast": (lambda im, v: ImageOps.autocontrast(im), 0.0, 1.0),
    "Brightness": (lambda im, v: ImageEnhance.Brightness(im).enhance(v), 0.05, 0.95),
    "Color": (lambda im, v: ImageEnhance.Color(im).enhance(v), 0.05, 0.95),
    "Contrast": (lambda im, v: ImageEnhance.Contrast(im).enhance(v), 0.05, 0.95),
    "Equalize": (lambda im, v: ImageOps.equalize(im), 0.0, 1.0),
    "Identity": (lambda im, v: im, 0.0, 1.0),
    "Posterize": (lambda im, v: ImageOps.posterize(im, max(1, int(v))), 4.0, 8.0),
    "Rotate": (lambda im, v: im.rotate(v), -30.0, 30.0),
    "Sharpness": (lambda im, v: ImageEnhance.Sharpness(im).enhance(v), 0.05, 0.95),
    "ShearX": (lambda im, v: _affine(im, (1, v, 0, 0, 1, 0)), -0.3, 0.3),
    "ShearY": (lambda im, v: _affine(im, (1, 0, 0, v, 1, 0)), -0.3, 0.3),
    "Solarize": (lambda im, v: ImageOps.solarize(im, v), 0.0, 256.0),
    "TranslateX": (lambda im, v: _affine(im, (1, 0, v * im.size[0], 0, 1, 0)), -0.3, 0.3),
    "TranslateY": (lambda im, v: _affine(im, (1, 0, 0, 0, 1, v * im.size[1])), -0.3, 0.3),
}
OPERATION_NAMES = tuple(OPERATIONS)


class StrongPlan(NamedTuple):
    """Every random choice of one strong view: the crop's (top, left) in the padded image, the
    flip, the operations with their magnitudes, Cutout's side as a fraction of the width and
    its centre (x, y)."""
    top: int
    left: int
    flip: bool
    operations: tuple
    cutout_fraction: float
    cutout_center: tuple


def draw_strong_plan(seed: int, epoch: int, index: int, view: str = "strong", *,
                     image_size: int = 32, padding: int = CIFAR_PADDING) -> StrongPlan:
    """The strong view's random choices for sample ``index`` at ``epoch``: a pure function of
    its arguments (its own generator; no global random state is read or advanced)."""
    g = torch.Generator().manual_seed(derive_seed(seed, epoch, index, view))
    top, left = torch.randint(0, 2 * padding + 1, (2,), generator=g).tolist()
    flip = bool(torch.rand((), generator=g) < 0.5)
    picks = torch.randint(0, len(OPERATION_NAMES), (OPERATIONS_PER_IMAGE,), generator=g).tolist()
    operations = []
    for pick, u in zip(picks, torch.rand(OPERATIONS_PER_IMAGE, generator=g, dtype=torch.float64).tolist()):
        name = OPERATION_NAMES[pick]
        _, low, high = OPERATIONS[name]
        operations.append((name, low + (high - low) * u))
    fraction, u_x, u_y = torch.rand(3, generator=g, dtype=torch.float64).tolist()
    center = tuple(image_size + (1 - image_size) * u for u in (u_x, u_y))   # in (1, size]
    return StrongPlan(top, left, flip, tuple(operations), CUTOUT_MAX_FRACTION * fraction, center)


def cutout_box(fraction: float, center: Sequence[float], width: int, height: int):
    """The pixels Cutout covers, as inclusive ``(x0, y0, x1, y1)``, or ``None``: a square of
    side ``fraction·width`` whose corner is the centre minus half the side, truncated and
    clamped at 0; the far edge ``corner + side`` clamped to the image is covered too (what
    Pillow's rectangle fills for those coordinates)."""
    if fraction <= 0:
        return None
    side = fraction * width
    x0 = int(max(0.0, center[0] - side / 2.0))
    y0 = int(max(0.0, center[1] - side / 2.0))
    return x0, y0, int(min(width, x0 + side)), int(min(height, y0 + side))


def apply_cutout(pixels: np.ndarray, fraction: float, center: Sequence[float]) -> np.ndarray:
    """A copy of the uint8 ``[H, W, 3]`` image with Cutout's square filled."""
    height, width = pixels.shape[:2]
    out = pixels.copy()
    box = cutout_box(fraction, center, width, height)
    if box is not None:
        x0, y0, x1, y1 = box
        out[y0:y1 + 1, x0:x1 + 1] = CUTOUT_FILL
    return out


def strong_view(image: Image.Image, plan: StrongPlan, mean: Sequence[float],
                std: Sequence[float], padding: int = CIFAR_PADDING) -> torch.Tensor:
    """The normalised strong view ``[3, H, W]`` of a PIL RGB image under ``plan``: crop of the
    zero-padded image, flip, the operations in order, Cutout, ToTensor, Normalize."""
    view = cifar_crop(image, plan.top, plan.left, plan.flip, padding)
    for name, magnitude in plan.operations:
        view = OPERATIONS[name][0](view, magnitude)
    pixels = apply_cutout(np.asarray(view.convert("RGB")), plan.cutout_fraction, plan.cutout_center)
    return TF.normalize(TF.to_tensor(pixels), mean, std)


def strong_view_of_row(pixels: np.ndarray, seed: int, epoch: int, index: int,
                       mean: Sequence[float], std: Sequence[float],
                       padding: int = CIFAR_PADDING) -> torch.Tensor:
    """The strong view of dataset row ``index`` (uint8 ``[H, W, 3]`` pixels) at ``epoch``: its
    plan drawn and applied. Both loaders draw it through here, so a row gets the same pixels
    from either, in whichever process and on whichever rank it lands."""
    plan = draw_strong_plan(seed, epoch, index, image_size=pixels.shape[1], padding=padding)
    return strong_view(Image.fromarray(pixels), plan, mean, std, padding)
