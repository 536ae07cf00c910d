"""Checkpoint files: written atomically with a checksum, read without unpickling arbitrary objects.

A crash, a signal or a full disk while saving must never leave a truncated ``last.pth`` behind
(resume would then lose the run), so files go through ``utils.atomic`` (temporary file + rename).
Each file carries a checksum of its content, verified on every read (``utils.checksum``). Reading
uses ``torch.load(weights_only=True)``: a checkpoint is data, and a file that needs arbitrary
unpickling is refused with a one-line error.
"""
from typing import Any, Dict

import torch

from utils.atomic import atomic_write
from utils.checksum import with_checksum
from utils.errors import UserError
from utils.safe_load import read_checkpoint


def save_checkpoint(state: Dict[str, Any], path: str) -> None:
    stamped = with_checksum(state)
    atomic_write(path, lambda f: torch.save(stamped, f))


def load_checkpoint(path: str) -> Dict[str, Any]:
    state = read_checkpoint(path)
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a checkpoint (a dict), it holds a {type(state).__name__}")
    return state
