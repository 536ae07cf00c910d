"""What a run directory already holds, read before a run writes into it.

A run's files are the only record of its training: a new run must not overwrite them by
accident, a resume must not trip over one that was damaged or replaced, and a run whose
``last.pth`` is gone (users delete it from finished runs to save disk) cannot be continued, so
it must not silently start again over its ``best.pth`` and ``metrics.jsonl``. Each of these is
one line naming what to do. Two cases are mended instead, where nothing can be lost: a
``best.pth`` older than the best epoch ``last.pth`` holds (a kill between their writes), and a
smoke run's earlier output (smoke runs start afresh each time).
"""
import os
import shutil
from typing import List, Optional

from engine.checkpoint import load_checkpoint
from launch.build import smoke_notice
from launch.record import read_record
from utils.atomic import check_replaceable
from utils.errors import UserError
from utils.logger import check_tensorboard_directory, damaged_metrics_line, read_metrics_lines
from utils.run_lock import LOCK_NAME, RunLock

RUN_FILES = ("last.pth", "best.pth", "metrics.jsonl", "run.json", "config.yaml")
TB_DIR = "tb"   # TensorBoard's event files


def check_run_files(run_dir: str) -> None:
    """Each run file that exists is a regular file and ``tb`` a directory, checked before the
    lock is taken (``.lock`` is one of them) and before anything is written: a directory named
    ``metrics.jsonl`` or a file named ``tb`` would otherwise stop the run midway, after the
    teacher check and the first writes. A link is refused as every writer refuses it
    (``utils.atomic.check_replaceable``)."""
    for name in (*RUN_FILES, LOCK_NAME):
        check_replaceable(os.path.join(run_dir, name))
    check_tensorboard_directory(os.path.join(run_dir, TB_DIR))


def existing_run_files(run_dir: str) -> List[str]:
    """The names of the run files in ``run_dir`` (``tb/`` marked as a directory)."""
    return [name for name in (*RUN_FILES, f"{TB_DIR}/")
            if os.path.lexists(os.path.join(run_dir, name.rstrip("/")))]


def _trained_without_last(run_dir: str) -> bool:
    """Files that only a run past its first checkpoint leaves: ``best.pth``, a metrics line
    beyond epoch 1 (epoch 1 is logged just before its first save, so a kill in between leaves
    it) or a summary in ``run.json``. Without ``last.pth`` such a run cannot be continued."""
    if os.path.lexists(os.path.join(run_dir, "best.pth")):
        return True
    metrics, _ = read_metrics_lines(os.path.join(run_dir, "metrics.jsonl"))
    record = read_record(os.path.join(run_dir, "run.json")) or {}
    return any(m["epoch"] > 1 for m in metrics) or "summary" in record


def checkpoint_to_resume(run_dir: str, resume: Optional[str]) -> Optional[str]:
    """The checkpoint the run continues from (None: it starts at epoch 1), or one line when
    starting would overwrite a run: every run file counts, not only ``last.pth``."""
    if resume not in (None, "auto"):
        return resume   # a checkpoint named on the command line
    last = os.path.join(run_dir, "last.pth")
    if os.path.exists(last):
        if resume is None:
            try:   # the epoch only adorns the message; a damaged last.pth must not hide it
                epoch = load_checkpoint(last).get("epoch", "?")
            except UserError:
                epoch = "?"
            raise UserError(f"{run_dir} already holds a run (last.pth at epoch {epoch}): pass "
                            "--resume auto to continue it, or set another experiment.name")
        _check_metrics(run_dir)
        return last
    found = existing_run_files(run_dir)
    if not found:
        return None
    if _trained_without_last(run_dir):
        raise UserError(f"{run_dir} holds a run ({', '.join(found)}) but no last.pth to continue "
                        "it from (deleted?): set another experiment.name, or move those files "
                        "away to train it again from epoch 1")
    if resume is None:
        raise UserError(f"{run_dir} already holds a run stopped before its first checkpoint "
                        f"({', '.join(found)}): pass --resume auto to start it again, or set "
                        "another experiment.name")
    return None   # --resume auto of a run killed before its first checkpoint: epoch 1 again


def _check_metrics(run_dir: str) -> None:
    """A complete ``metrics.jsonl`` line without an integer epoch is damage, not a kill (which
    leaves at most a partial last line): resume would otherwise keep or drop it by guess."""
    path = os.path.join(run_dir, "metrics.jsonl")
    damaged = damaged_metrics_line(path)
    if damaged is not None:
        number, problem = damaged
        raise UserError(f"{path} line {number} {problem}: correct or delete that line, then resume")


def teacher_training_line(cfg) -> Optional[str]:
    """Why the teacher's own run must run before distilling (``teacher.train_epochs > 0``), as
    the line to print; None when its checkpoint is there and its run, if it made it, finished.

    A teacher run killed after its first epoch leaves a ``best.pth``: the file exists but its
    run record (``run.json`` beside it, written before the first epoch) has no summary. That run
    is continued with ``--resume auto`` until it is finished. A checkpoint without a run record
    beside it was not trained here (a released teacher) and is used as it is."""
    path, epochs = cfg.teacher.checkpoint, cfg.teacher.train_epochs
    if epochs <= 0 or not path:
        return None
    if not os.path.exists(path):
        return (f"teacher checkpoint {path} is missing: training {cfg.teacher.arch} for "
                f"{epochs} epochs first")
    record_path = os.path.join(os.path.dirname(path), "run.json")
    if os.path.lexists(record_path) and "summary" not in (read_record(record_path) or {}):
        return (f"teacher checkpoint {path} belongs to a run that did not finish (its run.json "
                f"has no summary): continuing that run to its {epochs} epochs first")
    return None


def start_smoke_run(cfg, resume: Optional[str], is_first: bool) -> None:
    """A smoke run starts afresh each time, so that ``--smoke`` can be repeated (after editing
    code) without deleting its directory by hand: the first process removes this config's
    earlier smoke output and says what the run's numbers mean."""
    if resume:
        raise UserError("--smoke starts afresh each time: --resume does not apply to it")
    if is_first:
        start_afresh(cfg.run_dir)
        print(smoke_notice(cfg), flush=True)


def start_afresh(run_dir: str) -> None:
    """Remove a run's files, holding its lock (a smoke run's earlier output). Only the run's
    own file names are removed (a link, not its target)."""
    if not os.path.isdir(run_dir):
        return
    check_run_files(run_dir)
    with RunLock(run_dir):
        for name in existing_run_files(run_dir):
            path = os.path.join(run_dir, name.rstrip("/"))
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
