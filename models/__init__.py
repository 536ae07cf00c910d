"""The model zoo: the benchmark's CIFAR-100 and ImageNet networks, key-for-key compatible with
the released checkpoints (mdistiller / RepDistiller teachers, torchvision ImageNet weights).

``build_model(name, num_classes, dataset)`` picks the family from the dataset: ``"imagenet"``
gives the 224×224 family, any other dataset (cifar100, cifar10, synthetic, imagefolder, ...)
the 32×32 one. Every model follows the contract of ``models.base.ZooModel``.
"""
from typing import List, Optional

from torch import nn

import models.cifar  # noqa: F401  (registers the 32×32 family)
import models.imagenet  # noqa: F401  (registers the 224×224 family)
import models.one  # noqa: F401  (registers ONE's multi-branch ResNets in the 32×32 family)
from models.base import CIFAR_MODELS, IMAGENET_MODELS
from models.loading import extract_state_dict, load_weights
from models.calibrate import recalibrate_batchnorm
from utils.errors import UserError
from utils.registry import Registry

__all__ = ["build_model", "list_models", "load_weights", "extract_state_dict", "input_size",
           "recalibrate_batchnorm"]


def _family(dataset: str) -> Registry:
    return IMAGENET_MODELS if dataset == "imagenet" else CIFAR_MODELS


def input_size(dataset: str) -> int:
    """The side of the images a family's models are built for (32 or 224 pixels)."""
    return 224 if dataset == "imagenet" else 32


def build_model(name: str, num_classes: int = 100, dataset: str = "cifar100") -> nn.Module:
    """A freshly initialised model of the family that ``dataset`` selects."""
    family = _family(dataset)
    if name not in family and name in list_models():
        where = "imagenet" if family is CIFAR_MODELS else "32×32 datasets (cifar100, ...)"
        raise UserError(f"model '{name}' exists only for {where}, not for dataset '{dataset}'")
    return family.get(name)(num_classes=num_classes)


def list_models(dataset: Optional[str] = None) -> List[str]:
    """Registered names of the family of ``dataset``, or of both families when None."""
    if dataset is not None:
        return _family(dataset).names()
    return sorted(set(CIFAR_MODELS.names()) | set(IMAGENET_MODELS.names()))
