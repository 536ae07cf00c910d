"""Train and validation loaders for CIFAR-100, ImageNet, image folders and generated data.

``build_loaders(data_cfg, seed=..., rank=..., world_size=..., device=...)`` is the entry point.
Call ``Loaders.set_epoch(epoch)`` before each epoch: the epoch's order and augmentation then depend
only on (seed, epoch, rank), so an epoch re-run after a crash sees exactly the same batches
(datasets/samplers.py says how). ``dataset_fingerprint(data_cfg)`` records which data a run saw.
"""
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Sequence, Union

import torch

from datasets import cifar, imagenet, synthetic
from datasets.arrays import ArrayViews
from datasets.gpu_loader import GpuCifarLoader
from datasets.jpeg_loader import DeviceJpegLoader
from datasets.sources import Source, build_source, dataset_name, setting, synthetic_shape, train_labels
from datasets.torch_loader import build_torch_loaders
from datasets.transforms import CIFAR_PADDING, SMALL_IMAGE_MAX, is_small
from utils.errors import UserError

LOADERS = ("auto", "torch", "gpu")


@dataclass(frozen=True)
class Loaders:
    """``train`` and ``val`` yield ``utils.batch.Batch``es (images float32 [N, 3, H, W]
    normalised, targets int64 [N], the rows' dataset indices, and the views where the loader
    draws them) and have ``len()`` (batches on this rank). ``train_size`` and ``val_size`` count the whole
    dataset, over all ranks; ``input_shape`` is (C, H, W); ``train_labels`` every training
    sample's label in dataset order (the same on every rank)."""
    train: Iterable
    val: Iterable
    num_classes: int
    input_shape: tuple[int, int, int]
    train_size: int
    val_size: int
    train_labels: Sequence[int] = ()

    def set_epoch(self, epoch: int) -> None:
        """Fixes the coming epoch's shuffle and augmentation; call it before each epoch."""
        self.train.set_epoch(epoch)


def _check_strong_view(data_cfg, source: Source) -> None:
    """MLKD's strong view (datasets/strong_augment.py) is drawn for the in-memory sets only, by
    either loader; image folders are refused in one line, not silently weak."""
    if source.arrays is None or not is_small(source.image_size):
        raise UserError(f"the method needs a strong view of every sample (MLKD), drawn for small "
                        f"in-memory datasets (cifar100, synthetic up to {SMALL_IMAGE_MAX} pixels), "
                        f"not {dataset_name(data_cfg)} at {source.image_size} pixels")


def _use_gpu_loader(data_cfg, source: Source, device: torch.device, strong_view: bool) -> bool:
    """Loader "auto" is the GPU loader for in-memory 32x32 data on CUDA, the torch one otherwise
    and for a method that needs the strong view: its PIL operations are CPU work, which the torch
    loader's workers spread over processes and the GPU loader runs in the training process.
    For image folders "gpu" means decoding on the device (``_use_device_jpeg``)."""
    choice = setting(data_cfg, "loader", "auto")
    if choice not in LOADERS:
        raise UserError(f"data.loader: unknown loader '{choice}'; "
                        f"choose one of {', '.join(LOADERS)}")
    fits = source.arrays is not None and is_small(source.image_size)
    if choice == "gpu" and not fits:
        raise UserError(f"data.loader=gpu holds small in-memory datasets (cifar100, synthetic "
                        f"up to 64 pixels) or decodes image folders of the ImageNet recipe "
                        f"(image_size > {SMALL_IMAGE_MAX}), not {dataset_name(data_cfg)} at "
                        f"{source.image_size} pixels: set data.loader=torch")
    if choice == "auto":
        return fits and device.type == "cuda" and source.image_size == 32 and not strong_view
    return choice == "gpu"


def _use_device_jpeg(data_cfg, source: Source) -> bool:
    """``data.loader: gpu`` on an image folder with the ImageNet recipe: decode on the device."""
    return (setting(data_cfg, "loader", "auto") == "gpu" and source.arrays is None
            and hasattr(source.train_set, "samples") and not is_small(source.image_size))


def build_loaders(data_cfg, *, seed: int, rank: int = 0, world_size: int = 1,
                  device: Union[str, torch.device] = "cpu", strong_view: bool = False) -> Loaders:
    """The data section of a config -> this rank's loaders (``data_cfg.batch_size`` per process).
    ``strong_view``: training batches carry ``strong_images`` too (the method's
    ``needs_strong_view``), for the in-memory sets, by either loader."""
    device = torch.device(device)
    source = build_source(data_cfg)
    if strong_view:
        _check_strong_view(data_cfg, source)
    batch_size = int(data_cfg.batch_size)
    val_batch_size = int(setting(data_cfg, "val_batch_size", batch_size))
    shard = dict(seed=seed, rank=rank, world_size=world_size)
    if _use_device_jpeg(data_cfg, source):
        files = dict(size=source.image_size, mean=source.mean, std=source.std,
                     num_workers=int(data_cfg.num_workers), device=device, **shard)
        train = DeviceJpegLoader(source.train_set, train=True, batch_size=batch_size, **files)
        val = DeviceJpegLoader(source.val_set, train=False, batch_size=val_batch_size, **files)
    elif _use_gpu_loader(data_cfg, source, device, strong_view):
        statistics = dict(mean=source.mean, std=source.std, device=device)
        train = GpuCifarLoader(source.arrays[0], batch_size=batch_size, train=True,
                               strong_view=strong_view, **statistics, **shard)
        val = GpuCifarLoader(source.arrays[1], batch_size=val_batch_size, train=False,
                             **statistics, **shard)
    else:
        train_set = source.train_set
        if source.arrays is not None and is_small(source.image_size):
            # the CIFAR recipe with the epoch's view table, the GPU loader's: same views
            train_set = ArrayViews(source.arrays[0], source.mean, source.std, CIFAR_PADDING,
                                   strong_seed=seed if strong_view else None)
        train, val = build_torch_loaders(train_set, source.val_set, batch_size=batch_size,
                                         val_batch_size=val_batch_size, device=device,
                                         num_workers=int(data_cfg.num_workers), **shard)
    return Loaders(train, val, source.num_classes, (3, source.image_size, source.image_size),
                   len(source.train_set), len(source.val_set), train_labels(source))


def dataset_fingerprint(data_cfg) -> dict:
    """What identifies the data: CIFAR-100 file md5s against the official ones, a folder tree's
    counts and file-list hash, or the synthetic set's parameters and content hash."""
    name, root = dataset_name(data_cfg), setting(data_cfg, "root", "data")
    if name == "cifar100":
        return cifar.fingerprint(root)
    if name == "synthetic":
        return synthetic.fingerprint(**synthetic_shape(data_cfg))
    return imagenet.fingerprint(name, root)


__all__ = ["Loaders", "build_loaders", "dataset_fingerprint"]
