"""What every loader yields and every method reads: one ``Batch`` of samples.

A method that keeps per-sample state (a memory bank, an exact teacher cache, a per-sample
weight) needs to know which dataset rows a batch holds; a method that reuses the teacher's
answer for an augmented view needs the view. Both travel with the images, in one typed object,
from the loader through the trainer into the method, so nothing is parked on the side.

It lives in utils/ because datasets/ (which builds it), engine/ (which moves it) and
distillers/ (which read it) may all import utils/ and nothing of each other.
"""
import dataclasses
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch


class BatchViews(NamedTuple):
    """The augmented view of each sample, when the loader draws it itself (the GPU loader):
    the crop's (top, left) in the zero-padded image and the flip. The cache of teacher logits
    looks a view up by ``(indices, offsets, flips)``."""
    indices: torch.Tensor  # int64 [B], rows of the dataset
    offsets: torch.Tensor  # int64 [B, 2], (top, left) of the crop in the padded image
    flips: torch.Tensor    # bool [B], mirrored after the crop

    def to(self, device, non_blocking: bool = False) -> "BatchViews":
        return BatchViews(*(t.to(device, non_blocking=non_blocking) for t in self))

    def pin_memory(self) -> "BatchViews":
        return BatchViews(*(t.pin_memory() for t in self))


@dataclass
class Batch:
    """``images`` float [B, C, H, W] (normalised), ``targets`` int64 [B], ``indices`` int64 [B]:
    the dataset rows the images came from (``None`` only for tensors handed in by hand),
    ``views`` when the loader knows them (else ``None``), and ``strong_images`` [B, C, H, W]:
    a second, strongly augmented view of the same samples, only when the method asks for one
    (MLKD, ``Distiller.needs_strong_view``; else ``None``, so no other method pays for it)."""
    images: torch.Tensor
    targets: Optional[torch.Tensor] = None
    indices: Optional[torch.Tensor] = None
    views: Optional[BatchViews] = None
    strong_images: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return len(self.images)

    def _map(self, fn) -> "Batch":
        values = (getattr(self, field.name) for field in dataclasses.fields(self))
        return Batch(*(None if value is None else fn(value) for value in values))

    def to(self, device, non_blocking: bool = False) -> "Batch":
        """A copy with every tensor on ``device`` (a no-op for tensors already there)."""
        return self._map(lambda value: value.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":
        """Called by ``DataLoader(pin_memory=True)`` on each batch it hands out."""
        return self._map(lambda value: value.pin_memory())

    def map_images(self, fn) -> "Batch":
        """A copy with ``fn`` applied to every view's images (e.g. channels-last memory format)."""
        strong = None if self.strong_images is None else fn(self.strong_images)
        return self.replace(images=fn(self.images), strong_images=strong)

    def replace(self, **changes) -> "Batch":
        """A copy with some fields changed (e.g. the images in channels-last memory format)."""
        return dataclasses.replace(self, **changes)


def as_batch(value) -> Batch:
    """A ``Batch`` as it is, or bare images (a script's or a test's tensor) as a Batch of them."""
    return value if isinstance(value, Batch) else Batch(value)
