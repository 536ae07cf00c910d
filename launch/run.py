"""One training run from a resolved Config: set up, announce, train, summarise.

Under ``torchrun`` every process runs all of this: the collectives (teacher check, training,
evaluation) need every rank, and rank 0 alone writes files (config.yaml, run.json, checkpoints,
metrics, TensorBoard) and prints. The process group is destroyed at the end, also on error.
"""
import os
from typing import Any, Dict, List, Optional, Sequence

import torch

import datasets
from engine.checkpoint import load_checkpoint
from engine.distributed import (SYNC_BATCHNORM_TYPES, barrier, cleanup, convert_sync_batchnorm,
                                init_distributed, is_initialized)
from engine.rng import seed_everything
from engine.trainer import Trainer
from launch.build import build_run, resolve_device, teacher_run_config
from launch.record import build_record, write_json
from launch.teacher_check import check_teacher
from utils.errors import UserError
from utils.logger import RunLogger


def describe_schedule(solver, steps_per_epoch: int) -> List[str]:
    """The lr of each epoch range and the number of optimizer steps, as the run will use them."""
    bounds = [0, *[m for m in solver.milestones if m < solver.epochs], solver.epochs]
    ranges = [f"{solver.lr * solver.gamma ** i:.4g} (epochs {lo + 1}-{hi})"
              for i, (lo, hi) in enumerate(zip(bounds, bounds[1:])) if hi > lo]
    warmup = f", linear warm-up over {solver.warmup_epochs} epochs" if solver.warmup_epochs else ""
    return [f"lr = {', '.join(ranges)}{warmup}",
            f"{solver.epochs} epochs x {steps_per_epoch} steps = {solver.epochs * steps_per_epoch} optimizer steps"]


def hyperparameters(cfg) -> Dict[str, Any]:
    """What tells the runs of a table apart, for TensorBoard's HParams: the method and its keys,
    the pair, the recipe's lr and epochs, the seed."""
    method = {f"distiller.{k}": v for k, v in cfg.distiller.items() if k != "name"}
    with_teacher = cfg.teacher.arch and cfg.distiller["name"] not in ("vanilla", "one")
    pair = f"{cfg.teacher.arch}->{cfg.student.arch}" if with_teacher else cfg.student.arch
    return {"method": cfg.distiller["name"], "pair": pair, "student": cfg.student.arch,
            "teacher": cfg.teacher.arch or "", **method, "solver.lr": cfg.solver.lr,
            "solver.epochs": cfg.solver.epochs, "data.batch_size": cfg.data.batch_size,
            "seed": cfg.experiment.seed}


def _resume_path(cfg, resume: Optional[str]) -> Optional[str]:
    last = os.path.join(cfg.run_dir, "last.pth")
    if resume == "auto":
        return last if os.path.exists(last) else None
    if resume is None and os.path.exists(last):
        epoch = load_checkpoint(last).get("epoch", "?")
        raise UserError(f"{cfg.run_dir} already holds a run (last.pth at epoch {epoch}): pass "
                        "--resume auto to continue it, or set another experiment.name")
    return resume


def _train_missing_teacher(cfg, argv: Sequence[str], is_main: bool) -> None:
    """Every rank takes part (the teacher trains with DDP like any run); no rank can see the
    file appear before all have decided, since writing it needs every rank's training steps."""
    path = cfg.teacher.checkpoint
    if cfg.teacher.train_epochs > 0 and path and not os.path.exists(path):
        teacher_cfg = teacher_run_config(cfg)
        if is_main:
            print(f"teacher checkpoint {path} is missing: training {cfg.teacher.arch} for "
                  f"{cfg.teacher.train_epochs} epochs first", flush=True)
        run_training(teacher_cfg, resume="auto", argv=argv)


def run_training(cfg, resume: Optional[str] = None, argv: Sequence[str] = ()) -> Dict[str, Any]:
    """Train one run; under torchrun each process calls this (the first call sets up the
    process group, and the call that set it up destroys it, on success or error)."""
    device = resolve_device(cfg)
    owns_group = not is_initialized()
    dist_info = init_distributed(device.type)
    failed = True
    try:
        summary = _run(cfg, dist_info, resume, argv)
        failed = False
        return summary
    finally:
        if owns_group:
            cleanup(failed=failed)


def _run(cfg, dist_info, resume: Optional[str], argv: Sequence[str]) -> Dict[str, Any]:
    device = resolve_device(cfg, dist_info.local_rank)
    _train_missing_teacher(cfg, argv, dist_info.is_main)
    barrier()
    seed_everything(cfg.experiment.seed, cfg.runtime.deterministic)
    resume_path = _resume_path(cfg, resume)
    loaders, distiller = build_run(cfg, dist_info.rank, dist_info.world_size, device)
    if loaders.val_size < dist_info.world_size:
        raise UserError(f"the val set has {loaders.val_size} images, fewer than the "
                        f"{dist_info.world_size} processes: every process needs one to evaluate")
    sync_bn = ""
    if cfg.runtime.sync_bn and dist_info.enabled:
        # the distiller's own modules only: the teacher lives outside its module tree and keeps
        # its frozen, eval-mode BatchNorm
        distiller = convert_sync_batchnorm(distiller, device.type)
        layers = sum(isinstance(m, SYNC_BATCHNORM_TYPES) for m in distiller.modules())
        sync_bn = f", SyncBatchNorm on {layers} layers"
    logger = RunLogger(cfg.run_dir, cfg.log.tensorboard, enabled=dist_info.is_main)
    effective = [distiller.describe(), *describe_schedule(cfg.solver, len(loaders.train))]
    fingerprint = datasets.dataset_fingerprint(cfg.data)
    record = build_record(cfg, device, dist_info.world_size, list(argv), fingerprint, effective)
    if getattr(distiller, "teacher", None) is not None:
        distiller.to(device)
        record["teacher"]["measured"] = check_teacher(cfg, distiller.teacher, loaders.val, device,
                                                      fingerprint, logger)
    if dist_info.is_main:
        with open(os.path.join(cfg.run_dir, "config.yaml"), "w") as f:
            f.write(cfg.to_yaml())
        write_json(os.path.join(cfg.run_dir, "run.json"), record)
    logger.info(f"run {cfg.run_dir}: {cfg.student.arch} on {cfg.data.dataset} "
                f"({loaders.train_size} train / {loaders.val_size} val images), device {device}, "
                f"{dist_info.world_size} process(es), global batch {cfg.data.batch_size} "
                f"({cfg.data.batch_size // dist_info.world_size} per process){sync_bn}")
    for line in effective:
        logger.info(f"  {line}")
    trainer = Trainer(distiller, loaders, cfg, device, logger, dist_info, record)
    if resume_path:
        trainer.resume(resume_path)
    summary = trainer.fit()
    logger.info(f"done: best top-1 {summary['best_top1']:.2f} (epoch {summary['best_epoch']}), "
                f"last top-1 {summary['last_top1']:.2f}, {summary['time_s']:.0f} s, "
                f"{summary['images_per_s']:.0f} images/s -> {cfg.run_dir}")
    if dist_info.is_main:
        write_json(os.path.join(cfg.run_dir, "run.json"), {**record, "summary": summary})
    logger.hparams(hyperparameters(cfg), {"hparams/best_top1": summary["best_top1"],
                                          "hparams/last_top1": summary["last_top1"]})
    logger.close()
    return summary
