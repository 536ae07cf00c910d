"""The one exception type for mistakes a user can fix.

Command-line entry points catch it once, print its message as a single line on stderr and exit
with status 2; anything else is our bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input (config, paths, checkpoints): message is one line."""


EXIT_USER_ERROR = 2
