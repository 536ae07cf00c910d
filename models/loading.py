"""Weights into a zoo model: released teacher checkpoints and torchvision's ImageNet weights.

Checkpoints are read with ``torch.load(..., weights_only=True)`` only: a file that needs
arbitrary unpickling could run code, so it is refused with a hint, never trusted. Accepted
layouts: RepDistiller's / mdistiller's ``{"model": state_dict, ...}`` (the released CIFAR-100
teachers), ``{"state_dict": ...}`` (ONE's and many others') and a bare state dict, each with or
without DataParallel's ``module.`` prefix. Loading is strict; what does not fit is a one-line
``UserError`` that says what differs.
"""
from typing import Dict, Optional

import torch
from torch import nn

from utils.errors import UserError
from utils.safe_load import READ_ERRORS, first_line, few, read_checkpoint

TORCHVISION = "torchvision"  # the user-facing spelling of ``teacher.checkpoint``
# The benchmark's ImageNet teachers are torchvision's original weights (mdistiller's
# ``pretrained=True`` URLs), served today as IMAGENET1K_V1; DEFAULT is V2 for ResNet50/101.
TORCHVISION_WEIGHTS = {name: f"{name}_Weights.IMAGENET1K_V1"
                       for name in ("ResNet18", "ResNet34", "ResNet50", "ResNet101")}


def extract_state_dict(obj: object, source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint, with a DataParallel ``module.`` prefix removed."""
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not (isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())):
        found = f"a dict with keys {few([str(k) for k in obj])}" if isinstance(obj, dict) else type(obj).__name__
        raise UserError(f"{source} holds no state dict under 'model' or 'state_dict' and is not one itself; "
                        f"found {found}")
    if all(key.startswith("module.") for key in obj):
        obj = {key[len("module."):]: value for key, value in obj.items()}
    return obj


def _classifier_keys(model: nn.Module) -> set:
    num_classes = getattr(model, "num_classes", None)
    return {f"{name}.{leaf}" for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and module.out_features == num_classes
            for leaf in ("weight", "bias")}


def check_fits(model: nn.Module, state: Dict[str, torch.Tensor], source: str, arch: str) -> None:
    """Raise a one-line ``UserError`` unless ``state`` has exactly the model's keys and shapes."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        raise UserError(f"{source} does not fit architecture '{arch}': missing keys {few(missing)}; "
                        f"unexpected keys {few(unexpected)}; check the architecture name")
    wrong = [key for key, value in expected.items() if state[key].shape != value.shape]
    if wrong and set(wrong) <= _classifier_keys(model):
        trained_for = state[wrong[0]].shape[0]
        raise UserError(f"{source} was trained for {trained_for} classes, the model has {model.num_classes}")
    if wrong:
        key = wrong[0]
        raise UserError(f"{source} does not fit architecture '{arch}': {key} has shape "
                        f"{list(state[key].shape)} in the file, {list(expected[key].shape)} in the model"
                        f"{f' (+{len(wrong) - 1} more)' if len(wrong) > 1 else ''}")


def torchvision_state_dict(arch: Optional[str]) -> Dict[str, torch.Tensor]:
    """torchvision's IMAGENET1K_V1 weights of ``arch`` (downloaded once into the torch hub cache)."""
    if arch not in TORCHVISION_WEIGHTS:
        raise UserError(f"teacher.checkpoint: torchvision provides weights for {', '.join(TORCHVISION_WEIGHTS)} "
                        f"(dataset imagenet), not for '{arch}'")
    import torchvision  # only this path needs it

    name = TORCHVISION_WEIGHTS[arch]
    try:
        return torchvision.models.get_weight(name).get_state_dict(
            progress=False, check_hash=True, map_location="cpu", weights_only=True)
    except READ_ERRORS as err:
        raise UserError(f"cannot fetch torchvision's {name} ({first_line(err)}); it needs network access "
                        "once (then the torch hub cache serves it), or give a checkpoint file") from err


def load_weights(model: nn.Module, path: str, arch: Optional[str] = None) -> nn.Module:
    """Load ``path`` (a checkpoint file, or ``"torchvision"`` for torchvision's ImageNet weights
    of ``arch``) into ``model``, strictly; returns the model."""
    arch = arch or type(model).__name__
    if path == TORCHVISION:
        state, source = torchvision_state_dict(arch), f"torchvision's {TORCHVISION_WEIGHTS[arch]}"
    else:
        state, source = extract_state_dict(read_checkpoint(path, "teacher checkpoint"), path), path
    check_fits(model, state, source, arch)
    model.load_state_dict(state, strict=True)
    return model
