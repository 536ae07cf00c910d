"""The one exception type for mistakes a user can fix.

Command-line entry points catch it once, print its message as a single line on stderr and exit
with status 2; anything else is our bug and keeps its traceback.
"""
import functools
import sys

WORKER_TRACEBACK = "Original Traceback"


def one_line(message: str) -> str:
    """A UserError raised in a DataLoader worker reaches the main process re-created with the
    worker's whole traceback as its message; the user's line is the traceback's last."""
    if WORKER_TRACEBACK in message:
        last = message.strip().splitlines()[-1]
        return last.split(f"{UserError.__name__}: ", 1)[-1]
    return message


class UserError(Exception):
    """A mistake in the user's input (config, paths, checkpoints): message is one line."""

    def __init__(self, message: str = ""):
        super().__init__(one_line(str(message)))


EXIT_USER_ERROR = 2


def exits_on_user_error(main):
    """A command-line ``main`` whose UserError, wherever raised, is one line on stderr and exit
    status 2 (every entry point's handling, written once)."""
    @functools.wraps(main)
    def entry(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_USER_ERROR
    return entry
