"""A checksum of everything a checkpoint holds, so a damaged file is refused, never trained on.

``torch.load`` does not verify the bytes of tensor data: a flipped bit in a weight loads
silently. Checkpoints therefore carry ``checksum``: the sha256 of every entry (its key path,
and for a tensor its dtype, shape and bytes; for any other value its type and repr), in key
order. ``read_checkpoint`` recomputes it on every load of a file that has one (released
checkpoints have none and load as before), after refusing tensors whose nominal size exceeds
their storage, so that making a view contiguous here never allocates more than the file held.
"""
import hashlib
from typing import Any, Dict, Iterator, Tuple

import torch

CHECKSUM_KEY = "checksum"


def leaves(value: Any, path: str = "") -> Iterator[Tuple[str, Any]]:
    """Every value in nested dicts (in key order), lists and tuples that is none of them, with
    its path (``/model/fc.weight``, ``/rng/cuda[0]``): what the checksum covers, and where the
    loader looks for tensors."""
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            yield from leaves(value[key], f"{path}/{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from leaves(item, f"{path}[{i}]")
    else:
        yield path, value


def state_checksum(state: Dict[str, Any]) -> str:
    """sha256 (hex) of every entry of ``state`` except the checksum itself."""
    digest = hashlib.sha256()
    for path, value in leaves({k: v for k, v in state.items() if k != CHECKSUM_KEY}):
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()   # a copy only of a strided view
            digest.update(f"{path}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())   # hashed in place, no copy
        else:
            digest.update(f"{path}:{type(value).__name__}:{value!r}".encode())
    return digest.hexdigest()


def with_checksum(state: Dict[str, Any]) -> Dict[str, Any]:
    return {**state, CHECKSUM_KEY: state_checksum(state)}


def checksum_mismatch(state: Any) -> bool:
    """True when ``state`` carries a checksum that its content no longer matches."""
    return isinstance(state, dict) and CHECKSUM_KEY in state and \
        state[CHECKSUM_KEY] != state_checksum(state)
