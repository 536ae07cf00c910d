"""Assemble a run from its Config: data, student, teacher, distiller — the glue the CLIs share.

``train.py``, ``eval.py`` and ``tools/`` call these; the engine never does (it trains whatever
module it is handed). Every user mistake found here is a one-line ``UserError``.
"""
import dataclasses
import os
from typing import Dict, List, Optional, Tuple

import torch

import datasets
import models
from datasets.sources import CIFAR_SIZE, IMAGENET_SIZE
from datasets.transforms import is_small
from distillers import build_distiller, get_distiller_class, resolve_distiller_section
from engine.distributed import cuda_index, launched_processes
from launch.combination import check_combination
from utils.config import SCHEMA_DEFAULTS, Config, load_config, load_yaml_tree, replace_section
from utils.errors import UserError

# A few steps on a few synthetic images, whatever the network: seconds, not an epoch of a deep
# network (3 training steps of 16, one val pass of 32). The user's overrides come after these.
SMOKE_OVERRIDES = ["data.dataset=synthetic", "solver.epochs=1", "solver.milestones=[]",
                   "solver.warmup_epochs=0", "teacher.allow_random=true", "teacher.train_epochs=0",
                   "data.num_workers=0", "data.batch_size=16", "data.val_batch_size=32",
                   "data.train_size=48", "data.val_size=32", "log.print_freq=1"]


def load_run_config(path: str, overrides: Optional[List[str]] = None, smoke: bool = False,
                    here: bool = True) -> Config:
    """The resolved config of a run: file(s) + overrides + the distiller's own defaults, its
    options checked to go together (launch/combination.py) on this machine's device and process
    count (``here=False``: a config read to plan runs elsewhere, those two not judged).

    ``smoke`` turns any config into a seconds-long offline check of the whole pipeline
    (synthetic data, a few steps, random teacher weights when the checkpoint is absent); the
    caller then runs it with ``guard_validation=False``.
    """
    overrides = list(overrides or [])
    if smoke:
        overrides = SMOKE_OVERRIDES + smoke_image_size(path) + overrides
    provenance: Dict[str, str] = {}
    cfg = load_config(path, overrides, provenance)
    section = resolve_distiller_section(cfg.distiller, f"{path} (distiller section)", provenance)
    method = get_distiller_class(section["name"])
    if smoke:
        section = method.smoke_section(section, cfg.data.train_size)
        cfg = replace_section(cfg, "experiment",
                              output_dir=os.path.join(cfg.experiment.output_dir, "smoke"))
    cfg = dataclasses.replace(cfg, distiller=section)   # the section resolved: every key, defaults filled
    if method.needs_teacher and not cfg.teacher.arch:
        raise UserError(f"distiller '{section['name']}' needs a teacher: set teacher.arch in {path}")
    check_combination(cfg, method, device_type(cfg) if here else None,
                      launched_processes() if here else None,
                      where=lambda key: provenance.get(key, SCHEMA_DEFAULTS))
    return cfg


def smoke_image_size(path: str) -> List[str]:
    """An ImageNet config keeps its ImageNet models in a smoke run, on synthetic 112-pixel images
    (the models pool adaptively; a quarter of 224's cost); a CIFAR one keeps 32 pixels."""
    dataset = (load_yaml_tree(path).get("data") or {}).get("dataset")
    return ["data.image_size=112"] if dataset == "imagenet" else []


def smoke_notice(cfg: Config) -> str:
    """What a smoke run's numbers mean, said before they are printed."""
    path = cfg.teacher.checkpoint
    needs_teacher = get_distiller_class(cfg.distiller["name"]).needs_teacher
    # random weights are said once the teacher is built (build_teacher)
    teacher = f", the teacher from {path}" if needs_teacher and path and os.path.isfile(path) else ""
    return (f"smoke run: a few steps on synthetic data{teacher}: accuracy and loss are "
            "meaningless; this checks only that the pipeline runs")


def device_type(cfg: Config) -> str:
    """``cuda``, ``cpu`` or ``mps``: what ``runtime.device`` names (``auto``: CUDA if present)."""
    wanted = cfg.runtime.device
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return wanted.split(":")[0]


def resolve_device(cfg: Config, local_rank: int = 0) -> torch.device:
    wanted = device_type(cfg) if cfg.runtime.device == "auto" else cfg.runtime.device
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"runtime.device is '{cfg.runtime.device}' but no CUDA device is available; "
                        "use runtime.device=cpu")
    if wanted == "mps" and not torch.backends.mps.is_available():
        built = "has no MPS support" if not torch.backends.mps.is_built() else "finds no MPS device"
        raise UserError(f"runtime.device is 'mps' but this PyTorch build {built} (Apple GPUs "
                        "only); use runtime.device=cpu")
    return torch.device(f"cuda:{cuda_index(local_rank)}" if wanted == "cuda" else wanted)


def model_dataset(cfg: Config) -> str:
    """Which model family the data's image size takes: the 224-pixel ImageNet models above 64
    pixels, the 32-pixel CIFAR ones up to it. The size defaults as the data source defaults it
    (image folders 224, synthetic data 32), so the models always match the images."""
    if cfg.data.dataset == "imagenet":
        return "imagenet"
    default = IMAGENET_SIZE if cfg.data.dataset == "imagefolder" else CIFAR_SIZE
    return "cifar100" if is_small(cfg.data.image_size or default) else "imagenet"


def build_student(cfg: Config, num_classes: int) -> torch.nn.Module:
    return models.build_model(cfg.student.arch, num_classes=num_classes, dataset=model_dataset(cfg))


def build_teacher(cfg: Config, num_classes: int, input_shape=None) -> Optional[torch.nn.Module]:
    """The teacher with its checkpoint loaded, or None for methods without one.

    A random stand-in (``teacher.allow_random``, smoke runs) gets batch-norm statistics
    estimated on noise of ``input_shape`` so its logits have a trained teacher's scale.
    """
    if not get_distiller_class(cfg.distiller["name"]).needs_teacher:
        return None
    teacher = models.build_model(cfg.teacher.arch, num_classes=num_classes, dataset=model_dataset(cfg))
    path = cfg.teacher.checkpoint
    if path and (path == "torchvision" or os.path.lexists(path)):
        try:
            models.load_weights(teacher, path, arch=cfg.teacher.arch)
            return teacher
        except UserError:
            # a bad file stays an error; torchvision's weights out of reach (offline) may be
            # replaced by random ones where that is allowed (smoke runs)
            if not (cfg.teacher.allow_random and path == "torchvision"):
                raise
    if not cfg.teacher.allow_random:
        if path:
            raise UserError(f"teacher checkpoint not found: {path} (teacher.checkpoint); download "
                            "the released teachers or train one with configs/cifar100/vanilla/")
        raise UserError("teacher.checkpoint is not set: give the path of the teacher's weights "
                        "(e.g. checkpoints/teachers/resnet32x4_vanilla/ckpt_epoch_240.pth)")
    # smoke runs, benchmarks, tests: random weights stand in for a checkpoint that is not there,
    # where the pipeline matters and not what is learnt; in any other run that must not pass
    # without a word: the run prints this line at start and records it
    models.recalibrate_batchnorm(teacher, input_shape or (3, 32, 32))
    because = ("torchvision's weights are out of reach" if path == "torchvision"
               else f"its checkpoint {path} is absent" if path else "teacher.checkpoint is not set")
    teacher.random_weights_warning = (
        f"WARNING: teacher {cfg.teacher.arch} has random weights ({because}; teacher.allow_random"
        "=true): what the student learns from it means nothing (run.json: teacher.random_weights)")
    return teacher


def teacher_run_config(cfg: Config) -> Config:
    """The vanilla run that trains a missing teacher first (``teacher.train_epochs > 0``).

    Its run directory is the checkpoint's directory, so the file appears where the distillation
    run expects it.
    """
    path = cfg.teacher.checkpoint or ""
    if os.path.basename(path) not in ("best.pth", "last.pth"):
        raise UserError(f"teacher.train_epochs needs teacher.checkpoint to end in best.pth or "
                        f"last.pth (the files a run writes), got '{path}'")
    run_dir = os.path.dirname(path)
    cfg = replace_section(cfg, "experiment", output_dir=os.path.dirname(run_dir) or ".",
                          name=os.path.basename(run_dir))
    cfg = replace_section(cfg, "student", arch=cfg.teacher.arch)
    epochs = cfg.teacher.train_epochs
    cfg = replace_section(cfg, "solver", epochs=epochs,   # milestones past its end never fire
                          milestones=[m for m in cfg.solver.milestones if m <= epochs],
                          warmup_epochs=min(cfg.solver.warmup_epochs, epochs),
                          optimizer="sgd")   # DOT needs a distillation loss; CE alone has none
    cfg = replace_section(cfg, "teacher", arch=None, checkpoint=None, train_epochs=0)
    return dataclasses.replace(cfg, distiller={"name": "vanilla"})


def per_process_data(cfg: Config, world_size: int):
    """The data section one process uses: the config's batch sizes are global."""
    data = cfg.data
    for key in ("batch_size", "val_batch_size"):
        value = getattr(data, key)
        if value is not None and value % world_size:
            raise UserError(f"data.{key}={value} is the global batch and must divide evenly over "
                            f"{world_size} processes")
    val = data.val_batch_size // world_size if data.val_batch_size else None
    return dataclasses.replace(data, batch_size=data.batch_size // world_size, val_batch_size=val)


def build_run_loaders(cfg: Config, rank: int = 0, world_size: int = 1,
                      device: torch.device = torch.device("cpu")):
    """This process's loaders of a run, with the second view its method asks for."""
    strong_view = get_distiller_class(cfg.distiller["name"]).needs_strong_view
    return datasets.build_loaders(per_process_data(cfg, world_size), seed=cfg.experiment.seed, rank=rank,
                                  world_size=world_size, device=device, strong_view=strong_view)


def build_run(cfg: Config, rank: int = 0, world_size: int = 1,
              device: torch.device = torch.device("cpu")) -> Tuple[object, torch.nn.Module]:
    """Loaders and the distiller (student + teacher) of a run."""
    loaders = build_run_loaders(cfg, rank, world_size, device)
    if loaders.num_classes < 2 and cfg.distiller["name"] != "vanilla":
        raise UserError(f"the {cfg.data.dataset} data under {cfg.data.root} has {loaders.num_classes} "
                        f"class: distillation ('{cfg.distiller['name']}') needs at least 2 (with one "
                        "class every prediction is certain and there is nothing to transfer)")
    student = build_student(cfg, loaders.num_classes)
    teacher = build_teacher(cfg, loaders.num_classes, loaders.input_shape)
    distiller = build_distiller(cfg.distiller, student, teacher, input_shape=loaders.input_shape,
                                num_classes=loaders.num_classes, train_size=loaders.train_size,
                                train_targets=loaders.train_labels, seed=cfg.experiment.seed)
    if distiller.teacher is not None:
        distiller.teacher.amp = None if cfg.teacher.amp == "auto" else cfg.teacher.amp
    attach_teacher_cache(cfg, loaders, distiller, device, is_main=rank == 0)
    return loaders, distiller


def attach_teacher_cache(cfg: Config, loaders, distiller, device: torch.device,
                         is_main: bool = True) -> None:
    """``teacher.cache: auto|fp16|fp32``: serve a logit distiller's teacher from the exact view cache
    (distillers/teacher_cache.py) when the train loader's batches carry their views (the GPU
    loader); otherwise the teacher runs as usual and one line says why. ``auto`` stores fp16
    (1.6 GB for CIFAR-100 at 100 classes); ``fp32`` doubles that and equals the teacher exactly."""
    from datasets.gpu_loader import GpuCifarLoader, augment_batch
    from distillers.base import LogitDistiller
    from distillers.teacher_cache import TeacherCache, weights_sha256
    if cfg.teacher.cache == "off" or distiller.teacher is None:
        return
    train = loaders.train
    reason = (f"distiller '{cfg.distiller['name']}' needs more than the teacher's logits"
              if not isinstance(distiller, LogitDistiller) else
              "it is built from the GPU loader's images (use data.loader=gpu)"
              if not isinstance(train, GpuCifarLoader) else None)
    if reason:
        if is_main:
            print(f"teacher.cache=auto: not used, {reason}")
        return
    teacher = distiller.teacher.to(device).model
    distiller.teacher.cache = TeacherCache.load_or_build(
        teacher, train.images, train.mean, train.std, padding=train.padding, augment=augment_batch,
        directory=os.path.join(cfg.experiment.output_dir, "teacher_cache"),
        teacher_sha256=weights_sha256(teacher, cfg.teacher.checkpoint), is_main=is_main,
        dtype="fp16" if cfg.teacher.cache == "auto" else cfg.teacher.cache)
