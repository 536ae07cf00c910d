"""Validation: top-1, top-5 and cross-entropy over a whole val set, exactly once per sample.

Counts and sums are accumulated on the device and read once at the end (no host sync per
batch); under torch.distributed the val loader shards without padding and the sums are
all-reduced, so N processes report exactly what one process would. A module may return a dict
of named logits (e.g. ONE's first branch and ensemble): every entry is scored, the first is the
headline.

The loaders yield ``utils.batch.Batch``es; a module that reads whole batches (the trainer's,
``whole_batch=True``) gets the batch, a plain model its images.
"""
from typing import Dict

import torch
import torch.nn.functional as F

from engine.distributed import all_reduce_sum
from engine.precision import Precision


def on_device(batch, device: torch.device, channels_last: bool = False):
    """The loader's ``Batch`` on ``device``, its images channels-last when asked."""
    batch = batch.to(device, non_blocking=True)
    if channels_last:
        batch = batch.map_images(lambda images: images.contiguous(memory_format=torch.channels_last))
    return batch


METRICS = ("top1", "top5", "loss")   # per output, in the order of the sums below


def _named_logits(output) -> Dict[str, torch.Tensor]:
    return output if isinstance(output, dict) else {"": output}


def _prefix(name: str) -> str:
    return f"{name}/" if name else ""


def target_ranks(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each sample's rank of its target class (0: the prediction; top-k counts rank < k).

    Classes are ordered by logit, ties broken towards the lower class index, as ``argmax``
    (the training top-1) breaks them; a NaN ranks above every number, as ``sort`` puts it.
    ``topk`` alone is not used because it breaks ties arbitrarily (differently by size, device
    and version), and tied logits are common in bf16/fp16.
    """
    logits = torch.nan_to_num(logits, nan=float("inf"))   # NaN above +inf (→ largest finite)
    target = logits.gather(1, targets[:, None])
    classes = torch.arange(logits.shape[1], device=logits.device)
    ahead = (logits > target) | ((logits == target) & (classes < targets[:, None]))
    return ahead.sum(dim=1)


@torch.no_grad()
def evaluate(module, loader, device: torch.device, amp: str = "off",
             channels_last: bool = False, whole_batch: bool = False) -> Dict[str, float]:
    """``{"top1", "top5", "loss", "samples"}`` (plus ``<name>/top1`` ... for named outputs);
    top-k with the tie rule of ``target_ranks``."""
    was_training = module.training
    module.eval()
    sums = names = None  # per output: [correct@1, correct@5, summed CE] (METRICS); plus the count
    precision = Precision(device.type, amp)
    for batch in loader:
        batch = on_device(batch, device, channels_last)
        targets = batch.targets
        with precision.autocast():
            outputs = _named_logits(module(batch if whole_batch else batch.images))
        if sums is None:
            names = list(outputs)
            sums = torch.zeros(len(names) * 3 + 1, dtype=torch.float64, device=device)
        for i, name in enumerate(names):
            logits = outputs[name].float()
            ranks = target_ranks(logits, targets)
            sums[3 * i] += (ranks < 1).sum()
            sums[3 * i + 1] += (ranks < 5).sum()
            sums[3 * i + 2] += F.cross_entropy(logits, targets, reduction="sum").double()
        sums[-1] += targets.numel()
    module.train(was_training)
    if sums is None:
        raise RuntimeError("the validation loader yielded no batch")
    values = all_reduce_sum(sums).tolist()
    count = values[-1]
    result = {"samples": int(count)}
    for i, name in enumerate(names):
        for j, metric in enumerate(METRICS):   # the loss as a mean, the accuracies in percent
            scale = 1.0 if metric == "loss" else 100.0
            result[_prefix(name) + metric] = values[3 * i + j] * scale / count
    for metric in METRICS:   # the first output's are the headline numbers
        result[metric] = result[_prefix(names[0]) + metric]
    return result
