"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Every file a run keeps (checkpoints, ``run.json``, ``metrics.jsonl`` when it is rewritten, the
teacher checks and the teacher cache shared by all runs of an output directory) is written to a
temporary file beside it and renamed over it, which is atomic on POSIX file systems. A kill or a
full disk in the middle of a write leaves the old file intact and, at worst, a temporary file.

Temporary names are unique per writer (``.tmp-<host>-<pid>-<random>.<name>``): two runs that
write the same shared file at once each rename their own complete file, where one fixed name
made the slower writer rename a file the faster one had already moved. The host and pid in the
name let ``remove_stale_temps`` tell a dead writer's leftover from a live writer's file.
"""
import json
import os
import re
import secrets
import shutil
import socket
from typing import Any, BinaryIO, Callable, List

TEMP_PREFIX = ".tmp-"
_TEMP_NAME = re.compile(r"\.tmp-(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{8}\.")


def temp_path(path: str) -> str:
    """A temporary name beside ``path`` that no other writer (process, thread, host) uses."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f"{TEMP_PREFIX}{socket.gethostname()}-{os.getpid()}-"
                                   f"{secrets.token_hex(4)}.{name}")


def atomic_write(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` on a temporary file, flush it to disk and rename it to ``path``.
    On any failure (an error, a full disk, a signal) the temporary file is removed and the
    exception propagates; ``path`` keeps its previous content."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.filename is None:
            err.filename = path  # a full disk while writing names the file it was writing
        raise


def write_json(path: str, data: Any) -> None:
    text = json.dumps(data, indent=2, default=str).encode()
    atomic_write(path, lambda f: f.write(text))


def write_lines(path: str, lines: List[str]) -> None:
    atomic_write(path, lambda f: f.write("".join(lines).encode()))


def copy_file(source: str, path: str) -> None:
    """``path`` becomes a copy of ``source``, atomically."""
    def write(f):
        with open(source, "rb") as src:
            shutil.copyfileobj(src, f)
    atomic_write(path, write)


def _writer_alive(name: str) -> bool:
    match = _TEMP_NAME.match(name)
    if match is None or match["host"] != socket.gethostname():
        return match is not None  # another host's writer cannot be checked from here: keep it
    try:
        os.kill(int(match["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(directory: str, everything: bool = False) -> List[str]:
    """Remove the temporary files of killed writes in ``directory``; returns their names.
    ``everything``: all of them (a directory this process holds the lock of); otherwise only
    those whose writer, on this host, is dead (a directory other runs may be writing in)."""
    if not os.path.isdir(directory):
        return []
    removed = []
    for name in sorted(os.listdir(directory)):
        if name.startswith(TEMP_PREFIX) and (everything or not _writer_alive(name)):
            try:
                os.unlink(os.path.join(directory, name))
                removed.append(name)
            except FileNotFoundError:
                pass  # its writer renamed or removed it meanwhile
    return removed


def atomic_write_bytes(path: str, data: bytes) -> None:
    """``data`` to ``path``, atomically."""
    atomic_write(path, lambda f: f.write(data))


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save(obj)`` to ``path``, atomically."""
    import torch
    atomic_write(path, lambda f: torch.save(obj, f))
