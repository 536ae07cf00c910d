"""What a checkpoint must hold to be resumed from, checked before anything is loaded.

A checkpoint of another architecture, one without its scaler or RNG states, a non-integer epoch
or an optimizer state whose buffers do not fit the parameters would otherwise load halfway or
silently and fail (or train wrongly) at the first step. Each is a one-line ``UserError`` that
names the file and what is wrong.
"""
import os
from contextlib import suppress
from typing import Any, Dict, List, Optional

import torch

from engine.checkpoint import load_checkpoint
from utils.atomic import copy_file
from utils.errors import UserError
from utils.safe_load import few

def repair_best(run_dir: str, last: str, epoch: int, best_epoch: int) -> Optional[str]:
    """A kill between the ``last.pth`` and ``best.pth`` writes of a best epoch (last is written
    first) leaves ``best.pth`` older than the best epoch ``last.pth`` records; ``last.pth`` is
    then that best epoch, and is copied to ``best.pth``. Returns the line saying so, if it was."""
    best = os.path.join(run_dir, "best.pth")
    if best_epoch != epoch or epoch == 0:
        return None
    with suppress(UserError):   # unreadable: replaced below
        if os.path.exists(best) and load_checkpoint(best).get("epoch") == epoch:
            return None
    copy_file(last, best)
    return f"best.pth was older than the best epoch {epoch}: restored from {last}"


RESUME_KEYS = ("model", "optimizer", "scheduler", "scaler", "epoch", "step", "best_top1",
               "best_epoch", "rng")
COUNTERS = ("epoch", "step", "best_epoch")


def check_resumable(state: Dict[str, Any], path: str, module_state: Dict[str, Any],
                    optimizer: torch.optim.Optimizer) -> None:
    """Raise a ``UserError`` unless ``state`` can be resumed into this run's module/optimizer."""
    missing = [key for key in RESUME_KEYS if key not in state]
    if missing:
        raise UserError(f"{path} cannot be resumed from: it has no {', '.join(missing)} "
                        "(a released, exported or damaged checkpoint?); use it as teacher or for eval.py")
    for key in COUNTERS:
        value = state[key]
        if type(value) is not int or value < 0:
            raise UserError(f"{path} cannot be resumed from: its {key} is {value!r}, not a "
                            "non-negative integer (a damaged or hand-edited checkpoint)")
    if not isinstance(state["best_top1"], (int, float)) or isinstance(state["best_top1"], bool):
        raise UserError(f"{path} cannot be resumed from: its best_top1 is {state['best_top1']!r}")
    for section, expected in module_state.items():
        _check_weights(state.get(section), expected, path, section, state)
    _check_optimizer(state["optimizer"], optimizer, path)


def _check_weights(found: Any, expected: Dict[str, torch.Tensor], path: str, section: str,
                   state: Dict[str, Any]) -> None:
    if not isinstance(found, dict):
        raise UserError(f"{path} cannot be resumed from: its '{section}' entry is not a state dict")
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [k for k in expected if k in found and getattr(found[k], "shape", None) != expected[k].shape]
    if missing or unexpected or wrong:
        arch = ((state.get("config") or {}).get("student") or {}).get("arch", "?")
        raise UserError(f"{path} does not fit this run (it was written for student '{arch}'): "
                        f"'{section}' has missing keys {few(missing)}, unexpected keys "
                        f"{few(unexpected)}, other shapes for {few(wrong)}; check student.arch "
                        "and the distiller, or set another experiment.name")


def _check_optimizer(saved: Any, optimizer: torch.optim.Optimizer, path: str) -> None:
    """The same optimizer (SGD or DOT: loading one's state into the other would replace the
    run's hyper-parameters with the checkpoint's), the same parameter groups and sizes, and every
    per-parameter buffer shaped as its parameter (PyTorch checks the group sizes, not the buffers: a
    wrong momentum buffer fails at the first step)."""
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    if not isinstance(groups, list) or not isinstance(saved.get("state"), dict):
        raise UserError(f"{path} cannot be resumed from: its optimizer entry is not an optimizer state")
    kind = {True: "dot", False: "sgd"}
    saved_dot = any(isinstance(g, dict) and "momentum_kd" in g for g in groups)
    run_dot = any("momentum_kd" in g for g in optimizer.param_groups)
    if saved_dot != run_dot:
        raise UserError(f"{path} cannot be resumed from: it was trained with solver.optimizer="
                        f"{kind[saved_dot]}, this run has {kind[run_dot]}: resume with "
                        f"solver.optimizer={kind[saved_dot]}")
    ours = [group["params"] for group in optimizer.param_groups]
    sizes = [len(group.get("params", [])) for group in groups]
    if sizes != [len(params) for params in ours]:
        raise UserError(f"{path} cannot be resumed from: its optimizer has parameter groups of "
                        f"sizes {sizes}, this run's {[len(p) for p in ours]}")
    params = {i: p for group, params in zip(groups, ours) for i, p in zip(group["params"], params)}
    bad: List[str] = []
    for index, buffers in saved["state"].items():
        param = params.get(index)
        for name, value in (buffers.items() if isinstance(buffers, dict) else []):
            if isinstance(value, torch.Tensor) and value.dim() > 0 and \
                    (param is None or value.shape != param.shape):
                bad.append(f"{name} of parameter {index}")
    if bad:
        raise UserError(f"{path} cannot be resumed from: its optimizer state does not fit the "
                        f"parameters ({few(bad)}): a checkpoint of another model or a damaged one")
