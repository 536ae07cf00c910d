"""From the data section of a config to transformed train/val datasets.

The config is read attribute by attribute with defaults, so any object with the documented
attributes works (the trainer's frozen dataclass, a SimpleNamespace in tests).
"""
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from torch.utils.data import Dataset

from datasets import cifar, imagenet, synthetic
from datasets.arrays import ArrayDataset, ImageArrays
from datasets.transforms import (CIFAR100_MEAN, CIFAR100_STD, IMAGENET_MEAN, IMAGENET_STD,
                                 image_transforms, is_small)
from utils.errors import UserError

DATASETS = ("cifar100", "imagenet", "imagefolder", "synthetic")
CIFAR_SIZE = 32
IMAGENET_SIZE = 224
SYNTHETIC_DEFAULTS = {"num_classes": 100, "image_size": 32, "train_size": 512, "val_size": 256}


@dataclass(frozen=True)
class Source:
    """A dataset ready for batching. ``arrays`` holds the raw uint8 (train, val) sets when the data
    live in memory, for the GPU loader."""
    train_set: Dataset
    val_set: Dataset
    num_classes: int
    image_size: int
    mean: Sequence[float]
    std: Sequence[float]
    arrays: Optional[tuple[ImageArrays, ImageArrays]] = None


def setting(data_cfg, key: str, default: Any = None) -> Any:
    value = getattr(data_cfg, key, None)
    return default if value is None else value


def dataset_name(data_cfg) -> str:
    name = setting(data_cfg, "dataset", "cifar100")
    if name not in DATASETS:
        raise UserError(f"data.dataset: unknown dataset '{name}'; "
                        f"choose one of {', '.join(DATASETS)}")
    return name


def synthetic_shape(data_cfg) -> dict:
    """num_classes, image_size, train_size and val_size of a synthetic set, defaults filled in."""
    return {key: int(setting(data_cfg, key, default))
            for key, default in SYNTHETIC_DEFAULTS.items()}


def _statistics(data_cfg, mean, std) -> tuple[tuple[float, ...], tuple[float, ...]]:
    chosen = {"mean": setting(data_cfg, "mean", mean), "std": setting(data_cfg, "std", std)}
    for key, values in chosen.items():
        if len(values) != 3:
            raise UserError(f"data.{key}: expected 3 numbers (one per RGB channel), "
                            f"got {list(values)}")
    return tuple(map(float, chosen["mean"])), tuple(map(float, chosen["std"]))


def _check_num_classes(data_cfg, found: int, where: str) -> None:
    wanted = setting(data_cfg, "num_classes")
    if wanted is not None and int(wanted) != found:
        raise UserError(f"data.num_classes is {wanted} but {where} has {found} classes: "
                        f"remove it (on the command line: data.num_classes=null) or set it to {found}")


def _from_arrays(train: ImageArrays, val: ImageArrays, num_classes: int, mean, std) -> Source:
    size = train.images.shape[1]
    return Source(ArrayDataset(train, image_transforms(size, mean, std, train=True)),
                  ArrayDataset(val, image_transforms(size, mean, std, train=False)),
                  num_classes, size, mean, std, arrays=(train, val))


def _cifar100(data_cfg) -> Source:
    root = setting(data_cfg, "root", "data")
    size = setting(data_cfg, "image_size", CIFAR_SIZE)
    if size != CIFAR_SIZE:
        raise UserError(f"data.image_size is {size} but CIFAR-100 images are "
                        f"{CIFAR_SIZE}x{CIFAR_SIZE}: remove data.image_size")
    download = bool(setting(data_cfg, "download", False))
    train, val, class_names = cifar.load(root, download_missing=download)
    _check_num_classes(data_cfg, len(class_names), f"{root}/{cifar.FOLDER}")
    mean, std = _statistics(data_cfg, CIFAR100_MEAN, CIFAR100_STD)
    return _from_arrays(train, val, len(class_names), mean, std)


def _synthetic(data_cfg) -> Source:
    """Mimics CIFAR-100 (pipeline and statistics) up to 64 pixels and ImageNet above."""
    shape = synthetic_shape(data_cfg)
    train, val = synthetic.generate(**shape)
    small = is_small(shape["image_size"])
    statistics = _statistics(data_cfg, *((CIFAR100_MEAN, CIFAR100_STD) if small
                                         else (IMAGENET_MEAN, IMAGENET_STD)))
    return _from_arrays(train, val, shape["num_classes"], *statistics)


def _folders(data_cfg) -> Source:
    """ImageNet, or any ImageFolder tree; ImageNet statistics unless the config gives others."""
    name, root = dataset_name(data_cfg), setting(data_cfg, "root", "data")
    size = int(setting(data_cfg, "image_size", IMAGENET_SIZE))
    mean, std = _statistics(data_cfg, IMAGENET_MEAN, IMAGENET_STD)
    train, val = imagenet.load(name, root,
                               image_transforms(size, mean, std, train=True, resize=True),
                               image_transforms(size, mean, std, train=False, resize=True))
    _check_num_classes(data_cfg, len(train.classes), f"{root}/train")
    return Source(train, val, len(train.classes), size, mean, std)


_BUILDERS = {"cifar100": _cifar100, "synthetic": _synthetic,
             "imagenet": _folders, "imagefolder": _folders}


def train_labels(source: Source) -> Sequence[int]:
    """Every training sample's label, in dataset order, as the source holds them (no copy): for
    methods that draw samples by class over the whole training set (CRD's negatives)."""
    if source.arrays is not None:
        return source.arrays[0].targets
    return source.train_set.targets   # ImageFolder's list of class indices


def build_source(data_cfg) -> Source:
    return _BUILDERS[dataset_name(data_cfg)](data_cfg)
