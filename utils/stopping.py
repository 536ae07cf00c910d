"""SIGINT and SIGTERM end a run with one line and exit code 130 / 143, never a traceback.

The handlers raise ``Stopped`` where the main process is; it derives from ``KeyboardInterrupt``
so that code catching ``Exception`` lets it through, and so that DataLoader workers (which
inherit the handlers) stop quietly as they do on Ctrl-C. A write in progress is discarded by
``utils.atomic`` (its temporary file removed, the previous file intact); whoever knows the
last checkpoint (the trainer) fills in ``resume_hint`` on the way out.
"""
import signal


class Stopped(KeyboardInterrupt):
    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.resume_hint = ""

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def message(self) -> str:
        hint = self.resume_hint or "before this start had saved any epoch"
        return f"stopped by {signal.Signals(self.signum).name}: {hint}"


def _raise_stopped(signum, frame) -> None:
    raise Stopped(signum)


def stop_on_signals() -> None:
    """Install the handlers (main thread of the main process only, as Python requires)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _raise_stopped)
