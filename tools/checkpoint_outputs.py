"""What the figures of a checkpoint are drawn from: its student's and teacher's answers on the
validation set, rebuilt from the config the checkpoint records (as ``eval.py`` rebuilds it).

The teacher is the run's own (``teacher.arch`` and ``teacher.checkpoint`` of the recorded
config) unless ``--teacher`` names another file; it is always loaded from its weights, never the
random stand-in a smoke run may have trained against (figures of a random teacher would compare
the student with a network it never learnt from).
"""
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

import models
from engine.checkpoint import load_checkpoint
from engine.evaluate import on_device
from launch.build import model_dataset
from launch.evaluation import rebuild_student, stored_config
from models.loading import TORCHVISION
from utils.config import Config
from utils.errors import UserError
from utils.input_files import require_file


@dataclass(frozen=True)
class CheckpointOutputs:
    """One checkpoint's val-set answers (on the CPU) and the words that name it on a figure."""
    label: str             # "kd: resnet20 → resnet8"
    run: str               # "demo_kd_resnet20_resnet8, epoch 3"
    student_logits: torch.Tensor
    teacher_logits: torch.Tensor
    pooled_features: torch.Tensor
    targets: torch.Tensor
    num_classes: int
    run_dir: str
    epoch: Optional[int]


def method_name(cfg: Config) -> str:
    """The distiller as the papers name the variant: ``kd``, ``kd + z-score``."""
    name = cfg.distiller["name"]
    return f"{name} + z-score" if cfg.distiller.get("logit_standardization") else name


def recorded_arch(path: str) -> Optional[str]:
    """The architecture a weights file of ours records (a run's student, or an export's)."""
    if path == TORCHVISION or not os.path.isfile(path):
        return None
    checkpoint = load_checkpoint(path)
    stored = stored_config(checkpoint) or {}
    arch = (stored.get("student") or {}).get("arch") or checkpoint.get("arch")
    return arch if isinstance(arch, str) else None


def load_teacher(cfg: Config, path: str, num_classes: int, teacher: Optional[str] = None,
                 teacher_arch: Optional[str] = None) -> Tuple[torch.nn.Module, str]:
    """The teacher network with its weights, and its architecture's name."""
    weights = teacher or cfg.teacher.checkpoint
    if not weights:
        raise UserError(f"{path} was trained without a teacher (distiller '{cfg.distiller['name']}'): "
                        "pass --teacher T.pth to compare it with one")
    arch = teacher_arch or (recorded_arch(weights) if teacher else None) or cfg.teacher.arch
    if not arch:
        raise UserError(f"{weights} records no architecture: pass --teacher-arch (e.g. resnet32x4)")
    where = "--teacher" if teacher else f"teacher.checkpoint of {path}"
    if weights != TORCHVISION:
        require_file(weights, f"teacher checkpoint ({where})")
    network = models.build_model(arch, num_classes=num_classes, dataset=model_dataset(cfg))
    try:
        models.load_weights(network, weights, arch=arch)
    except UserError as err:
        raise UserError(f"teacher ({where}): {err} (the student's val data has {num_classes} "
                        "classes)") from err
    return network, arch


@torch.no_grad()
def val_outputs(student: torch.nn.Module, teacher: torch.nn.Module, loader, device: torch.device):
    """Student logits, teacher logits, the student's pooled features and the targets, in float32
    on the CPU, over the whole val loader in its order."""
    student.to(device).eval()
    teacher.to(device).eval()
    parts: List[tuple] = []
    for batch in loader:
        batch = on_device(batch, device)
        features = student.forward_features(batch.images)
        parts.append((features["logits"].float().cpu(), teacher(batch.images).float().cpu(),
                      features["pooled_feat"].float().cpu(), batch.targets.cpu()))
    return [torch.cat(column) for column in zip(*parts)]


def checkpoint_outputs(path: str, teacher: Optional[str] = None, teacher_arch: Optional[str] = None,
                       overrides: Optional[List[str]] = None) -> CheckpointOutputs:
    """Rebuild the checkpoint's student, teacher and val data, and run both networks over it."""
    require_file(path, "checkpoint")   # a folder or a FIFO is said to be one, never opened
    checkpoint = load_checkpoint(path)
    if stored_config(checkpoint) is None:
        raise UserError(f"{path} records no run config: figures need a checkpoint written by "
                        "train.py (best.pth, last.pth) or tools/export.py")
    cfg, device, loaders, student = rebuild_student(checkpoint, path, overrides=overrides)
    teacher_network, arch = load_teacher(cfg, path, loaders.num_classes, teacher, teacher_arch)
    epoch = checkpoint.get("epoch") if isinstance(checkpoint.get("epoch"), int) else None
    student_logits, teacher_logits, pooled, targets = val_outputs(student, teacher_network,
                                                                  loaders.val, device)
    return CheckpointOutputs(label=f"{method_name(cfg)}: {arch} → {cfg.student.arch}",
                             run=cfg.experiment.name + ("" if epoch is None else f", epoch {epoch}"),
                             student_logits=student_logits, teacher_logits=teacher_logits,
                             pooled_features=pooled, targets=targets,
                             num_classes=loaders.num_classes, epoch=epoch,
                             run_dir=os.path.dirname(os.path.abspath(path)))
