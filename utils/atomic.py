"""Files written atomically: a reader sees the old file or the whole new one, never a part.

The data go to a temporary file with a unique name in the target's own directory (so the rename
stays on one file system and two writers never share a temporary file), are flushed to disk,
and the temporary file is renamed over the target (``os.replace``, atomic on POSIX). On any
error the temporary file is removed and the target is left as it was.
"""
import os
import tempfile
from contextlib import contextmanager
from typing import Any, BinaryIO, Iterator


@contextmanager
def _atomic_file(path: str) -> Iterator[BinaryIO]:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with _atomic_file(path) as f:
        f.write(data)


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch
    with _atomic_file(path) as f:
        torch.save(obj, f)
