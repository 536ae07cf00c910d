"""Time a config's training step, or its input pipeline, on CPU or CUDA.

    python bench.py --config configs/cifar100/kd/res32x4_res8x4.yaml [key.sub=value ...]
    python bench.py --config CFG --steps 20 --warmup 3 --repeats 3 --json
    python bench.py --config CFG --loader                       # the train loader alone
    python bench.py --config CFG --compare "runtime.compile=false" "runtime.compile=true"
    python bench.py --config CFG --pipeline --peer              # loader + step vs a plain loop

The step timed is the Trainer's own ``step`` (forward of student and teacher, losses, backward,
optimizer and scheduler step) on generated inputs of the run's shapes: random normal images,
random integer targets and, with a teacher cache, random views. The teacher has random weights
when its checkpoint is absent (``teacher.allow_random=true``), and the data are synthetic with
the real dataset's image size and class count unless ``--real-data`` is given, so no download
or checkpoint is needed. FLOPs are counted once, on the eager module, by
``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matmuls, 2 per multiply-add).
``--compare A B`` builds both variants in this process and alternates their timed repeats, so a
busy machine slows both alike; it prints both and the ratio B/A.

``--pipeline`` times what an epoch does per batch: the train loader's next batch, then the step.
``--peer`` adds the loop the common trainers run (mdistiller, RepDistiller): torchvision
transforms on PIL images in a ``DataLoader`` with ``data.num_workers`` workers, the same
distiller eager in fp32, a plain ``torch.optim.SGD``, and the loss and accuracy read to the host every
step; it is timed alternately with ours and the ratio ours/peer is printed.
"""
import argparse
import itertools
import json
import platform
import resource
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

from engine.evaluate import on_device
from utils.batch import Batch, BatchViews
from utils.cli import parse_with_overrides
from utils.errors import UserError, exits_on_user_error

BENCH_OVERRIDES = ["teacher.allow_random=true", "log.tensorboard=false"]
REAL_SHAPES = {"cifar100": (100, 32), "imagenet": (1000, 224)}   # classes, image size
# Dense peak FLOP/s from NVIDIA's data sheets (SXM unless named); the first name that matches wins.
PEAK_FLOPS = [
    ("H100 PCIe", {"bf16": 756e12, "fp16": 756e12, "tf32": 378e12, "fp32": 51e12}),
    ("H100", {"bf16": 989e12, "fp16": 989e12, "tf32": 495e12, "fp32": 67e12}),
    ("H200", {"bf16": 989e12, "fp16": 989e12, "tf32": 495e12, "fp32": 67e12}),
    ("A100", {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12}),
    ("V100", {"fp16": 125e12, "fp32": 15.7e12}),
]


@dataclass
class Variant:
    """One configuration ready to time: its config, its step function and what to report."""
    label: str
    cfg: Any
    device: torch.device
    run: Callable[[], None]
    info: Dict[str, Any]
    memory_base: int = 0
    module: Any = None        # what is evaluated (the distiller: eval mode gives the student)
    val_loader: Any = None    # the validation loader of this loop
    trainer: Any = None       # the Trainer whose step is timed (none for the loader, the peer)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median, min, max)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--loader", action="store_true", help="time the train loader alone")
    parser.add_argument("--pipeline", action="store_true",
                        help="time loader + step per batch (what an epoch does)")
    parser.add_argument("--peer", action="store_true",
                        help="also time a common trainer's loop (PIL DataLoader, eager, sync per "
                             "step) on the same data and distiller; implies --pipeline")
    parser.add_argument("--real-data", action="store_true",
                        help="use the config's dataset instead of synthetic data of its shapes")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"),
                        help="two strings of space-separated overrides; prints both and B/A")
    return parse_with_overrides(parser, argv)


# --- configuration -------------------------------------------------------------------------------
def data_overrides(cfg, batches: int, user: List[str], real_data: bool) -> List[str]:
    """Synthetic data with the real dataset's shapes, ``batches`` train batches long."""
    if real_data or any(o.startswith("data.dataset=") for o in user):
        return []
    classes, size = REAL_SHAPES.get(cfg.data.dataset, (cfg.data.num_classes or 100,
                                                       cfg.data.image_size or 32))
    batch = cfg.data.batch_size
    return ["data.dataset=synthetic", f"data.num_classes={classes}", f"data.image_size={size}",
            f"data.train_size={batch * batches}", f"data.val_size={batch}"]


def bench_config(path: str, overrides: List[str], batches: int, real_data: bool,
                 loader: bool = False):
    """The config to time; the step alone never iterates a loader, so it gets no workers."""
    from launch.build import load_run_config
    first = load_run_config(path, BENCH_OVERRIDES + overrides)
    extra = data_overrides(first, batches, overrides, real_data) + ([] if loader else ["data.num_workers=0"])
    return load_run_config(path, BENCH_OVERRIDES + extra + overrides)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def device_peaks(device: torch.device) -> Dict[str, float]:
    """The device's dense peak FLOP/s by precision; empty when unknown (CPUs)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    return next((peaks for key, peaks in PEAK_FLOPS if key in name), {})


def peak_flops(device: torch.device, amp: str) -> Optional[float]:
    """The device's dense peak for the step's precision; None when unknown (CPUs)."""
    precision = amp if amp != "off" else ("tf32" if torch.backends.cudnn.allow_tf32 else "fp32")
    peaks = device_peaks(device)
    return peaks.get(precision, peaks.get("fp32"))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- the two things timed --------------------------------------------------------------------------
def step_variant(label: str, cfg) -> Variant:
    """The Trainer's step on one generated batch, repeated."""
    from launch.build import build_run, resolve_device
    from launch.training import build_trainer
    device = resolve_device(cfg)
    memory_base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    torch.manual_seed(cfg.experiment.seed)
    loaders, distiller = build_run(cfg, device=device)
    trainer = build_trainer(cfg, distiller, loaders, device, logger=None)
    batch = cfg.data.batch_size
    images = torch.randn(batch, *loaders.input_shape, device=device)
    if cfg.runtime.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    targets = torch.randint(0, loaders.num_classes, (batch,), device=device)
    cache = distiller.teacher.cache if distiller.teacher is not None else None
    indices = torch.randint(0, loaders.train_size, (batch,), device=device)
    views = None
    if cache is not None:
        side = 2 * cache.padding + 1
        views = BatchViews(indices, torch.randint(0, side, (batch, 2), device=device),
                           torch.rand(batch, device=device) < 0.5)
    strong = torch.randn_like(images) if distiller.needs_strong_view else None   # MLKD's second view
    generated = Batch(images, targets, indices, views, strong)
    info = {"distiller": cfg.distiller["name"], "student": cfg.student.arch,
            "teacher": cfg.teacher.arch if distiller.teacher is not None else None,
            "teacher_cache": cache is not None, "amp": cfg.runtime.amp, "teacher_amp": cfg.teacher.amp,
            "compile": cfg.runtime.compile, "channels_last": cfg.runtime.channels_last}
    return Variant(label, cfg, device, lambda: trainer.step(generated, 1), info, memory_base,
                   module=trainer.module, val_loader=loaders.val, trainer=trainer)


def loader_variant(label: str, cfg) -> Variant:
    """One train batch from the loader, moved to the device as the trainer moves it."""
    from launch.build import build_run_loaders, resolve_device
    device = resolve_device(cfg)
    loaders = build_run_loaders(cfg, device=device)
    batches = endless_batches(loaders, device)
    info = {"loader": type(loaders.train).__name__, "num_workers": cfg.data.num_workers,
            "dataset": cfg.data.dataset}
    return Variant(label, cfg, device, lambda: next(batches), info)


def endless_batches(loaders, device: torch.device):
    """The train loader's batches on ``device``, epoch after epoch (each epoch set first)."""
    for epoch in itertools.count(1):
        loaders.set_epoch(epoch)
        for batch in loaders.train:
            yield batch.to(device, non_blocking=True)


def pipeline_variant(label: str, cfg) -> Variant:
    """Ours, per batch: the configured train loader's next batch, then the Trainer's step."""
    variant = step_variant(label, cfg)
    trainer = variant.trainer
    batches = endless_batches(trainer.loaders, variant.device)
    variant.run = lambda: trainer.step(on_device(next(batches), variant.device, cfg.runtime.channels_last), 1)
    variant.info.update(loader=type(trainer.loaders.train).__name__, num_workers=cfg.data.num_workers)
    return variant


def peer_variant(label: str, cfg) -> Variant:
    """A common trainer's loop on the same data, models and loss (see the module docstring)."""
    from torch.utils.data import DataLoader
    from torchvision import transforms
    from datasets.arrays import ArrayDataset
    from datasets.torch_loader import Indexed, collate_batch
    from datasets.sources import build_source
    from launch.build import resolve_device
    from launch.method import build_method
    device = resolve_device(cfg)
    source = build_source(cfg.data)
    if source.arrays is None or source.image_size != 32:
        raise UserError("--peer models the CIFAR trainers' loop: it needs 32-pixel in-memory data")
    plain = transforms.Compose([transforms.ToTensor(), transforms.Normalize(source.mean, source.std)])
    augment = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                  *plain.transforms])
    workers = dict(num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda")
    loader = DataLoader(ArrayDataset(source.arrays[0], augment), batch_size=cfg.data.batch_size, shuffle=True,
                        drop_last=True, persistent_workers=cfg.data.num_workers > 0, **workers)
    val_loader = DataLoader(Indexed(ArrayDataset(source.arrays[1], plain)), collate_fn=collate_batch,
                            batch_size=cfg.data.val_batch_size or cfg.data.batch_size, **workers)
    torch.manual_seed(cfg.experiment.seed)
    distiller = build_method(cfg).to(device)   # the same student, teacher and losses as ours
    distiller.train()
    optimizer = torch.optim.SGD(distiller.parameters(), lr=cfg.solver.lr, momentum=cfg.solver.momentum,
                                weight_decay=cfg.solver.weight_decay)
    batches = itertools.chain.from_iterable(itertools.repeat(loader))   # epoch after epoch

    def run() -> None:
        images, targets = (t.to(device, non_blocking=True) for t in next(batches))
        logits, losses = distiller(Batch(images, targets), 1)
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()                                                   # meters read every step
        (logits.argmax(1) == targets).float().mean().item()

    info = {"loader": "torch DataLoader + PIL transforms (peer)", "num_workers": cfg.data.num_workers,
            "distiller": cfg.distiller["name"], "student": cfg.student.arch,
            "teacher": cfg.teacher.arch if distiller.teacher is not None else None}
    return Variant(label, cfg, device, run, info, module=distiller, val_loader=val_loader)


def count_step_flops(variant: Variant) -> Optional[int]:
    """FLOPs of one step, counted on the eager module (a compiled one hides its ops)."""
    trainer = variant.trainer
    if trainer is None:
        return None
    step = getattr(trainer.train_step, "step", trainer.train_step)   # the eager step a graph wraps
    compiled, step.module = step.module, trainer.module
    try:
        with FlopCounterMode(display=False) as counter:
            variant.run()
    finally:
        step.module = compiled
    return counter.get_total_flops()


def warm_up(variant: Variant, steps: int) -> None:
    if variant.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(variant.device)
    run_steps(variant, steps)
    variant.info["flops_per_step"] = count_step_flops(variant)
    synchronize(variant.device)
    if variant.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(variant.device) - variant.memory_base
        variant.info.update(peak_memory_mb=peak / 2**20, memory="CUDA max_memory_allocated")
    else:
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        variant.info.update(peak_memory_mb=rss_mb, memory="process max RSS (whole run)")


def run_steps(variant: Variant, steps: int) -> float:
    """Seconds ``steps`` steps of ``variant`` take, the device synchronised before and after."""
    synchronize(variant.device)
    start = time.perf_counter()
    for _ in range(steps):
        variant.run()
    synchronize(variant.device)
    return time.perf_counter() - start


def summarise(variant: Variant, times_ms: List[float], steps: int, warmup: int, repeats: int) -> Dict[str, Any]:
    median = statistics.median(times_ms)
    batch = variant.cfg.data.batch_size
    result = {"label": variant.label, "device": device_name(variant.device),
              "batch_size": batch, "images_per_s": 1000 * batch / median,
              "ms_per_step_median": median, "ms_per_step_min": min(times_ms),
              "ms_per_step_max": max(times_ms), "ms_per_step_all": times_ms,
              "steps": steps, "warmup": warmup, "repeats": repeats, **variant.info}
    flops = result.get("flops_per_step")
    if flops is not None:
        achieved = flops / (median / 1000)
        peak = peak_flops(variant.device, variant.cfg.runtime.amp)
        result.update(achieved_flops_per_s=achieved, peak_flops_per_s=peak,
                      share_of_peak=achieved / peak if peak else "n/a")
    return result


def measure(variants: List[Variant], steps: int, warmup: int, repeats: int) -> List[Dict[str, Any]]:
    for variant in variants:
        warm_up(variant, warmup)
    times: List[List[float]] = [[] for _ in variants]
    for _ in range(repeats):       # alternate, so a busy machine slows every variant alike
        for j, variant in enumerate(variants):
            times[j].append(1000 * run_steps(variant, steps) / steps)   # ms per step
    return [summarise(v, t, steps, warmup, repeats) for v, t in zip(variants, times)]


# --- output --------------------------------------------------------------------------------------
def format_result(result: Dict[str, Any]) -> str:
    what = "batch" if "loader" in result else "step"
    lines = [f"[{result['label']}] {result['device']}, batch {result['batch_size']}",
             f"  {result['images_per_s']:.1f} images/s, {result['ms_per_step_median']:.2f} ms/{what} "
             f"median (min {result['ms_per_step_min']:.2f}, max {result['ms_per_step_max']:.2f}, "
             f"{result['repeats']} repeats of {result['steps']})"]
    if result.get("flops_per_step") is not None:
        share = result["share_of_peak"]
        share = f"{100 * share:.1f}% of peak" if isinstance(share, float) else "share of peak n/a"
        lines.append(f"  {result['flops_per_step'] / 1e9:.2f} GFLOP/step, "
                     f"{result['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s achieved, {share}")
    lines.append(f"  peak memory {result['peak_memory_mb']:.0f} MB ({result['memory']})")
    details = ("loader", "num_workers", "distiller", "student", "teacher", "teacher_cache", "amp",
               "teacher_amp", "compile", "channels_last")
    lines.append("  " + ", ".join(f"{k}={result[k]}" for k in details if k in result))
    return "\n".join(lines)


def run(args) -> Dict[str, Any]:
    """One variant, or two timed alternately: ``--compare`` A and B (ratio B/A), ``--peer`` ours
    (loader + step) and the peer loop on the same config (ratio ours/peer)."""
    make = loader_variant if args.loader else pipeline_variant if args.pipeline else step_variant
    pairs = list(zip("AB", map(shlex.split, args.compare))) if args.compare else [("run", [])]
    variants = []
    for label, extra in pairs:
        overrides = args.overrides + extra
        cfg = bench_config(args.config, overrides, args.warmup + args.steps, args.real_data,
                           args.loader or args.pipeline or args.peer)
        made = [pipeline_variant("ours", cfg), peer_variant("peer", cfg)] if args.peer else [make(label, cfg)]
        for variant in made:
            variant.info.update(config=args.config, overrides=overrides)
        variants += made
    results = measure(variants, args.steps, args.warmup, args.repeats)
    if len(results) == 1:
        return results[0]
    a, b = results
    name, top, bottom = ("ratio_ours_over_peer", a, b) if args.peer else ("ratio_b_over_a", b, a)
    return {"a": a, "b": b, name: {key: top[key] / bottom[key]
                                   for key in ("images_per_s", "ms_per_step_median")}}


@exits_on_user_error
def main(argv=None) -> int:
    args = parse_args(argv)
    if min(args.steps, args.repeats) < 1 or args.warmup < 0:
        raise UserError("--steps and --repeats must be at least 1, --warmup at least 0")
    if args.peer and (args.compare or args.loader):
        raise UserError("--peer compares ours with the peer loop: it takes neither --compare nor --loader")
    output = run(args)
    if args.json:
        print(json.dumps(output))
    elif "a" not in output:
        print(format_result(output))
    else:
        ratio = output["ratio_b_over_a" if args.compare else "ratio_ours_over_peer"]
        print(format_result(output["a"]), format_result(output["b"]), sep="\n")
        print(f"{'ratio B/A' if args.compare else 'ratio ours/peer'}: images/s {ratio['images_per_s']:.3f}, "
              f"ms/step {ratio['ms_per_step_median']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
