"""ImageNet-style folders decoded on the training device (``data.loader: gpu`` for image folders).

A CPU that cannot decode and RandomResizedCrop ~10k JPEGs a second starves a GPU that trains at
that rate. Here the loader's workers only read each file's bytes; the main process decodes the
batch with ``torchvision.io.decode_jpeg(..., device=device)`` (nvJPEG on CUDA) and crops,
resizes, flips and normalises on the device.

Same recipe, same draws: each training sample's RandomResizedCrop window and flip come from
torchvision's own ``RandomResizedCrop.get_params`` and ``torch.rand(1) < 0.5``, drawn from torch's
CPU generator seeded with the sample's seed ``derive_seed(seed, epoch, index)``, exactly as the
torch loader (``SeededAugmentation``) draws them for the PIL pipeline: both loaders pick the same
window and flip for every sample. Pixels differ only by decoder and resampling rounding (the
tensor resize with antialias against PIL's). Validation: shorter side resized to 256/224 of the
size, centre crop, as the torch loader.

Files that are not JPEG, or that the device decoder rejects (ImageNet holds a few CMYK JPEGs and
one PNG), are decoded on the CPU by ``decode_image`` and moved; nothing is skipped.
"""
import io
import sys
from typing import List, Sequence, Tuple

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.transforms.v2 import functional as F2

from datasets.gpu_loader import normalize_batch
from datasets.samplers import ShardSampler, derive_seed, seeded_cpu_rng
from datasets.torch_loader import EpochDataLoader, Indexed
from utils.batch import Batch
from utils.errors import UserError

JPEG_MAGIC = b"\xff\xd8"


class FileBytes(Dataset):
    """``(file bytes, target, None)`` of an ImageFolder's samples (no window: validation): what
    the workers do is read, nothing else. Plain ``bytes`` travel through the worker pipe; a
    tensor per file would be shared through one file descriptor each, which runs out under
    prefetching."""

    def __init__(self, samples: Sequence[tuple[str, int]]):
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        with open(path, "rb") as f:
            return f.read(), target, None


Window = Tuple[int, int, int, int, bool]   # RandomResizedCrop's (top, left, height, width), flip


def draw_window(image, scale, ratio) -> Window:
    """The RandomResizedCrop window and the flip torchvision draws for ``image`` (a tensor or a
    PIL image: only its size is read) from torch's CPU generator, in its order of draws."""
    top, left, height, width = T.RandomResizedCrop.get_params(image, scale, ratio)
    return top, left, height, width, bool(torch.rand(1) < 0.5)


class FileBytesAndWindow(FileBytes):
    """Training items ``(file bytes, target, window)``: the sample's window and flip are drawn
    here, in the loader's worker, from the image size in the file's header (PIL reads no more
    of it), under the sample's seed (``SeededAugmentation`` seeds torch's generator around this
    call): the main process, which decodes and resizes the whole batch, draws nothing per
    sample. ``window`` is ``None`` when the header cannot be read; the main process then draws
    from the decoded image (the same draws) or names the unreadable file."""

    def __init__(self, samples: Sequence[tuple[str, int]], scale, ratio):
        super().__init__(samples)
        self.scale, self.ratio = scale, ratio

    def __getitem__(self, index: int):
        data, target, _ = super().__getitem__(index)
        try:
            with Image.open(io.BytesIO(data)) as header:
                window = draw_window(header, self.scale, self.ratio)
        except (OSError, SyntaxError, ValueError):   # what PIL raises for a file it cannot identify
            window = None
        return data, target, window


def collate_files(items):
    """``(file bytes, target, window or None, index)`` items (the index added by the sampler's
    dataset wrapper) -> ``(bytes, targets, indices, windows)``."""
    data, targets, windows, indices = zip(*items)
    return list(data), torch.tensor(targets), torch.tensor(indices), list(windows)


def decode_batch(files: List[bytes], device: torch.device,
                 paths: Sequence[str]) -> Tuple[List[torch.Tensor], int]:
    """uint8 RGB [3, H, W] per file, on ``device``, and how many JPEGs the device decoder refused.

    JPEGs go through the device decoder as one batch; if it refuses the batch (one CMYK or
    damaged file fails all of it), each JPEG is tried alone, so only the refused ones are
    decoded on the CPU. Other formats (PNG) are decoded on the CPU. A file that neither can
    decode is a one-line ``UserError`` naming it (``paths``: the files' paths)."""
    data = [torch.frombuffer(bytearray(f), dtype=torch.uint8) for f in files]
    jpeg = [i for i, f in enumerate(files) if f[:2] == JPEG_MAGIC]
    try:
        decoded = decode_jpeg([data[i] for i in jpeg], mode=ImageReadMode.RGB, device=device) if jpeg else []
        images = dict(zip(jpeg, decoded))
    except RuntimeError:
        images = {}
        for i in jpeg:
            try:
                images[i] = decode_jpeg(data[i], mode=ImageReadMode.RGB, device=device)
            except RuntimeError:
                pass
    refused = len(jpeg) - len(images)
    for i in range(len(data)):
        if i not in images:
            try:
                images[i] = decode_image(data[i], mode=ImageReadMode.RGB).to(device)
            except RuntimeError as error:
                reason = " ".join(str(error).split())
                raise UserError(f"cannot read image {paths[i]}: {reason}; replace or remove the file") from error
    return [images[i] for i in range(len(data))], refused


def apply_window(image: torch.Tensor, window: Window, size: int) -> torch.Tensor:
    """Crop ``window`` of one uint8 image, resize it to ``size`` (antialiased), flip if drawn."""
    top, left, height, width, flip = window
    view = F2.resized_crop(image, top, left, height, width, [size, size], antialias=True)
    return view.flip(-1) if flip else view


def train_view(image: torch.Tensor, sample_seed: int, size: int, scale, ratio) -> torch.Tensor:
    """RandomResizedCrop(size) + RandomHorizontalFlip of one uint8 image, with the window and
    flip torchvision draws under ``sample_seed`` (the torch loader's draws for this sample)."""
    with seeded_cpu_rng(sample_seed):
        window = draw_window(image, scale, ratio)
    return apply_window(image, window, size)


def val_view(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side to 256/224 of ``size``, centre-crop ``size`` (the torch loader's)."""
    resized = F2.resize(image, [round(size * 256 / 224)], antialias=True)
    return F2.center_crop(resized, [size, size])


class DeviceJpegLoader:
    """``Batch``es (images float32 [B, 3, size, size], targets, indices, on device) of an ImageFolder;
    ``set_epoch`` and ``len`` as the torch loader, whose order and sharding it shares."""

    def __init__(self, folder, *, size: int, mean: Sequence[float], std: Sequence[float],
                 train: bool, batch_size: int, num_workers: int, seed: int, rank: int,
                 world_size: int, device):
        self.device, self.size, self.train, self.seed = torch.device(device), size, train, seed
        self.mean = torch.tensor(mean, device=self.device)
        self.std = torch.tensor(std, device=self.device)
        self.epoch = 0
        self.fallback_reported = False   # the CPU fallback is said once per loader
        self.paths = [path for path, _ in folder.samples]
        crop = T.RandomResizedCrop(size)
        self.scale, self.ratio = crop.scale, crop.ratio
        common = dict(batch_size=batch_size, num_workers=num_workers, collate_fn=collate_files,
                      persistent_workers=num_workers > 0)
        if train:
            files = FileBytesAndWindow(folder.samples, self.scale, self.ratio)
            self.batches = EpochDataLoader(files, seed=seed, rank=rank, world_size=world_size,
                                           drop_last=False, **common)
        else:
            files = FileBytes(folder.samples)
            self.batches = DataLoader(Indexed(files), sampler=ShardSampler(len(files), rank=rank,
                                                                  world_size=world_size), **common)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.train:
            self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def _view(self, image: torch.Tensor, index: int, window) -> torch.Tensor:
        """A training sample with its window drawn by the worker (or, where the worker could not
        read the header, drawn here under the sample's seed: the same draws); val: centre crop."""
        if not self.train:
            return val_view(image, self.size)
        if window is None:
            return train_view(image, derive_seed(self.seed, self.epoch, index), self.size,
                              self.scale, self.ratio)
        return apply_window(image, window, self.size)

    def __iter__(self):
        for data, targets, indices, windows in self.batches:
            rows = indices.tolist()
            images, refused = decode_batch(data, self.device, [self.paths[i] for i in rows])
            if refused and not self.fallback_reported:
                self.fallback_reported = True
                print(f"data.loader=gpu: the {self.device.type} JPEG decoder refused {refused} "
                      f"file(s) of a batch (CMYK or damaged JPEGs?); those it refuses are "
                      f"decoded on the CPU instead (said once)", file=sys.stderr)
            crops = torch.stack([self._view(image, index, window) for image, index, window
                                 in zip(images, rows, windows)])
            yield Batch(normalize_batch(crops, self.mean, self.std), targets, indices).to(
                self.device, non_blocking=True)
