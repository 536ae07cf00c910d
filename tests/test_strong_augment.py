"""MLKD's strong view (datasets/strong_augment.py): its random choices are a pure function of
(seed, epoch, index, view) with the original's distribution, and its pixels are Pillow's."""
import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageOps
from torchvision.transforms import functional as TF

from datasets.strong_augment import (CUTOUT_FILL, OPERATIONS, StrongPlan, apply_cutout,
                                     draw_strong_plan, strong_view)
from datasets.transforms import CIFAR100_MEAN, CIFAR100_STD

RANGES = {"AutoContrast": (0, 1), "Brightness": (0.05, 0.95), "Color": (0.05, 0.95),
          "Contrast": (0.05, 0.95), "Equalize": (0, 1), "Identity": (0, 1), "Posterize": (4, 8),
          "Rotate": (-30, 30), "Sharpness": (0.05, 0.95), "ShearX": (-0.3, 0.3),
          "ShearY": (-0.3, 0.3), "Solarize": (0, 256), "TranslateX": (-0.3, 0.3),
          "TranslateY": (-0.3, 0.3)}


def global_random_states():
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def test_strong_plan_depends_on_seed_epoch_index_and_view_only():
    before = global_random_states()
    plan = draw_strong_plan(7, 3, 11)
    assert draw_strong_plan(7, 3, 11) == plan
    others = [draw_strong_plan(8, 3, 11), draw_strong_plan(7, 4, 11), draw_strong_plan(7, 3, 12),
              draw_strong_plan(7, 3, 11, view="strong2")]
    assert all(other != plan for other in others)
    after = global_random_states()
    assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    assert before[2] == after[2]


def test_strong_plans_draw_every_operation_within_the_originals_ranges():
    plans = [draw_strong_plan(0, 0, i) for i in range(600)]
    operations = [op for plan in plans for op in plan.operations]
    assert set(OPERATIONS) == set(RANGES) == {name for name, _ in operations}
    assert all(RANGES[name][0] <= v <= RANGES[name][1] for name, v in operations)
    assert all(len(plan.operations) == 2 for plan in plans)
    assert {(p.top, p.left) for p in plans} <= {(t, l) for t in range(9) for l in range(9)}
    assert {p.flip for p in plans} == {True, False}
    assert all(0 <= p.cutout_fraction < 0.5 for p in plans)
    assert all(1 < c <= 32 for p in plans for c in p.cutout_center)   # np.random.uniform(32)


def test_cutout_fills_what_pillows_rectangle_fills_for_the_originals_box():
    rng = np.random.default_rng(0)
    for _ in range(300):
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        fraction, cx, cy = rng.uniform(0, 0.5), 32 - 31 * rng.uniform(), 32 - 31 * rng.uniform()
        side = fraction * 32
        x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        expected = Image.fromarray(pixels)
        ImageDraw.Draw(expected).rectangle((x0, y0, min(32, x0 + side), min(32, y0 + side)),
                                           CUTOUT_FILL)
        assert np.array_equal(apply_cutout(pixels, fraction, (cx, cy)), np.asarray(expected))


def pillow_operation(image, name, v):
    """The original's operations, written from its op list with Pillow's calls."""
    affine = {"ShearX": (1, v, 0, 0, 1, 0), "ShearY": (1, 0, 0, v, 1, 0),
              "TranslateX": (1, 0, v * 32, 0, 1, 0), "TranslateY": (1, 0, 0, 0, 1, v * 32)}
    enhance = {"Brightness": ImageEnhance.Brightness, "Color": ImageEnhance.Color,
               "Contrast": ImageEnhance.Contrast, "Sharpness": ImageEnhance.Sharpness}
    if name in affine:
        return image.transform((32, 32), Image.AFFINE, affine[name])
    if name in enhance:
        return enhance[name](image).enhance(v)
    return {"AutoContrast": lambda: ImageOps.autocontrast(image),
            "Equalize": lambda: ImageOps.equalize(image), "Identity": lambda: image,
            "Posterize": lambda: ImageOps.posterize(image, int(v)),
            "Rotate": lambda: image.rotate(v), "Solarize": lambda: ImageOps.solarize(image, v)}[name]()


@pytest.mark.parametrize("name", sorted(RANGES))
def test_strong_view_is_crop_flip_operations_cutout_normalise_in_that_order(name):
    rng = np.random.default_rng(len(name))
    image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    low, high = RANGES[name]
    plan = StrongPlan(top=2, left=7, flip=True, operations=((name, low + 0.3 * (high - low)),
                                                            ("Solarize", 100.0)),
                      cutout_fraction=0.3, cutout_center=(20.5, 4.2))
    expected = TF.hflip(TF.crop(TF.pad(image, 4), 2, 7, 32, 32))
    for op, v in plan.operations:
        expected = pillow_operation(expected, op, v)
    ImageDraw.Draw(expected).rectangle((15, 0, 24.6, 9.6), CUTOUT_FILL)   # side 9.6 at (20.5, 4.2)
    expected = TF.normalize(TF.to_tensor(expected), CIFAR100_MEAN, CIFAR100_STD)
    assert torch.equal(strong_view(image, plan, CIFAR100_MEAN, CIFAR100_STD), expected)
