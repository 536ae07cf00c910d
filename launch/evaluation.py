"""Checkpoint evaluation for ``eval.py``: rebuild the model a checkpoint belongs to, score it.

A checkpoint of ours carries its resolved config, so ``eval.py --checkpoint`` alone rebuilds the
same data pipeline and student; a released teacher (``{"model": state_dict}``) needs ``--arch``
and takes its data settings from ``--config`` or the CIFAR-100 defaults.
"""
from typing import Any, Dict, List, Optional

import torch

import datasets
import models
from engine.checkpoint import load_checkpoint
from engine.evaluate import evaluate
from launch.build import build_student, per_process_data, resolve_device
from utils.config import apply_overrides, config_from_dict, load_config, replace_section
from utils.errors import UserError


def stored_config(checkpoint: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The run's config a file carries: a training checkpoint's own, or (a file written by
    tools/export.py) the one in its run record."""
    for holder in (checkpoint, checkpoint.get("record")):
        if isinstance(holder, dict) and isinstance(holder.get("config"), dict):
            return holder["config"]
    return None


def config_for_checkpoint(checkpoint: Dict[str, Any], path: str, config_path: Optional[str],
                          arch: Optional[str], overrides: List[str]):
    """The config a checkpoint is evaluated with: ``config_path`` if given, else the one it
    carries, else one built from ``arch``; ``overrides`` on top."""
    stored = stored_config(checkpoint)
    recorded_arch = checkpoint.get("arch") if isinstance(checkpoint.get("arch"), str) else None
    if config_path:
        cfg = load_config(config_path, overrides)
    else:
        tree = stored if stored is not None else {}
        apply_overrides(tree, overrides, {})
        cfg = config_from_dict(tree, where="the command-line overrides" if stored is None
                               else f"{path} (stored config)")
    arch = arch or (None if config_path else recorded_arch)
    if arch:
        cfg = replace_section(cfg, "student", arch=arch)
    elif not config_path and stored is None:
        raise UserError(f"{path} carries no config: pass --arch (e.g. --arch resnet32x4) "
                        "and, for data other than CIFAR-100 under data/, --config or overrides")
    return cfg


class NamedOutputs(torch.nn.Module):
    """A multi-output model (ONE) scored on all its outputs, ``headline`` first."""

    def __init__(self, model: torch.nn.Module, headline: str):
        super().__init__()
        self.model, self.headline = model, headline

    def forward(self, images):
        return self.model.named_outputs(images, self.headline)


def scored_model(model: torch.nn.Module, output: Optional[str]) -> torch.nn.Module:
    """What evaluation runs: a ONE network reports every branch and the ensemble, with branch 1
    (or ``output``) as the headline top-1; other models have a single output."""
    if not hasattr(model, "named_outputs"):
        if output:
            raise UserError(f"--output picks one output of a multi-output model (ONE); "
                            f"{type(model).__name__} has one")
        return model
    names = model.output_names()
    if output and output not in names:
        raise UserError(f"--output {output}: this ONE network's outputs are {', '.join(names)}")
    return NamedOutputs(model, output or names[0])


def rebuild_student(checkpoint: Dict[str, Any], path: str, config_path: Optional[str] = None,
                    arch: Optional[str] = None, overrides: Optional[List[str]] = None):
    """``(cfg, device, loaders, student)``: the run's config, its data in one process and the
    checkpoint's student with its weights, as eval.py and the figures need them."""
    cfg = config_for_checkpoint(checkpoint, path, config_path, arch, list(overrides or []))
    device = resolve_device(cfg)
    loaders = datasets.build_loaders(per_process_data(cfg, 1), seed=cfg.experiment.seed, device=device)
    student = build_student(cfg, loaders.num_classes)
    models.load_weights(student, path, arch=cfg.student.arch)
    return cfg, device, loaders, student


def evaluate_checkpoint(path: str, config_path: Optional[str] = None, arch: Optional[str] = None,
                        overrides: Optional[List[str]] = None, output: Optional[str] = None) -> Dict[str, Any]:
    checkpoint = load_checkpoint(path)
    cfg, device, loaders, model = rebuild_student(checkpoint, path, config_path, arch, overrides)
    metrics = evaluate(scored_model(model, output).to(device), loaders.val, device, cfg.runtime.amp, False)
    return {"checkpoint": path, "arch": cfg.student.arch, "metrics": metrics,
            "epoch": checkpoint.get("epoch"), "record": checkpoint.get("record")}
