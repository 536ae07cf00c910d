"""One training run from a resolved Config: set up, announce, train, summarise.

Under ``torchrun`` every process runs all of this: the collectives (teacher check, training,
evaluation) need every rank, and rank 0 alone writes files (config.yaml, run.json, checkpoints,
metrics, TensorBoard) and prints. The process group and the run lock are the run's lifetimes,
entered in ``run_training`` and left in reverse order, also on error.

Rank 0 holds the run directory's lock for the whole run (``utils.run_lock``) and, holding it,
removes the temporary files of writes a killed run left behind. What the directory already holds
decides whether the run starts, continues or stops in one line (``launch.run_dir``). A run whose
``last.pth`` already holds its last epoch is not trained again: it prints one line and exits 0,
writing its summary into ``run.json`` (and ``last.pth`` to ``best.pth``) only if a kill after the
final save had prevented that.
"""
import os
from contextlib import ExitStack
from typing import Any, Dict, Optional, Sequence

import datasets
from distillers import get_distiller_class
from engine.checkpoint import load_checkpoint
from engine.distributed import (SYNC_BATCHNORM_TYPES, barrier, cleanup, convert_sync_batchnorm,
                                init_distributed, is_initialized)
from engine.resume import repair_best
from engine.rng import seed_everything
from launch.build import build_run, resolve_device, teacher_run_config
from launch.record import build_record, done_line, read_record, summary_from_files
from launch.run_dir import check_run_files, checkpoint_to_resume, teacher_training_line
from launch.schedule import describe_schedule
from launch.teacher_check import check_teacher
from launch.training import build_trainer
from utils.atomic import remove_stale_temps, write_json, write_text
from utils.errors import UserError
from utils.logger import RunLogger, read_metrics_lines
from utils.run_lock import RunLock


NONDETERMINISTIC = " does not have a deterministic implementation"


def as_user_error(err: RuntimeError) -> Exception:
    """An operation without a deterministic kernel under ``runtime.deterministic: true`` is a
    choice the user made, so it ends in one line naming the operation; other errors pass."""
    message = str(err)
    if NONDETERMINISTIC not in message:
        return err
    operation = message.split(NONDETERMINISTIC)[0].strip().splitlines()[-1]  # "_histc_cuda with ..."
    return UserError(f"runtime.deterministic=true, but {operation} has no deterministic "
                     f"implementation on this device (PyTorch's list for "
                     f"torch.use_deterministic_algorithms): set runtime.deterministic=false")


def hyperparameters(cfg) -> Dict[str, Any]:
    """What tells the runs of a table apart, for TensorBoard's HParams: the method and its keys,
    the pair, the recipe's lr and epochs, the seed."""
    method = {f"distiller.{k}": v for k, v in cfg.distiller.items() if k != "name"}
    with_teacher = cfg.teacher.arch and get_distiller_class(cfg.distiller["name"]).needs_teacher
    pair = f"{cfg.teacher.arch}->{cfg.student.arch}" if with_teacher else cfg.student.arch
    return {"method": cfg.distiller["name"], "pair": pair, "student": cfg.student.arch,
            "teacher": cfg.teacher.arch or "", **method, "solver.lr": cfg.solver.lr,
            "solver.epochs": cfg.solver.epochs, "data.batch_size": cfg.data.batch_size,
            "seed": cfg.experiment.seed}


def _train_missing_teacher(cfg, argv: Sequence[str], is_main: bool, guard_validation: bool) -> None:
    """Every rank takes part (the teacher trains with DDP like any run); no rank can see the
    file appear before all have decided, since writing it needs every rank's training steps."""
    reason = teacher_training_line(cfg)   # missing, or its run unfinished (killed)
    if reason:
        teacher_cfg = teacher_run_config(cfg)
        if is_main:
            print(reason, flush=True)
        run_training(teacher_cfg, resume="auto", argv=argv, guard_validation=guard_validation)


def run_training(cfg, resume: Optional[str] = None, argv: Sequence[str] = (),
                 guard_validation: bool = True) -> Dict[str, Any]:
    """Train one run; under torchrun each process calls this. Its lifetimes, left in reverse
    order however the run ends: the process group set up here (under torchrun or srun; a nested
    run, a missing teacher trained first, reuses its caller's and leaves it alone), destroyed on
    success and aborted after an error, then (rank 0) the run directory's lock.
    ``guard_validation=False`` (``--smoke``): a non-finite validation does not stop the run."""
    try:
        with ExitStack() as lifetimes:
            if not is_initialized():
                lifetimes.push(lambda error, *_: cleanup(failed=error is not None))
            dist_info = init_distributed(resolve_device(cfg).type)
            device = resolve_device(cfg, dist_info.local_rank)
            _train_missing_teacher(cfg, argv, dist_info.is_main, guard_validation)
            barrier()
            if dist_info.is_main:
                check_run_files(cfg.run_dir)
                lifetimes.enter_context(RunLock(cfg.run_dir))
            return _run_locked(cfg, dist_info, device, resume, argv, guard_validation)
    except RuntimeError as err:
        raise as_user_error(err) from err


def _finish_saved_run(cfg, state: Dict[str, Any], is_main: bool) -> Dict[str, Any]:
    """The run's checkpoint holds its last epoch: one line, and the summary written to run.json
    if a kill after the final save had prevented it, and best.pth repaired if a kill between the
    final last.pth and best.pth writes left it older; nothing else is touched."""
    epoch, best_epoch = state["epoch"], state.get("best_epoch")
    if is_main and type(epoch) is int and type(best_epoch) is int:   # not a bool, not a damaged value
        repaired = repair_best(cfg.run_dir, os.path.join(cfg.run_dir, "last.pth"), epoch, best_epoch)
        if repaired:
            print(repaired, flush=True)
    record_path = os.path.join(cfg.run_dir, "run.json")
    record = read_record(record_path) or state.get("record") or {}
    summary = record.get("summary")
    if summary is not None:
        if is_main:
            print(f"{cfg.run_dir} is already finished (epoch {state['epoch']} of {cfg.solver.epochs}): "
                  f"nothing to do; {done_line(summary, cfg.run_dir)}", flush=True)
        return summary
    metrics, _ = read_metrics_lines(os.path.join(cfg.run_dir, "metrics.jsonl"))
    summary = summary_from_files(state, metrics, cfg.solver.epochs)
    if is_main:
        write_json(record_path, {**record, "summary": summary})
        print(f"the last epoch was saved but not summarised: {done_line(summary, cfg.run_dir)}", flush=True)
    return summary


def _run_locked(cfg, dist_info, device, resume: Optional[str], argv: Sequence[str],
                guard_validation: bool) -> Dict[str, Any]:
    removed = remove_stale_temps(cfg.run_dir, everything=True) if dist_info.is_main else []
    resume_path = checkpoint_to_resume(cfg.run_dir, resume)
    resume_state = load_checkpoint(resume_path) if resume_path else None
    if resume_state is not None and isinstance(resume_state.get("epoch"), int) \
            and resume_state["epoch"] >= cfg.solver.epochs:
        if os.path.abspath(resume_path) != os.path.abspath(os.path.join(cfg.run_dir, "last.pth")):
            raise UserError(f"{resume_path} already holds epoch {resume_state['epoch']} of "
                            f"{cfg.solver.epochs}: nothing to train; raise solver.epochs to continue it")
        return _finish_saved_run(cfg, resume_state, dist_info.is_main)
    seed_everything(cfg.experiment.seed, cfg.runtime.deterministic)
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
    if removed:
        logger.info(f"removed {len(removed)} temporary file(s) of interrupted writes: {', '.join(removed)}")
    if resume_path is None:
        logger.truncate_metrics(0)  # epochs of an earlier start that never reached a checkpoint
    effective = [distiller.describe(), *describe_schedule(cfg.solver, len(loaders.train))]
    fingerprint = datasets.dataset_fingerprint(cfg.data)
    record = build_record(cfg, device, dist_info.world_size, list(argv), fingerprint, effective)
    if getattr(distiller, "teacher", None) is not None:
        distiller.to(device)
        warning = getattr(distiller.teacher.model, "random_weights_warning", None)
        record["teacher"]["random_weights"] = warning is not None
        if warning:
            logger.info(warning)
        record["teacher"]["measured"] = check_teacher(cfg, distiller.teacher, loaders.val, device,
                                                      fingerprint, logger)
    if dist_info.is_main:
        write_text(os.path.join(cfg.run_dir, "config.yaml"), cfg.to_yaml())
        write_json(os.path.join(cfg.run_dir, "run.json"), record)
    logger.info(f"run {cfg.run_dir}: {cfg.student.arch} on {cfg.data.dataset} "
                f"({loaders.train_size} train / {loaders.val_size} val images), device {device}, "
                f"{dist_info.world_size} process(es), global batch {cfg.data.batch_size} "
                f"({cfg.data.batch_size // dist_info.world_size} per process){sync_bn}")
    for line in effective:
        logger.info(f"  {line}")
    trainer = build_trainer(cfg, distiller, loaders, device, logger, dist_info, record,
                            guard_validation=guard_validation)
    if resume_path:
        trainer.resume(resume_path, resume_state)
    summary = trainer.fit()
    logger.info(done_line(summary, cfg.run_dir))
    if dist_info.is_main:
        write_json(os.path.join(cfg.run_dir, "run.json"), {**record, "summary": summary})
    logger.hparams(hyperparameters(cfg), {"hparams/best_top1": summary["best_top1"],
                                          "hparams/last_top1": summary["last_top1"]})
    logger.close()
    return summary
