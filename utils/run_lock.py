"""One run per run directory: a lock held for the whole run, freed by the kernel when it dies.

Two runs in one directory mix their files (one's checkpoints, the other's config, every epoch
twice in metrics.jsonl). The lock is ``fcntl.flock`` on ``<run dir>/.lock``: the kernel releases
it when the holder exits, however it exits (SIGKILL included), so a dead run's lock is simply
taken over and there is no stale lock to delete by hand. The file holds the holder's host and
pid, for the message the refused run prints.

The lock file is the one file a run writes in place (flock holds on its inode, so it cannot be
replaced): it is opened without following a link and used only if it is a regular file of its
own (one name), so a link or hard link planted as ``.lock`` cannot make the run truncate a file
elsewhere. A full disk or a read-only directory at this point is one line too.
"""
import fcntl
import json
import os
import socket
import time
from typing import Optional

from utils.atomic import WriteFailed, open_regular, write_failure, writes_to
from utils.errors import UserError

LOCK_NAME = ".lock"


class RunLock:
    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, LOCK_NAME)
        self.fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        fd = _open_lock_file(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise UserError(f"{os.path.dirname(self.path)} is in use by another run ({holder}): "
                            "wait for it to end, or set another experiment.name") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                     "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        except OSError as err:
            os.close(fd)
            raise write_failure(err, self.path) from err
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _open_lock_file(path: str) -> int:
    """A descriptor of ``path``, created if missing; refused (one line) unless it is a regular
    file with no other name, so that truncating it touches nothing outside the run."""
    with writes_to(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = open_regular(path, os.O_RDWR | os.O_CREAT, 0o644)
    names = os.fstat(fd).st_nlink
    if names > 1:
        os.close(fd)
        raise WriteFailed(f"refusing to use {path} as a lock: it has {names} names "
                          "(a hard link to a file elsewhere); remove it")
    return fd


def _read_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"process {holder['pid']} on {holder['host']} since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process whose details are unreadable"
