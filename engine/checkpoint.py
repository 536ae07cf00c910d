"""Checkpoint files: written atomically, read without unpickling arbitrary objects.

A crash while saving must never leave a truncated ``last.pth`` behind (resume would then lose
the run), so files are written to a temporary name in the same directory and renamed, which is
atomic on POSIX file systems. Reading uses ``torch.load(weights_only=True)``: a checkpoint is
data, and a file that needs arbitrary unpickling is refused with a one-line error.
"""
import os
import pickle
import tempfile
from typing import Any, Dict

import torch

from utils.errors import UserError


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


def load_checkpoint(path: str, map_location="cpu") -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"refusing to load {path}: it holds pickled Python objects, not only "
                        f"tensors ({first[:120]})") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise UserError(f"cannot read checkpoint {path}: {str(err).splitlines()[0][:160]}") from None
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a checkpoint (a dict), it holds a {type(state).__name__}")
    return state
