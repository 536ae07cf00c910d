"""Files a user names as input (a config, a checkpoint, a table, an image), checked for what they are
before anything opens them: a directory is not "not found", and a FIFO or a device would block the
reader or feed it endless bytes, so only a regular file (or a link to one) is read."""
import os
import stat

from utils.errors import UserError

_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
          (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISSOCK, "a socket"))


def mode_kind(mode: int) -> str:
    """'a directory', 'a FIFO', ... for a file mode that is not a regular file's (messages of
    both the readers here and the writers, ``utils.atomic``)."""
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def file_kind(path: str) -> str:
    """'a regular file', 'a directory', 'a FIFO', ..., 'missing' or 'a broken link' (links to a
    file are followed: a reader may read through them)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken link" if os.path.islink(path) else "missing"
    except OSError as err:
        return f"unreadable ({err.strerror})"
    return "a regular file" if stat.S_ISREG(mode) else mode_kind(mode)


def require_file(path: str, what: str) -> None:
    """A one-line ``UserError`` unless ``path`` is a regular file: '<what> not found: <path>' when
    nothing is there, '<what> <path> is a directory, not a file' when something else is."""
    kind = file_kind(path)
    if kind == "missing":
        raise UserError(f"{what} not found: {path}")
    if kind != "a regular file":
        raise UserError(f"{what} {path} is {kind}, not a file")
