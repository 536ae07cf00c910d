"""Checkpoint files: written atomically, read without unpickling arbitrary objects.

A crash while saving must never leave a truncated ``last.pth`` behind (resume would then lose
the run), so files are written to a temporary name in the same directory and renamed, which is
atomic on POSIX file systems. Reading uses ``torch.load(weights_only=True)``: a checkpoint is
data, and a file that needs arbitrary unpickling is refused with a one-line error.
"""
from typing import Any, Dict

from utils.atomic import atomic_torch_save
from utils.errors import UserError
from utils.safe_load import read_checkpoint


def save_checkpoint(state: Dict[str, Any], path: str) -> None:
    atomic_torch_save(state, path)


def load_checkpoint(path: str) -> Dict[str, Any]:
    state = read_checkpoint(path)
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a checkpoint (a dict), it holds a {type(state).__name__}")
    return state
