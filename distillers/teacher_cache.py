"""Exact teacher-logit cache: every augmented view of every training image, computed once.

The CIFAR training augmentation (random crop with 4-pixel zero padding, horizontal flip) has a
finite view space: (2·padding+1)² crop offsets × 2 flips = 162 views per image. A frozen
teacher's logits are a function of the view alone, so they are computed once per (teacher
weights, training images, normalisation) and looked up by ``(index, offset, flip)`` during
training: no teacher forward at all, for any number of students. The views come with the GPU
loader's training batches (``utils.batch.BatchViews``), which are exactly the views the student sees.

Size: N × 162 × C values; CIFAR-100 (50,000 × 162 × 100) is 1.62 GB in fp16, 3.24 GB in fp32.
The file is ``<output_dir>/teacher_cache/<key>.pt``; the key hashes the teacher's sha256, the
images' sha256, mean, std, padding and the storage dtype, so any change gives a new file.
Logits are computed in fp32 (no autocast) in eval mode; fp16 storage rounds them to fp16.
The file carries a checksum of its logits (``utils.checksum``, as checkpoints do), verified on
every read: a damaged file (a flipped byte would train silently on wrong logits), an
unreadable one or one without a checksum is rebuilt, with one line saying so.

Layering: distillers import neither datasets nor engine, so the builder hands in the loader's
``augment(images_uint8, offsets, flips, mean, std, padding)`` (``datasets.gpu_loader.augment_batch``).
"""
import hashlib
import json
import os
from typing import Optional

import torch
import torch.distributed as dist

from utils.atomic import atomic_write, remove_stale_temps
from utils.checksum import CHECKSUM_KEY, state_checksum, with_checksum
from utils.errors import UserError
from utils.logger import progress_lines
from utils.safe_load import read_checkpoint

CACHE_DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


def view_slot(offsets: torch.Tensor, flips: torch.Tensor, padding: int) -> torch.Tensor:
    """Column of a view in the cache: ((top · side) + left) · 2 + flip, side = 2·padding+1."""
    side = 2 * padding + 1
    return (offsets[:, 0] * side + offsets[:, 1]) * 2 + flips.long()


def all_views(padding: int):
    """Offsets [V, 2] and flips [V] of the V = 2·(2·padding+1)² views, in slot order."""
    side = 2 * padding + 1
    slots = torch.arange(2 * side * side)
    view = slots // 2
    return torch.stack([view // side, view % side], dim=1), (slots % 2).bool()


def tensor_sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def weights_sha256(teacher: torch.nn.Module, checkpoint: Optional[str] = None) -> str:
    """sha256 of the checkpoint file when there is one, else of the weights themselves
    (random teachers of smoke runs and benchmarks), as a checkpoint's checksum hashes them.
    A random teacher's cache written before this hash was used is not found again: it is built
    once more beside the old one (random teachers serve smoke runs and benchmarks only)."""
    if checkpoint and os.path.isfile(checkpoint):
        with open(checkpoint, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    return state_checksum(teacher.state_dict())


def cache_key(teacher_sha256: str, images_sha256: str, mean, std, padding: int, dtype: str) -> str:
    fields = {"teacher": teacher_sha256, "images": images_sha256, "padding": padding,
              "mean": [round(float(m), 8) for m in mean], "std": [round(float(s), 8) for s in std],
              "dtype": dtype}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]


@torch.no_grad()
def compute_view_logits(teacher, images: torch.Tensor, mean, std, padding: int, augment,
                        dtype: torch.dtype = torch.float16, batch_size: int = 1024,
                        progress: bool = True) -> torch.Tensor:
    """Teacher logits [N, V, C] of every view of uint8 ``images`` [N, C, H, W], stored in
    ``dtype`` on the CPU. The teacher runs in eval mode on the images' device."""
    teacher.eval()
    device = images.device
    offsets, flips = (t.to(device) for t in all_views(padding))
    views = len(flips)
    groups = torch.split(images, max(1, batch_size // views))   # images per forward
    chunks = []
    for raw in progress_lines(groups, len(groups), "teacher cache") if progress else groups:
        count = len(raw)
        batch = augment(raw.repeat_interleave(views, dim=0), offsets.repeat(count, 1),
                        flips.repeat(count), mean.to(device), std.to(device), padding)
        chunks.append(teacher(batch).float().view(count, views, -1).to("cpu", dtype))
    return torch.cat(chunks)


class TeacherCache:
    """Teacher logits [N, V, C] looked up by a batch's views; moved to the views' device on
    first use. ``lookup`` returns float32 [B, C]."""

    def __init__(self, logits: torch.Tensor, padding: int, path: Optional[str] = None):
        self.logits, self.padding, self.path = logits, padding, path

    def __call__(self, views) -> torch.Tensor:
        """``views``: a ``BatchViews`` (indices [B], offsets [B, 2], flips [B])."""
        indices = views.indices
        self.logits = self.logits.to(indices.device)   # no copy once there
        slots = view_slot(views.offsets.to(indices.device), views.flips.to(indices.device),
                          self.padding)
        return self.logits[indices, slots].float()

    @classmethod
    def load_or_build(cls, teacher, images: torch.Tensor, mean, std, *, padding: int, augment,
                      directory: str, teacher_sha256: str, dtype: str = "fp16",
                      batch_size: int = 1024, is_main: bool = True) -> "TeacherCache":
        """The cache file for this teacher and these images, computed and written (atomically)
        when missing. Under torch.distributed only the main process builds; the others wait."""
        if dtype not in CACHE_DTYPES:
            raise UserError(f"teacher cache dtype must be one of {', '.join(CACHE_DTYPES)}, got {dtype}")
        key = cache_key(teacher_sha256, tensor_sha256(images), mean.tolist(), std.tolist(),
                        padding, dtype)
        path = os.path.join(directory, f"{key}.pt")
        shape = (len(images), len(all_views(padding)[1]))
        state = _read_verified(path, shape) if is_main else None
        if is_main and state is None:
            logits = compute_view_logits(teacher, images, mean, std, padding, augment,
                                         CACHE_DTYPES[dtype], batch_size)
            remove_stale_temps(directory)  # of killed builds; other runs' live writes are kept
            state = with_checksum({"logits": logits, "padding": padding, "key": key})
            atomic_write(path, lambda f: torch.save(state, f))
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        if state is None:   # the other processes read what the main one verified or wrote
            state = read_checkpoint(path, "teacher cache", finite=False)
            if _mismatch(state, shape):
                raise UserError(f"teacher cache {path} {_mismatch(state, shape)}; delete it")
        return cls(state["logits"], padding, path)


def _mismatch(state, shape) -> Optional[str]:
    """Why ``state`` is not a verified cache of ``shape`` (images, views) logits; None if it is."""
    if not isinstance(state, dict) or not isinstance(state.get("logits"), torch.Tensor):
        return "holds no logits"
    if CHECKSUM_KEY not in state:
        return "has no checksum to verify it by"
    if tuple(state["logits"].shape[:2]) != shape:
        return "does not match the data"
    return None


def _read_verified(path: str, shape) -> Optional[dict]:
    """The cache file's content if it is present and passes every check; otherwise None, with
    one line saying why when the file is there (it is then rebuilt)."""
    if not os.path.isfile(path):
        return None
    try:
        state = read_checkpoint(path, "teacher cache", finite=False)
        mismatch = _mismatch(state, shape)
        problem = mismatch and f"{path} {mismatch}"
    except UserError as err:   # damaged, unreadable: the reason, without the advice for checkpoints
        problem = str(err).split("; use ")[0]
    if not problem:
        return state
    print(f"WARNING: teacher cache: {problem}; rebuilding it", flush=True)
    return None

