"""One run per run directory: a lock held for the whole run, freed by the kernel when it dies.

Two runs in one directory mix their files (one's checkpoints, the other's config, every epoch
twice in metrics.jsonl). The lock is ``fcntl.flock`` on ``<run dir>/.lock``: the kernel releases
it when the holder exits, however it exits (SIGKILL included), so a dead run's lock is simply
taken over and there is no stale lock to delete by hand. The file holds the holder's host and
pid, for the message the refused run prints.
"""
import fcntl
import json
import os
import socket
import time
from typing import Optional

from utils.errors import UserError

LOCK_NAME = ".lock"


class RunLock:
    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, LOCK_NAME)
        self.fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise UserError(f"{os.path.dirname(self.path)} is in use by another run ({holder}): "
                            "wait for it to end, or set another experiment.name") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
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


def _read_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"process {holder['pid']} on {holder['host']} since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process whose details are unreadable"
