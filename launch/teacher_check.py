"""Measure the teacher before distilling from it.

Released teachers sometimes score points below what was stated (one user measured 70.27 % for a
resnet110 published at 74.31 %), and a distillation run cannot tell why it misses a published
number unless the teacher was measured. The check runs once per (teacher file, val set) — the
result is cached by the checkpoint's sha256 and the dataset fingerprint — and is printed, logged
(``teacher/top1``, ``teacher/top5``) and stored in the run record.

The cache file, ``<output_dir>/teacher_checks.json``, is shared by every run of the output
directory: it is written atomically under a unique temporary name (``utils.atomic``), and a
corrupt or foreign file is rebuilt with one warning instead of failing every run.
"""
import os
from typing import Any, Dict, Optional

from engine.distributed import broadcast_floats
from engine.evaluate import evaluate
from launch.record import config_hash, read_record, sha256_of_file
from utils.atomic import remove_stale_temps, write_json
from utils.errors import UserError

# Published top-1 (%) of the released teachers, on the val/test set. Sources:
# CIFAR-100 — RepDistiller README, reused by the DKD and logit-standardization tables
# (tests/reference/recipes.md, "Released teachers"); ImageNet — torchvision's documentation of
# the IMAGENET1K_V1 weights.
PUBLISHED_TEACHER_TOP1 = {
    ("cifar100", "resnet56"): 72.34, ("cifar100", "resnet110"): 74.31,
    ("cifar100", "resnet32x4"): 79.42, ("cifar100", "wrn_40_2"): 75.61,
    ("cifar100", "vgg13"): 74.64, ("cifar100", "ResNet50"): 79.34,
    ("imagenet", "ResNet18"): 69.758, ("imagenet", "ResNet34"): 73.314,
    ("imagenet", "ResNet50"): 76.13, ("imagenet", "ResNet101"): 77.374,
}
WARN_BELOW_PUBLISHED = 1.0  # points


def _cache_key(cfg, fingerprint: Dict[str, Any]) -> Optional[str]:
    path = cfg.teacher.checkpoint
    if not path or not os.path.isfile(path):
        return None  # random (smoke) or torchvision weights resolved by name: measure every time
    return f"{sha256_of_file(path)}:{config_hash(fingerprint)}"


def _valid_entry(entry: Any) -> bool:
    return isinstance(entry, dict) and all(type(entry.get(key)) in (int, float)
                                           for key in ("top1", "top5", "samples"))


def read_cache(path: str, logger) -> Dict[str, Any]:
    """The valid entries of the cache file; a file that is not such a mapping is reported in
    one line and treated as empty (the next write replaces it)."""
    if not os.path.exists(path):
        return {}
    cache = read_record(path)   # None: unreadable, or not a mapping
    if cache is None or not all(_valid_entry(v) for v in cache.values()):
        logger.info(f"WARNING: {path} is not a teacher-check cache (corrupt or foreign): "
                    "measuring again and rebuilding it")
        return {}
    return cache


def check_teacher(cfg, teacher, val_loader, device, fingerprint: Dict[str, Any], logger) -> Dict[str, Any]:
    """The teacher's val metrics (measured or cached); raises when below ``teacher.min_top1``.

    Under torch.distributed the main process alone reads the cache file and every process takes
    its answer: had each read the file itself, a write by another job in between could leave
    one process measuring (a collective) while the others skip it, and the job would hang."""
    key = _cache_key(cfg, fingerprint)
    cache_file = os.path.join(cfg.experiment.output_dir, "teacher_checks.json")
    cache = read_cache(cache_file, logger) if key and logger.enabled else {}
    hit = cache.get(key) if key else None
    hit, top1, top5, samples = broadcast_floats(
        [1.0, hit["top1"], hit["top5"], hit["samples"]] if hit else [0.0, 0.0, 0.0, 0.0], device)
    if hit:
        result = {"top1": top1, "top5": top5, "samples": int(samples), "cached": True}
    else:
        metrics = evaluate(teacher, val_loader, device, cfg.runtime.amp, cfg.runtime.channels_last)
        result = {"top1": metrics["top1"], "top5": metrics["top5"], "samples": metrics["samples"]}
        if key and logger.enabled:
            remove_stale_temps(os.path.dirname(os.path.abspath(cache_file)))
            write_json(cache_file, {**cache, key: result})
    published = PUBLISHED_TEACHER_TOP1.get((cfg.data.dataset, cfg.teacher.arch))
    result["published_top1"] = published
    logger.info(f"teacher {cfg.teacher.arch}: val top-1 {result['top1']:.2f}, top-5 {result['top5']:.2f}"
                + (f" (published {published:.2f})" if published is not None else "")
                + (" [cached]" if result.get("cached") else ""))
    if published is not None and result["top1"] < published - WARN_BELOW_PUBLISHED:
        logger.info(f"WARNING: the teacher scores {published - result['top1']:.2f} points below its "
                    f"published {published:.2f}: check {cfg.teacher.checkpoint} and the val data")
    minimum = cfg.teacher.min_top1
    if minimum is not None and result["top1"] < minimum:
        raise UserError(f"teacher {cfg.teacher.arch} scores {result['top1']:.2f} top-1 on the val set, "
                        f"below teacher.min_top1={minimum:g}: stopped before distilling")
    logger.scalars({"teacher/top1": result["top1"], "teacher/top5": result["top5"]}, 0)
    return result
