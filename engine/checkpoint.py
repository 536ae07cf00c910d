"""Checkpoint files: written atomically, read without unpickling arbitrary objects.

A crash while saving must never leave a truncated ``last.pth`` behind (resume would then lose
the run), so files are written to a temporary name in the same directory and renamed, which is
atomic on POSIX file systems. Reading uses ``torch.load(weights_only=True)``: a checkpoint is
data, and a file that needs arbitrary unpickling is refused with a one-line error.
"""
import os
import tempfile
from typing import Any, Dict

import torch

from utils.errors import UserError
from utils.safe_load import read_checkpoint


def save_checkpoint(state: Dict[str, Any], path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pth", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str) -> Dict[str, Any]:
    state = read_checkpoint(path)
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a checkpoint (a dict), it holds a {type(state).__name__}")
    return state
