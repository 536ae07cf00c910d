"""One training run from a resolved Config: set up, announce, train, summarise."""
import os
from typing import Any, Dict, List, Optional, Sequence

import torch

import datasets
from engine.checkpoint import load_checkpoint
from engine.distributed import barrier, init_distributed
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


def _resume_path(cfg, resume: Optional[str]) -> Optional[str]:
    last = os.path.join(cfg.run_dir, "last.pth")
    if resume == "auto":
        return last if os.path.exists(last) else None
    if resume is None and os.path.exists(last):
        epoch = load_checkpoint(last).get("epoch", "?")
        raise UserError(f"{cfg.run_dir} already holds a run (last.pth at epoch {epoch}): pass "
                        "--resume auto to continue it, or set another experiment.name")
    return resume


def _train_missing_teacher(cfg, argv: Sequence[str]) -> None:
    path = cfg.teacher.checkpoint
    if cfg.teacher.train_epochs > 0 and path and not os.path.exists(path):
        teacher_cfg = teacher_run_config(cfg)
        print(f"teacher checkpoint {path} is missing: training {cfg.teacher.arch} for "
              f"{cfg.teacher.train_epochs} epochs first", flush=True)
        run_training(teacher_cfg, resume="auto", argv=argv)


def run_training(cfg, resume: Optional[str] = None, argv: Sequence[str] = ()) -> Dict[str, Any]:
    device = resolve_device(cfg)
    dist_info = init_distributed(device.type)
    device = resolve_device(cfg, dist_info.local_rank)
    if dist_info.is_main:
        _train_missing_teacher(cfg, argv)
    barrier()
    seed_everything(cfg.experiment.seed, cfg.runtime.deterministic)
    resume_path = _resume_path(cfg, resume)
    loaders, distiller = build_run(cfg, dist_info.rank, dist_info.world_size, device)
    if cfg.runtime.sync_bn and dist_info.enabled:
        distiller = torch.nn.SyncBatchNorm.convert_sync_batchnorm(distiller)
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
                f"{dist_info.world_size} process(es), batch {cfg.data.batch_size} per process")
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
    logger.close()
    return summary
