"""The epoch loop: train, evaluate, checkpoint, log — for any module, on 1..N processes.

The module's training forward is ``module(batch, epoch) -> (logits, {name: loss})`` with the
loader's whole ``utils.batch.Batch`` and 1-based epochs; its eval forward ``module(batch)``
returns logits (or named logits). Running sums stay on the
device and are read every ``print_freq`` steps, which is also when a non-finite loss is caught.

A checkpoint is written only when the epoch's weights (every tensor of the module) and its
validation are finite: weights that diverge in an epoch's last steps stop the run before the
save, so ``last.pth`` always holds the last good epoch, and every stop (divergence, a full disk,
SIGINT/SIGTERM) names that file. ``last.pth`` is written before ``best.pth``; a kill between the
two leaves ``last.pth`` as the newest best epoch, and resume copies it to ``best.pth``.

Exact resume: everything that decides the future is in ``last.pth`` (weights, method modules,
optimizer, scheduler, scaler, epoch, step, RNG states, best metric), and each epoch's data order
and augmentation depend only on (seed, epoch) through ``loaders.set_epoch``; a run restarted from
the end of epoch e therefore repeats epoch e+1 exactly as an uninterrupted run computes it.
"""
import dataclasses
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch

from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.resume import check_resumable, repair_best
from engine.distributed import DistInfo, all_reduce_sum, barrier, broadcast_buffers
from engine.evaluate import evaluate, on_device
from engine.rng import get_rng_state, set_rng_state
from engine.steps import StepResult, all_finite
from utils.atomic import WriteFailed, write_failure
from utils.errors import UserError
from utils.stopping import Stopped


@dataclass
class TrainState:
    epoch: int = 0          # completed epochs
    step: int = 0           # optimizer steps taken
    best_top1: float = float("-inf")
    best_epoch: int = 0


class RunningSums:
    """An epoch's running sums of the steps' ``step_sums``, on the device, read by name: the
    total loss, each of the method's terms (its weights applied: they sum to ``loss``), the
    correct predictions and the sample count."""

    def __init__(self, method_losses):
        self.loss_names = ["loss", *(f"weighted/{name}" for name in method_losses)]
        self.names = [*self.loss_names, "correct", "count"]
        self.total: Optional[torch.Tensor] = None

    def add(self, sums: torch.Tensor) -> None:
        self.total = sums.clone() if self.total is None else self.total.add_(sums)

    def read(self, all_processes: bool = False) -> Dict[str, float]:
        """One host read (of the sums over every process when ``all_processes``)."""
        total = all_reduce_sum(self.total.clone()) if all_processes else self.total
        return dict(zip(self.names, total.tolist()))


def checkpoint_state_of(module) -> Dict[str, Any]:
    if hasattr(module, "checkpoint_state"):
        return module.checkpoint_state()
    return {"model": module.state_dict()}


def load_state_into(module, state: Dict[str, Any]) -> None:
    if hasattr(module, "load_checkpoint_state"):
        module.load_checkpoint_state(state)
    else:
        module.load_state_dict(state["model"])


class Trainer:
    """The epoch loop over plain values (``launch.training.build_trainer`` maps a config to
    them): ``module`` is what is checkpointed and evaluated (on ``device``, in its memory
    format), ``train_module`` the same maybe wrapped by DDP or torch.compile, ``step`` the
    training step (engine/steps.py) that updates it through ``optimizer`` and ``scaler``;
    ``scheduler`` is stepped once per step. ``guard_validation``: a non-finite validation number
    stops the run (off for smoke runs, whose few steps of a deep network may validate to inf with
    finite weights). ``config``: the run's resolved config as a dict, stored in checkpoints."""

    def __init__(self, module, train_module, step, loaders, *, optimizer, scheduler, scaler,
                 epochs: int, device: torch.device, run_dir: str, logger, amp: str = "off",
                 channels_last: bool = False, print_freq: int = 50, guard_validation: bool = True,
                 dist_info: DistInfo = DistInfo(), config: Optional[Dict[str, Any]] = None,
                 record: Optional[Dict[str, Any]] = None):
        self.module, self.train_module, self.train_step, self.loaders = module, train_module, step, loaders
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        self.epochs, self.device, self.run_dir, self.logger = epochs, device, run_dir, logger
        self.amp, self.channels_last, self.print_freq = amp, channels_last, print_freq
        self.guard_validation, self.dist = guard_validation, dist_info
        self.config, self.record = config or {}, record or {}
        self.steps_per_epoch = len(loaders.train)
        self.state = TrainState()
        self.last_saved: Optional[Tuple[str, int]] = None  # (path, epoch) of the newest good checkpoint

    # --- checkpoints ---------------------------------------------------------------------------
    def _checkpoint(self, metrics: Dict[str, float]) -> Dict[str, Any]:
        return {**checkpoint_state_of(self.module),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), **dataclasses.asdict(self.state),
                "rng": get_rng_state(), "metrics": metrics, "config": self.config, "record": self.record}

    def resume(self, path: str, state: Optional[Dict[str, Any]] = None) -> None:
        """Continue from the checkpoint at ``path`` (``state``: its content, if already read)."""
        state = load_checkpoint(path) if state is None else state
        check_resumable(state, path, checkpoint_state_of(self.module), self.optimizer)
        try:
            load_state_into(self.module, state)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
            raise UserError(f"{path} cannot be resumed from: {str(err).strip().splitlines()[0]}") from err
        self.state = TrainState(**{field.name: state[field.name] for field in dataclasses.fields(TrainState)})
        self.last_saved = (path, self.state.epoch)
        repaired = self.dist.is_main and repair_best(self.run_dir, path, self.state.epoch,
                                                     self.state.best_epoch)
        if repaired:
            self.logger.info(repaired)
        self.logger.truncate_metrics(self.state.epoch)
        self.logger.info(f"resumed from {path} at epoch {self.state.epoch}")

    def _save(self, metrics: Dict[str, float], is_best: bool) -> None:
        last = os.path.join(self.run_dir, "last.pth")
        state = self._checkpoint(metrics) if self.dist.is_main else None   # rank 0 writes
        if state is not None:
            save_checkpoint(state, last)
        self.last_saved = (last, self.state.epoch)   # before best.pth: a failure there keeps it
        if state is not None and is_best:
            save_checkpoint(state, os.path.join(self.run_dir, "best.pth"))

    def kept_checkpoint(self) -> str:
        """Where to resume from, for the line that ends a stopped run."""
        if self.last_saved is None:
            return "no checkpoint was written yet"
        path, epoch = self.last_saved
        return f"the last good checkpoint is {path} (epoch {epoch}); resume with --resume auto"

    def _all_finite(self, metrics: Dict[str, float]) -> bool:
        """Every floating tensor of the module (weights, BatchNorm statistics, method modules)
        and, under ``guard_validation``, every validation number is finite; one host sync."""
        weights = all_finite(t for t in self.module.state_dict().values() if t.is_floating_point())
        return weights and (not self.guard_validation or all(map(math.isfinite, metrics.values())))

    # --- the loop ------------------------------------------------------------------------------
    def fit(self) -> Dict[str, Any]:
        started, images_seen, train_time = time.time(), 0, 0.0
        metrics: Dict[str, float] = {}
        try:
            for epoch in range(self.state.epoch + 1, self.epochs + 1):
                t0 = time.time()
                train_stats = self.train_epoch(epoch)
                train_time += time.time() - t0
                images_seen += train_stats["images"]
                metrics = self._validate(epoch)
                self.state.epoch = epoch
                is_best = metrics["top1"] > self.state.best_top1
                if is_best:
                    self.state.best_top1, self.state.best_epoch = metrics["top1"], epoch
                self._record_epoch(epoch, train_stats, metrics, time.time() - t0, is_best)
        except Stopped as stop:
            stop.resume_hint = self.kept_checkpoint()
            raise
        barrier()  # rank 0's last save is complete before any rank returns (and may read it)
        return {"best_top1": self.state.best_top1, "best_epoch": self.state.best_epoch,
                "last_top1": metrics.get("top1"), "epochs": self.epochs, "time_s": time.time() - started,
                "images_per_s": images_seen / train_time if train_time else None}

    def _validate(self, epoch: int) -> Dict[str, float]:
        if self.dist.enabled:   # every rank evaluates the weights rank 0 saves (BN statistics)
            broadcast_buffers(self.module)
        metrics = evaluate(self.module, self.loaders.val, self.device, self.amp, self.channels_last,
                           whole_batch=True)
        if not self._all_finite(metrics):  # same answer on every rank: weights and metrics agree
            raise UserError(f"the weights or the validation became non-finite at epoch {epoch} "
                            f"(val loss {metrics['loss']}): stopped without saving; "
                            f"{self.kept_checkpoint()}; lower solver.lr or check the data")
        return metrics

    def _record_epoch(self, epoch, train_stats, metrics, seconds, is_best) -> None:
        """Log and checkpoint; a write that fails (a full disk) stops with one line naming the
        intact checkpoint (the failed write left it untouched)."""
        try:
            self._log_epoch(epoch, train_stats, metrics, seconds)
            self._save(metrics, is_best)
        except (OSError, WriteFailed) as err:
            failure = write_failure(err, getattr(err, "filename", None) or self.run_dir)
            raise UserError(f"{failure}; stopped; {self.kept_checkpoint()}") from err

    def train_epoch(self, epoch: int) -> Dict[str, float]:
        self.loaders.set_epoch(epoch)
        self.train_module.train()
        bar = self.logger.progress(self.steps_per_epoch, f"epoch {epoch}/{self.epochs}")
        sums, t0 = None, time.time()
        lr = self.optimizer.param_groups[0]["lr"]
        for i, batch in enumerate(self.loaders.train):
            batch = on_device(batch, self.device, self.channels_last)
            step_lr = self.optimizer.param_groups[0]["lr"]   # the lr this step uses (shown)
            result = self.step(batch, epoch)
            if sums is None:   # the method's terms, its weights applied: they sum to "loss"
                sums = RunningSums(result.losses)
            sums.add(result.sums)
            if (i + 1) % self.print_freq == 0 or i + 1 == self.steps_per_epoch:
                self._report_progress(epoch, i + 1, sums, step_lr, bar)
        if bar is not None:
            bar.close()
        totals = sums.read(all_processes=True)
        count = totals["count"]
        return {**{name: totals[name] / count for name in sums.loss_names},
                "top1": 100.0 * totals["correct"] / count, "images": count, "lr": lr,
                "images_per_s": count / max(time.time() - t0, 1e-9)}

    def step(self, batch, epoch: int) -> StepResult:
        """One training step on a batch already on the device (engine/steps.py; a CUDA graph's
        replay under ``runtime.cuda_graph``), then the lr schedule's."""
        result = self.train_step(batch, epoch)
        self.scheduler.step()
        self.state.step += 1
        return result

    def _report_progress(self, epoch: int, step: int, sums: RunningSums, lr: float, bar) -> None:
        values = sums.read()  # the one host sync every print_freq steps
        mean_loss = values["loss"] / values["count"]
        if not all(torch.isfinite(torch.tensor([values[name] for name in sums.loss_names]))):
            raise UserError(f"loss became {mean_loss} at epoch {epoch}, step {step}: stopped; "
                            f"{self.kept_checkpoint()}; lower solver.lr or check the data")
        text = f"loss {mean_loss:.4f} lr {lr:.4g}"
        if bar is not None:
            bar.update(step - bar.n)
            bar.set_postfix_str(text)
        else:
            self.logger.info(f"epoch {epoch} [{step}/{self.steps_per_epoch}] {text}")

    def _log_epoch(self, epoch, train_stats, metrics, seconds) -> None:
        scalars = {f"train/{k}": v for k, v in train_stats.items() if k != "images"}
        scalars.update({f"val/{k}": v for k, v in metrics.items() if k != "samples"})
        self.logger.scalars(scalars, epoch)
        self.logger.metrics({"epoch": epoch, **scalars, "best_top1": self.state.best_top1,
                             "best_epoch": self.state.best_epoch, "epoch_time_s": seconds})
        self.logger.info(
            f"epoch {epoch}/{self.epochs}: train loss {train_stats['loss']:.4f} "
            f"top1 {train_stats['top1']:.2f} | val top1 {metrics['top1']:.2f} "
            f"top5 {metrics['top5']:.2f} loss {metrics['loss']:.4f} | best {self.state.best_top1:.2f} "
            f"(epoch {self.state.best_epoch}) | {train_stats['images_per_s']:.0f} img/s")
