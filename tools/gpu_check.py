"""The GPU story in one command: run the CUDA tests, then measure, and print one Markdown table.

    python tools/gpu_check.py                       # on one CUDA GPU: tests + full table (<= 6 min)
    python tools/gpu_check.py --quick               # fewer steps, no compiled variant (<= 2 min)
    python tools/gpu_check.py --device cpu --quick  # every path a CPU can run (CI runs this)
    python tools/gpu_check.py --out DIR             # also DIR/gpu_check.md and DIR/gpu_check.json

What is measured, on generated data of the real shapes (no download, random teacher weights):
1. KD resnet32x4 -> resnet8x4, batch 64, CIFAR-100 shapes, loader + step per batch:
   (a) the common trainers' loop (PIL transforms in a DataLoader, fp32 eager, a host read every
   step: ``bench.py --peer``), (b) ours with the config's defaults, (c) + bf16 + channels_last,
   (d) + ``runtime.compile=reduce-overhead`` (CUDA graphs), (e) + the teacher cache, whose build
   is timed on the generated set and projected to CIFAR-100's 50,000 images, (f) (c) with the
   whole step captured as one CUDA graph (``runtime.cuda_graph``), (g) (f) + the cache. Each
   row: images/s,
   ms/step, share of the device's dense bf16 peak, peak memory, and the projected wall time of the
   240-epoch recipe (240 x 50,000 training images at the measured rate, 240 evaluations of 10,000
   images at the measured eval rate, plus the cache build where used).
2. DKD, DIST, FitNet, SRRL, ONE and KD with DOT (``solver.optimizer=dot``: two backward passes
   per step) on their fastest setting without compilation (bf16, channels_last, GPU loader, the
   teacher cache where the method takes it), one line each.
3. ImageNet ResNet34 -> ResNet18 on JPEGs of ImageNet-like sizes written by the script: PIL
   workers vs device decode, for the loader alone and for loader + step (bf16, channels_last).
Variants are timed alternately in one process where they are compared (bench.py's ``measure``),
so a busy machine slows each alike. A profile of one bf16 step (``torch.profiler``) is written
next to the table with ``--out``.
"""
import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from unittest import mock
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

import bench  # noqa: E402
from utils.atomic import write_text  # noqa: E402
from utils.errors import UserError, exits_on_user_error  # noqa: E402

KD = "configs/cifar100/kd/res32x4_res8x4.yaml"
METHODS = {"DKD": "configs/cifar100/dkd/res32x4_res8x4.yaml",
           "DIST": "configs/cifar100/dist/res32x4_res8x4.yaml",
           "FitNet": "configs/cifar100/fitnet/res32x4_res8x4.yaml",
           "SRRL": "configs/cifar100/srrl/wrn40_4_wrn16_2.yaml",
           "ONE": "configs/cifar100/one/res110.yaml",
           "KD+DOT": KD}
# what a method's line adds to the shared fastest setting
METHOD_OVERRIDES = {"DKD": ["teacher.cache=auto"], "DIST": ["teacher.cache=auto"],
                    "KD+DOT": ["teacher.cache=auto", "solver.optimizer=dot"]}
IMAGENET = "configs/imagenet/kd/res34_res18.yaml"
RECIPE = SimpleNamespace(epochs=240, train_images=50_000, val_images=10_000)
FAST = "runtime.amp=bf16 runtime.channels_last=true"
# --device cpu proves the code paths, not a speed: the smallest networks of each method's family
CPU_SMALL = {"ONE": ["student.arch=one_resnet32"]}
CPU_PAIR = ["student.arch=resnet8", "teacher.arch=resnet8"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--quick", action="store_true",
                        help="fewer steps, no compiled variant, smaller ImageNet set")
    parser.add_argument("--out", help="directory for gpu_check.md, gpu_check.json, profile.txt")
    parser.add_argument("--skip-tests", action="store_true", help="measure only")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS),
                        help="which measurements to take (default: all)")
    parser.add_argument("--test-timeout", type=int, default=240,
                        help="seconds for the CUDA tests (the compiled ones run last)")
    return parser.parse_args(argv)


# --- header and tests -------------------------------------------------------------------------
def versions(device: str) -> Dict[str, Any]:
    import torchvision
    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "cpu_cores": os.cpu_count()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    gpus=torch.cuda.device_count(), driver=nvidia_driver())
    else:
        info.update(gpu=None, device=bench.device_name(torch.device("cpu")))
    return info


def nvidia_driver() -> Optional[str]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return None


def run_cuda_tests(quick: bool, timeout: int) -> Dict[str, Any]:
    """tests/test_cuda.py in a child process (verbose, so a time-out still shows which tests
    passed): its pass/fail/skip counts, failures and the output's tail."""
    command = [sys.executable, "-m", "pytest", "tests/test_cuda.py", "-v", "-rfEs",
               "-p", "no:cacheprovider", "--durations=10", *(["-k", "not compiled"] if quick else [])]
    started = time.time()
    with tempfile.TemporaryFile("w+") as log:
        try:   # a time-out kills the child
            code = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
        except subprocess.TimeoutExpired:
            code = f"killed after {timeout} s"
        log.seek(0)
        text = log.read()
    outcomes = re.findall(r"^tests/test_cuda.py::(\S+) (PASSED|FAILED|SKIPPED|ERROR)", text, re.M)
    counts = {kind.lower(): sum(1 for _, k in outcomes if k == kind)
              for kind in ("PASSED", "FAILED", "SKIPPED", "ERROR")}
    failures = [f"{name} {kind}" for name, kind in outcomes if kind in ("FAILED", "ERROR")]
    return {"exit_code": code, "seconds": round(time.time() - started, 1), **counts,
            "failed": counts["failed"] + counts["error"], "failures": failures,
            "outcomes": outcomes, "tail": text[-6000:]}


# --- measuring ----------------------------------------------------------------------------------
def config(path: str, overrides: List[str], batches: int, out_dir: str, real_data=False):
    return bench.bench_config(path, [f"experiment.output_dir={out_dir}", *overrides], batches,
                              real_data, loader=True)


@torch.no_grad()
def eval_rate(variant: bench.Variant) -> float:
    """Validation images/s of the variant's module over its val loader (second pass timed)."""
    from engine.evaluate import evaluate
    runtime = variant.cfg.runtime
    evaluation = (variant.module, variant.val_loader, variant.device, runtime.amp, runtime.channels_last)
    evaluate(*evaluation)
    bench.synchronize(variant.device)
    start = time.perf_counter()
    count = evaluate(*evaluation)["samples"]
    bench.synchronize(variant.device)
    return count / (time.perf_counter() - start)


def projected_minutes(train_rate: float, eval_rate_: Optional[float], cache_s: float = 0.0) -> float:
    evaluating = RECIPE.epochs * RECIPE.val_images / eval_rate_ if eval_rate_ else 0.0
    return (RECIPE.epochs * RECIPE.train_images / train_rate + evaluating + cache_s) / 60


def row(result: Dict[str, Any], device: torch.device, other_flops: Optional[int] = None,
        **extra) -> Dict[str, Any]:
    """A table row of ``result``; ``other_flops`` stands for a step FLOPs were not counted on (the
    peer loop computes the same step as ours)."""
    flops = result.get("flops_per_step") or other_flops
    peak = bench.device_peaks(device).get("bf16")
    ms = result["ms_per_step_median"]
    share = flops / (ms / 1000) / peak if flops and peak else None
    return {"images_per_s": result["images_per_s"], "ms_per_step": ms,
            "ms_spread": [result["ms_per_step_min"], result["ms_per_step_max"]],
            "flops_per_step": flops, "share_of_bf16_peak": share,
            "peak_memory_mb": result.get("peak_memory_mb"), **extra}


TRIAL_STEPS = 3   # run before timing: a graphed variant's eager steps, its capture and a replay


def kd_table(args, device: torch.device, work: str, out: Dict[str, Any]) -> None:
    """Rows (a)-(g) of the KD pair; every variant built first, then timed alternately. The CPU
    check proves the code paths, not a speed: no compiled and no graphed row there."""
    from distillers import teacher_cache
    cuda = device.type == "cuda"
    steps, warmup, repeats = (10, 3, 2) if args.quick else (50, 5, 3)
    if not cuda:
        steps, warmup, repeats = 2, 1, 1
    workers = min(8, os.cpu_count() or 1) if cuda else 0
    base = [f"runtime.device={device.type}", f"data.num_workers={workers}"]
    base += (["data.val_size=2048"] if cuda
             else ["data.val_size=128", "data.batch_size=4", "data.val_batch_size=4", *CPU_PAIR])
    fast = base + ["data.loader=gpu", *FAST.split()]
    compiled = ["runtime.compile=reduce-overhead"] if cuda and not args.quick else []
    ours = bench.pipeline_variant
    variants = {"(a) common trainers' loop": (bench.peer_variant, base), "(b) ours, defaults": (ours, base),
                "(c) + bf16 + channels_last": (ours, fast)}
    if compiled:
        variants["(d) + compile (CUDA graphs)"] = (ours, fast + compiled)
    variants["(e) + teacher cache" + (" (d + cache)" if compiled else "")] = (
        ours, fast + ["teacher.cache=auto"] + compiled)
    if cuda:   # (c) with the whole step (forward, losses, backward, fused SGD) as one CUDA graph;
        # the module is not compiled (no compile time here; compiled + graphed is in tests/test_cuda.py)
        graphed = fast + ["runtime.cuda_graph=true"]
        variants["(f) (c) + whole step as one CUDA graph"] = (ours, graphed)
        variants["(g) (f) + teacher cache"] = (ours, graphed + ["teacher.cache=auto"])

    built, cache_build_s = [], {}
    for label, (make, overrides) in variants.items():
        cfg = config(KD, overrides, warmup + steps, os.path.join(work, label[:3].strip("() ")))
        try:   # a variant that cannot build or step is reported; the others are still measured
            # seconds spent computing teacher-cache logits (0 when none were); the computation
            # ends with a copy to the CPU, so it is synchronised
            with timed_calls(teacher_cache, "compute_view_logits") as build:
                variant = make(label, cfg)
            bench.run_steps(variant, TRIAL_STEPS)
        except Exception as err:
            if make is bench.peer_variant:
                raise
            traceback.print_exc()
            out.setdefault("errors", {})[f"kd {label}"] = f"{type(err).__name__}: {err}"
            continue
        if variant.info.get("teacher_cache"):   # built on the generated set: scaled to the recipe
            cache_build_s[label] = build["seconds"] * RECIPE.train_images / variant.trainer.loaders.train_size
        built.append(variant)
    results = bench.measure(built, steps, warmup, repeats)
    kd_flops = next((r.get("flops_per_step") for r in results if r.get("flops_per_step")), None)
    rows, peer = {}, results[0]["images_per_s"]   # (a), the peer loop, is always built first
    for variant, result in zip(built, results):
        cache_s, rate = cache_build_s.get(variant.label), eval_rate(variant)
        rows[variant.label] = row(result, device, kd_flops, eval_images_per_s=rate,
                                  cache_build_s_projected=cache_s,
                                  projected_240_epochs_min=projected_minutes(
                                      result["images_per_s"], rate, cache_s or 0.0),
                                  overrides=variants[variant.label][1],
                                  x_common_loop=result["images_per_s"] / peer)
    first = built[0].cfg
    out["kd"] = {"pair": f"{first.teacher.arch} -> {first.student.arch}", "batch": first.data.batch_size,
                 "timing": dict(steps=steps, warmup=warmup, repeats=repeats), "rows": rows}
    if args.out and cuda:
        for prefix, name in (("(c)", "profile.txt"), ("(f)", "profile_cuda_graph.txt")):
            chosen = [v for v in built if v.label.startswith(prefix)]
            if chosen:   # the eager bf16 step; what is left around the step's graph
                profile_step(chosen[0], args.out, name)


@contextlib.contextmanager
def timed_calls(owner, name: str, device: torch.device = torch.device("cpu")):
    """Seconds spent in ``owner.<name>`` inside the block, summed over its calls (``device``
    synchronised around each call, so queued work is counted where it is done)."""
    function, spent = getattr(owner, name), {"seconds": 0.0}

    def timed(*args, **kwargs):
        bench.synchronize(device)
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            bench.synchronize(device)
            spent["seconds"] += time.perf_counter() - started

    with mock.patch.object(owner, name, timed):   # the original back when the block ends
        yield spent


def decode_share(cfg, device: torch.device, batches: int) -> Dict[str, float]:
    """Where the device-decode loader's time goes: ms per batch in the batched JPEG decode
    (``jpeg_loader.decode_batch``) against the whole batch (crops, resizes, flips, normalising
    and the workers' reads the rest), over ``batches`` batches after one warm-up batch."""
    from datasets import jpeg_loader
    variant = bench.loader_variant("decode share", cfg)
    bench.run_steps(variant, 1)
    with timed_calls(jpeg_loader, "decode_batch", device) as decode:
        total = bench.run_steps(variant, batches)
    return {"decode_ms_per_batch": 1000 * decode["seconds"] / batches,
            "batch_ms": 1000 * total / batches, "decode_share": decode["seconds"] / total}


def profile_step(variant, out_dir: str, name: str = "profile.txt") -> None:
    """torch.profiler over 5 steps of ``variant``, as ``out_dir/name``: where a step's time goes."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        bench.run_steps(variant, 5)
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25)
    write_text(os.path.join(out_dir, name), f"{variant.label}: 5 steps\n{table}\n")


def methods_table(args, device: torch.device, work: str, out: Dict[str, Any]) -> None:
    cuda = device.type == "cuda"
    steps, warmup, repeats = (5, 2, 1) if args.quick else (30, 5, 2)
    if not cuda:
        steps, warmup, repeats = 1, 1, 1
    base = [f"runtime.device={device.type}", "data.num_workers=0", "data.val_size=64",
            *(["data.loader=gpu", *FAST.split()] if cuda else ["data.batch_size=4", "data.val_batch_size=4"])]
    rows = {}
    for name, path in METHODS.items():
        overrides = base + METHOD_OVERRIDES.get(name, []) + ([] if cuda else CPU_SMALL.get(name, CPU_PAIR))
        try:
            cfg = config(path, overrides, warmup + steps, os.path.join(work, name))
            variant = bench.pipeline_variant(name, cfg)
            result = bench.measure([variant], steps, warmup, repeats)[0]
            rows[name] = row(result, device, pair=f"{cfg.teacher.arch or '-'} -> {cfg.student.arch}",
                             overrides=overrides,
                             projected_240_epochs_min=projected_minutes(result["images_per_s"], None))
        except Exception as err:   # one method's failure must not hide the others' figures
            rows[name] = {"error": f"{type(err).__name__}: {err}"}
            traceback.print_exc()
        finally:
            torch.cuda.empty_cache()   # a no-op without CUDA
    out["methods"] = rows


def imagenet_table(args, device: torch.device, work: str, out: Dict[str, Any]) -> None:
    from datasets.synthetic import write_image_folder
    cuda = device.type == "cuda"
    per_class, classes = ((4 if args.quick else 10), 100) if cuda else (2, 4)
    root = os.path.join(work, "imagenet_like")
    started = time.perf_counter()
    write_image_folder(root, classes, per_class, (500, 375), seed=0)
    written = time.perf_counter() - started
    batch = 256 if cuda else 4
    workers = min(16, os.cpu_count() or 1) if cuda else 0
    common = [f"runtime.device={device.type}", "data.dataset=imagefolder", f"data.root={root}",
              f"data.num_classes={classes}", f"data.batch_size={batch}", f"data.val_batch_size={batch}",
              f"data.num_workers={workers}", "teacher.checkpoint=null",   # random weights
              *(FAST.split() if cuda else ["data.image_size=96"])]
    steps, warmup, repeats = ((3, 1, 1) if args.quick else (8, 3, 2)) if cuda else (1, 1, 1)
    rows = {}
    for what, make in (("loader", bench.loader_variant), ("loader + step", bench.pipeline_variant)):
        built = []
        for name in ("torch", "gpu"):
            cfg = config(IMAGENET, common + [f"data.loader={name}"], warmup + steps,
                         os.path.join(work, "inet"), real_data=True)
            built.append(make(f"{what}, {'PIL workers' if name == 'torch' else 'device decode'}", cfg))
        for variant, result in zip(built, bench.measure(built, steps, warmup, repeats)):
            rows[variant.label] = row(result, device)
        del built
        torch.cuda.empty_cache()
    gpu_cfg = config(IMAGENET, common + ["data.loader=gpu"], warmup + steps + 1,
                     os.path.join(work, "inet"), real_data=True)
    out["imagenet"] = {"pair": "ResNet34 -> ResNet18", "batch": batch, "loader_workers": workers,
                       "crop": 224 if cuda else 96, "images": classes * per_class,
                       "image_size": "500x375 JPEG", "write_s": written, "rows": rows,
                       "device_decode_split": decode_share(gpu_cfg, device, steps)}


SECTIONS = {"kd": kd_table, "methods": methods_table, "imagenet": imagenet_table}


# --- output ---------------------------------------------------------------------------------------
def fmt(value, spec: str = ",.0f", none: str = "—") -> str:
    return none if value is None else format(value, spec)


def markdown(report: Dict[str, Any]) -> str:
    h, tests, kd, methods, inet = (report.get(key)
                                   for key in ("header", "tests", "kd", "methods", "imagenet"))
    lines = [f"## GPU check, {h['date']}", "",
             f"{h.get('gpu') or h.get('device')}"
             + (f" ({h['gpu_memory_gib']} GiB, driver {h['driver']}, {h['gpus']} GPU(s))" if h.get("gpu") else "")
             + f"; CUDA {h['cuda']}, cuDNN {h['cudnn']}, torch {h['torch']}, torchvision {h['torchvision']}, "
             f"Python {h['python']}, {h['cpu_cores']} CPU cores. Command: `{report['command']}`", ""]
    if tests:
        lines += [f"CUDA tests (tests/test_cuda.py): {tests['passed']} passed, {tests['failed']} failed, "
                  f"{tests['skipped']} skipped in {tests['seconds']} s (exit {tests['exit_code']})", ""]
        lines += [f"- {line}" for line in tests["failures"]] + ([""] if tests["failures"] else [])
    if kd:
        lines += [f"### KD {kd['pair']}, batch {kd['batch']}, CIFAR-100 shapes (loader + step)", "",
                  "| variant | images/s | ms/step | × common loop | share of bf16 peak | peak memory | eval images/s | 240-epoch recipe |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for label, r in kd["rows"].items():
            cache = (f" (incl. cache build {r['cache_build_s_projected']:.0f} s)"
                     if r.get("cache_build_s_projected") else "")
            lines.append(f"| {label} | {fmt(r['images_per_s'])} | {r['ms_per_step']:.2f} | "
                         f"{r['x_common_loop']:.2f} | {fmt(r['share_of_bf16_peak'], '.1%')} | "
                         f"{fmt(r['peak_memory_mb'])} MB | {fmt(r['eval_images_per_s'])} | "
                         f"{r['projected_240_epochs_min']:.1f} min{cache} |")
        lines.append("")
    if methods:
        lines += ["### Other methods, fastest setting without compilation (bf16, channels_last, GPU loader; cache for DKD/DIST/KD+DOT)", "",
                  "| method | pair | images/s | ms/step | share of bf16 peak | peak memory | 240 epochs (train only) |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for name, r in methods.items():
            if "error" in r:
                lines.append(f"| {name} | failed: {r['error'][:120]} | | | | | |")
                continue
            lines.append(f"| {name} | {r['pair']} | {fmt(r['images_per_s'])} | {r['ms_per_step']:.2f} | "
                         f"{fmt(r['share_of_bf16_peak'], '.1%')} | {fmt(r['peak_memory_mb'])} MB | "
                         f"{r['projected_240_epochs_min']:.1f} min |")
        lines.append("")
    if inet:
        lines += [f"### ImageNet {inet['pair']}, batch {inet['batch']}, {inet['images']} generated "
                  f"{inet['image_size']}s cropped to {inet['crop']}, {inet['loader_workers']} loader "
                  f"workers{', bf16 + channels_last' if h.get('gpu') else ''}", "",
                  "| what | images/s | ms/batch | share of bf16 peak |", "|---|---:|---:|---:|"]
        for label, r in inet["rows"].items():
            lines.append(f"| {label} | {fmt(r['images_per_s'])} | {r['ms_per_step']:.1f} | "
                         f"{fmt(r['share_of_bf16_peak'], '.1%')} |")
        split = inet.get("device_decode_split")
        if split:
            lines += ["", f"Device decode, where a batch's {split['batch_ms']:.1f} ms go: "
                          f"{split['decode_ms_per_batch']:.1f} ms ({split['decode_share']:.0%}) in the "
                          f"batched JPEG decode, the rest in the workers' reads, the per-sample "
                          f"crops/resizes/flips and normalising (each call synchronised)."]
        lines.append("")
    for section, error in report.get("errors", {}).items():
        lines.append(f"- {section} failed: {error}")
    lines.append(f"Total time: {report['seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


def save(report: Dict[str, Any], out_dir: Optional[str]) -> None:
    if not out_dir:
        return
    os.makedirs(out_dir, exist_ok=True)
    write_text(os.path.join(out_dir, "gpu_check.json"), json.dumps(report, indent=1, default=str))
    write_text(os.path.join(out_dir, "gpu_check.md"), markdown(report))


@exits_on_user_error
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("no CUDA device is available; run with --device cpu --quick to check the "
                        "script's CPU paths")
    started = time.time()
    device = torch.device(args.device)
    report: Dict[str, Any] = {"header": versions(args.device), "errors": {},
                              "command": " ".join(["python", "tools/gpu_check.py", *(argv or sys.argv[1:])])}
    if not args.skip_tests:
        tests = report["tests"] = run_cuda_tests(args.quick, timeout=args.test_timeout)
        print(f"CUDA tests: {tests['passed']} passed, {tests['failed']} failed ({tests['seconds']} s)", flush=True)
        save({**report, "seconds": time.time() - started}, args.out)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        for name in args.sections:
            section, t0 = SECTIONS[name], time.time()
            try:
                section(args, device, work, report)
            except Exception as err:   # keep the other sections' figures
                traceback.print_exc()
                report["errors"][name] = f"{type(err).__name__}: {err}"
            print(f"{name}: {time.time() - t0:.0f} s", flush=True)
            report["seconds"] = time.time() - started
            save(report, args.out)
    print(markdown(report))
    tests = report.get("tests")   # pytest exits non-zero on any failed test
    return 1 if report["errors"] or (tests and tests["exit_code"] != 0) else 0


if __name__ == "__main__":
    sys.exit(main())
