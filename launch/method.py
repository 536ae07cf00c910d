"""A config's method built without its data: for notebooks and differential checks.

A run learns the number of classes and the image shape from its loaders; here they are read
from the config (the datasets' known shapes, or the synthetic set's keys), as is the seed of a
method's own random stream (``experiment.seed``), so nothing is passed by hand that the config
already says. The training set itself (CRD's bank is sized and drawn from its labels) is the
one thing a config cannot give: a method that needs it takes ``train_size`` and
``train_targets``, and says so in one line when they are missing.
"""
from typing import Optional, Sequence, Tuple

import torch

from datasets.sources import CIFAR_SIZE, IMAGENET_SIZE, synthetic_shape
from distillers import build_distiller
from launch.build import build_student, build_teacher
from utils.config import Config
from utils.errors import UserError

KNOWN_CLASSES = {"cifar100": 100, "imagenet": 1000}


def data_shape(cfg: Config) -> Tuple[int, Tuple[int, int, int]]:
    """``(num_classes, (C, H, W))`` of the config's data, as its loaders would report them."""
    data = cfg.data
    if data.dataset == "synthetic":
        shape = synthetic_shape(data)
        return shape["num_classes"], (3, shape["image_size"], shape["image_size"])
    num_classes = data.num_classes or KNOWN_CLASSES.get(data.dataset)
    if num_classes is None:
        raise UserError("an image folder's classes are counted from its data: set "
                        "data.num_classes to build its method without the data")
    size = CIFAR_SIZE if data.dataset == "cifar100" else data.image_size or IMAGENET_SIZE
    return num_classes, (3, size, size)


def build_method(cfg: Config, student: Optional[torch.nn.Module] = None,
                 teacher: Optional[torch.nn.Module] = None, *, train_size: Optional[int] = None,
                 train_targets: Optional[Sequence[int]] = None):
    """The distiller of ``cfg`` (``load_config``'s): its student (``student.arch``, random
    weights, unless given), its teacher (``teacher.arch`` with ``teacher.checkpoint``, unless
    given) and its own modules, sized as a run sizes them, without loading any data."""
    num_classes, input_shape = data_shape(cfg)
    student = student if student is not None else build_student(cfg, num_classes)
    teacher = teacher if teacher is not None else build_teacher(cfg, num_classes, input_shape)
    return build_distiller(cfg.distiller, student, teacher, input_shape=input_shape,
                           num_classes=num_classes, train_size=train_size,
                           train_targets=train_targets, seed=cfg.experiment.seed)
