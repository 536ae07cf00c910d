"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Every file a run keeps (checkpoints, ``run.json``, ``metrics.jsonl`` when it is rewritten, the
teacher checks and the teacher cache shared by all runs of an output directory) is written to a
temporary file beside it and renamed over it, which is atomic on POSIX file systems. A kill or a
full disk in the middle of a write leaves the old file intact and, at worst, a temporary file.

Temporary names are unique per writer (``.tmp-<host>-<pid>-<random>.<name>``): two runs that
write the same shared file at once each rename their own complete file, where one fixed name
made the slower writer rename a file the faster one had already moved. The host and pid in the
name let ``remove_stale_temps`` tell a dead writer's leftover from a live writer's file.

Nothing is written through a path the run did not create: the writer replaces only a regular
file or a missing path (a symbolic link, a directory, a device or a FIFO planted where a run
file goes is refused, not followed: ``--out /dev/full`` must not become a zip file), and the
temporary file is created exclusively, never through a link. Every failure is one line
(``WriteFailed``): a full disk, a read-only place, also when torch's zip writer turns the
file's ``OSError`` into a ``RuntimeError``.
"""
import json
import os
import re
import secrets
import shutil
import socket
import stat
from contextlib import contextmanager, suppress
from typing import Any, BinaryIO, Callable, Iterator, List, Optional

from utils.errors import UserError
from utils.input_files import mode_kind

TEMP_PREFIX = ".tmp-"
_TEMP_NAME = re.compile(r"\.tmp-(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{8}\.")


def temp_path(path: str) -> str:
    """A temporary name beside ``path`` that no other writer (process, thread, host) uses."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f"{TEMP_PREFIX}{socket.gethostname()}-{os.getpid()}-"
                                   f"{secrets.token_hex(4)}.{name}")


class WriteFailed(UserError):
    """A file could not be written (full disk, read-only place) or may not be replaced (not a
    regular file); whatever was at the path before is intact."""


def not_a_regular_file(path: str, mode: int) -> WriteFailed:
    kind = mode_kind(mode)
    return WriteFailed(f"refusing to write {path}: it is {kind}, not a regular file "
                       "(remove it, or choose another path)")


def check_replaceable(path: str) -> None:
    """Refuse (``WriteFailed``) a path that exists and is not a regular file; links are not
    followed, so a planted link is refused, never written through."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return   # missing (or under a non-directory, which the write itself reports)
    if not stat.S_ISREG(mode):
        raise not_a_regular_file(path, mode)


def write_failure(err: BaseException, path: str) -> Optional[WriteFailed]:
    """The one-line error of ``err`` raised while writing ``path``: ``err`` is, or was raised
    from, an ``OSError`` (torch's zip writer turns a failed ``file.write`` into ``RuntimeError:
    ... unexpected pos``); None when it is not a failed write (a signal, a bug of ours keep
    their own way out)."""
    if isinstance(err, WriteFailed):
        return err
    while isinstance(err, RuntimeError):
        err = err.__cause__ or err.__context__
    return WriteFailed(f"cannot write {path}: {err.strerror or err}") if isinstance(err, OSError) else None


@contextmanager
def writes_to(path: str) -> Iterator[None]:
    """An ``OSError`` in the block (a full disk, a read-only place) raised as ``WriteFailed``."""
    try:
        yield
    except OSError as err:
        raise write_failure(err, path) from err


def open_regular(path: str, flags: int, mode: int = 0o666) -> int:
    """A descriptor of ``path`` opened with ``flags`` (``O_CREAT`` creates it), only if it is a
    regular file: never through a link, never blocking on a FIFO, and checked again once open
    (a file swapped in after the first check is refused too). The files a run writes in place."""
    check_replaceable(path)
    with writes_to(path):
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    file_mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(file_mode):
        os.close(fd)
        raise not_a_regular_file(path, file_mode)
    return fd


def _open_temp(tmp: str) -> BinaryIO:
    """A new file of our own: exclusive creation, never through a link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.fdopen(os.open(tmp, flags, 0o666), "wb")


def atomic_write(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` on a temporary file, flush it to disk and rename it to ``path``.
    On any failure (an error, a full disk, a signal) the temporary file is removed and
    ``path`` keeps its previous content; a failed write is raised as ``WriteFailed``."""
    check_replaceable(path)
    tmp = temp_path(path)
    try:
        os.makedirs(os.path.dirname(tmp), exist_ok=True)
        with _open_temp(tmp) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        failure = write_failure(err, path)
        if failure is None:
            raise
        raise failure from err


def open_for_append(path: str) -> BinaryIO:
    """``path`` opened to append (created if missing): the one kind of write that does not
    replace its file (``metrics.jsonl`` grows by a line an epoch, a log by its output). Only a
    regular file is opened, never through a link (``open_regular``)."""
    return os.fdopen(open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab")


def append_text(path: str, text: str) -> None:
    """Append ``text`` to ``path`` (see ``open_for_append``); a failed write is ``WriteFailed``."""
    with writes_to(path), open_for_append(path) as f:
        f.write(text.encode())


def write_text(path: str, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: str, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=str))


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
            with suppress(FileNotFoundError):   # its writer renamed or removed it meanwhile
                os.unlink(os.path.join(directory, name))
                removed.append(name)
    return removed
