"""Reading checkpoint files without ever running code from them.

``torch.load(weights_only=True)`` only: a file that needs arbitrary unpickling could execute
code, so it is refused with a one-line ``UserError`` naming what it holds. Shared by the model
loader (teachers, released weights) and the trainer (resume), so both refuse the same way.
A checkpoint that carries a checksum (ours do, ``utils/checksum.py``) is verified on every read.

``weights_only`` does not bound memory: a zip record may be compressed far below the size it
declares (torch inflates it in full: a file of a few hundred KB takes a GB), and a tensor may be
a view whose nominal size exceeds its storage (one stored value expanded to 10^10 elements: any
copy of it, the checksum's included, allocates the nominal size). Both are refused, in one line,
before anything is materialised: torch stores records uncompressed, so together they fit in the
file, and a saved state's tensors never overlap themselves. Weights that are not finite (NaN or
infinity, a diverged run) are refused too: they cannot be anyone's good checkpoint.
"""
import os
import pickle
import re
import zipfile
from typing import Any, List, Tuple

import torch

from utils.checksum import checksum_mismatch, leaves
from utils.errors import UserError
from utils.input_files import require_file

READ_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError, OSError)
# what torch.load raises on files that are not checkpoints at all (a text file named .pth gives
# "IndexError: pop from empty list" from the unpickler)
NOT_A_CHECKPOINT = READ_ERRORS + (IndexError, TypeError, AttributeError, UnicodeDecodeError)


def few(keys: List[str], count: int = 3) -> str:
    more = f" (+{len(keys) - count} more)" if len(keys) > count else ""
    return ", ".join(keys[:count]) + more if keys else "none"


def first_line(err: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()  # torch colours some messages
    return text.splitlines()[0] if text else type(err).__name__


def _unsafe_globals(path: str, err: Exception) -> List[str]:
    """The pickled globals that ``weights_only`` refused (scanned for zip checkpoints, read from
    the error message for the legacy format)."""
    try:
        found = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except NOT_A_CHECKPOINT:
        found = []
    return found or re.findall(r"Unsupported global: GLOBAL (\S+)", str(err))


# torch.save writes a zip archive; files of torch < 1.6 (and some released weights) are a pickle
# stream, whose first opcode is PROTO (0x80)
CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80")


def _check_format(path: str) -> None:
    """An empty file, or one that is neither format, said plainly (torch's own errors for them
    are ``EOFError``, ``KeyError: 101``, ``pop from empty list``)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise UserError(f"{path} is empty (0 bytes): not a checkpoint; it was probably cut short "
                        "while being written or copied")
    if not head.startswith(CHECKPOINT_MAGIC):
        raise UserError(f"{path} is not a PyTorch checkpoint: neither a zip archive (torch.save) "
                        f"nor a pickle; it starts with {head!r}")


def _reason(err: Exception) -> str:
    """torch's message, less its advice to retry with ``weights_only=False`` (never safe here),
    or 'truncated or damaged' where torch says only an exception's name or a byte value."""
    text = str(err).split("WeightsUnpickler error:", 1)[-1].strip()
    text = text.splitlines()[0].strip() if text else ""
    if isinstance(err, (EOFError, KeyError, IndexError)) or not text:
        return f"the file is truncated or damaged ({type(err).__name__}: {text or 'no detail'})"
    return text


def check_declared_sizes(path: str) -> None:
    """Refuse a zip checkpoint whose records declare more bytes than the whole file holds."""
    file_size = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return   # not a zip (the legacy format) or a broken one: torch.load reports it
    if declared > file_size:
        raise UserError(f"refusing to read {path}: its records declare {declared:,} bytes, more "
                        f"than the file's {file_size:,} (a damaged or crafted file)")


def tensors_in(value: Any) -> List[Tuple[str, torch.Tensor]]:
    """Every tensor in nested dicts, lists and tuples, with its key path (``model/fc.weight``)."""
    return [(path.lstrip("/"), v) for path, v in leaves(value) if isinstance(v, torch.Tensor)]


def check_tensor_sizes(state: Any, path: str) -> None:
    """Refuse a tensor whose nominal size exceeds its storage: a view that overlaps itself
    (stride 0), which no saved state holds and any copy of which would allocate the nominal
    size."""
    for key, tensor in tensors_in(state):
        stored = tensor.untyped_storage().nbytes() // max(tensor.element_size(), 1)
        if tensor.numel() > stored:
            raise UserError(f"refusing to read {path}: '{key}' claims {tensor.numel():,} values "
                            f"over a storage of {stored:,} (an expanded view, a memory bomb)")


def non_finite_keys(state: Any) -> List[str]:
    """The key paths of floating tensors holding a NaN or an infinity."""
    return [key for key, tensor in tensors_in(state)
            if (tensor.is_floating_point() or tensor.is_complex())
            and not bool(torch.isfinite(tensor).all())]


def read_checkpoint(path: str, kind: str = "checkpoint", finite: bool = True) -> object:
    """The object stored in ``path``, unpickled with ``weights_only=True``; its sizes checked
    before anything is materialised, its checksum verified, and (``finite``) every floating
    tensor finite."""
    require_file(path, kind)
    _check_format(path)
    check_declared_sizes(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except NOT_A_CHECKPOINT as err:
        unsafe = _unsafe_globals(path, err)
        if unsafe:
            raise UserError(f"refusing to load {path}: it holds pickled Python objects ({few(unsafe)}) "
                            "that could run code; if you trust it, re-save only its state dict "
                            "(torch.save(model.state_dict(), path))") from err
        raise UserError(f"cannot read {path} as a PyTorch checkpoint: {_reason(err)}") from err
    check_tensor_sizes(state, path)
    if checksum_mismatch(state):
        raise UserError(f"{path} is damaged: its content no longer matches the checksum written with "
                        "it (a changed byte on disk or in transfer); use another copy or checkpoint")
    bad = non_finite_keys(state) if finite else []
    if bad:
        raise UserError(f"refusing {path}: it holds NaN or infinite values ({few(bad)}), the "
                        f"weights of a diverged run, not a usable {kind}; use an earlier checkpoint")
    return state
