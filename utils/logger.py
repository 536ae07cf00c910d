"""Where a run's numbers go: TensorBoard scalars, ``metrics.jsonl`` and the console.

Only the main process (rank 0) writes; other ranks get a logger that drops everything, so the
trainer never branches on the rank. Console output is a tqdm bar per epoch on a terminal and
plain periodic lines otherwise (log files and job schedulers).

A write that fails (a full disk, a read-only directory, a link planted as ``metrics.jsonl`` or
``tb``) is one line, ``utils.atomic.WriteFailed``, never a traceback; ``metrics.jsonl`` is
appended only as a regular file of the run, never through a link.
"""
import json
import os
import sys
import threading
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from tqdm import tqdm

from utils.atomic import WriteFailed, append_text, write_text, writes_to


def _has_epoch(record) -> bool:
    """A JSON object with an integer epoch (a bool is not one): what a metrics line is."""
    return isinstance(record, dict) and type(record.get("epoch")) is int


def _json_lines(path: str) -> Iterator[Tuple[int, str, object]]:
    """(line number, line, its JSON value) of each non-blank line of a ``metrics.jsonl``, the
    value None where the line is not JSON; nothing when there is no file."""
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield number, line, json.loads(line)
                except json.JSONDecodeError:
                    yield number, line, None


def read_metrics_lines(path: str) -> Tuple[List[Dict], List[str]]:
    """The epochs recorded in a ``metrics.jsonl`` and its lines that are not a JSON object with
    an integer epoch: a partial last line, left by a kill or a full disk in the middle of an
    append, or a damaged line (``damaged_metrics_line`` tells them apart)."""
    records, broken = [], []
    for _, line, record in _json_lines(path):
        if _has_epoch(record):
            records.append(record)
        else:
            broken.append(line)
    return records, broken


def console_is_terminal() -> bool:
    """Whether progress may be drawn as a bar: a terminal redraws it in place; a log file or a
    job scheduler's capture would keep every ``\\r`` frame, so they get plain lines instead."""
    return sys.stdout.isatty()


def progress_lines(items: Iterable, total: int, description: str, lines: int = 10) -> Iterator:
    """``items`` passed through, with a tqdm bar on a terminal and otherwise about ``lines`` plain
    lines (``description [done/total]`` at each tenth): the trainer's rule, for loops outside an
    epoch (the teacher cache's build)."""
    if console_is_terminal():
        yield from tqdm(items, total=total, desc=description, leave=False, dynamic_ncols=True)
        return
    marks = {max(1, round(total * k / lines)) for k in range(1, lines + 1)}
    for done, item in enumerate(items, 1):
        yield item
        if done in marks:
            print(f"{description} [{done}/{total}]", flush=True)


def quiet_tensorboard_thread_errors() -> None:
    """TensorBoard writes its events from a thread of its own; an ``OSError`` there (a full
    disk) is raised again by the writer's next call in the main thread, which reports it in one
    line, so the thread's own traceback is not printed (any other thread error still is).
    Installed once per process, like the signal handlers."""
    previous = threading.excepthook
    if getattr(previous, "quiets_tensorboard", False):
        return

    def hook(args):
        if not (isinstance(args.exc_value, OSError)
                and type(args.thread).__module__.startswith("tensorboard.")):
            previous(args)
    hook.quiets_tensorboard = True
    threading.excepthook = hook


def damaged_metrics_line(path: str) -> Optional[Tuple[int, str]]:
    """(line number, what is wrong) of the first complete JSON line in ``metrics.jsonl`` that is
    not an object with an integer epoch (``"epoch": null``, ``"2"``): damage, never what a kill
    leaves (a partial line, which is not JSON: dropped on resume)."""
    for number, _, record in _json_lines(path):
        if isinstance(record, dict) and not _has_epoch(record):
            return number, f"has epoch {record.get('epoch')!r}, not an epoch number"
        if record is not None and not isinstance(record, dict):
            return number, "is not a JSON object"
    return None


def check_tensorboard_directory(directory: str) -> None:
    """A run's ``tb`` is its own directory or nothing yet: a link would send the event files
    elsewhere, a file there would stop the first write; either is one line, before any write."""
    if os.path.islink(directory):
        raise WriteFailed(f"refusing to write {directory}: it is a symbolic link, not the "
                          "run's own directory (remove it)")
    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise WriteFailed(f"refusing to write {directory}: it is a file, not the run's TensorBoard "
                          "directory (move it away, or set another experiment.name)")


def tensorboard_writer(directory: str):
    """A ``SummaryWriter`` on ``directory`` (checked as above); a full disk or a read-only place
    is one line (``WriteFailed``), TensorBoard's own thread kept quiet about it."""
    check_tensorboard_directory(directory)
    from torch.utils.tensorboard import SummaryWriter
    quiet_tensorboard_thread_errors()
    with writes_to(directory):
        return SummaryWriter(directory)


class RunLogger:
    def __init__(self, run_dir: Optional[str], tensorboard: bool = True, enabled: bool = True):
        self.enabled = enabled and run_dir is not None
        self.run_dir = run_dir
        self.writer = None
        if self.enabled:
            os.makedirs(run_dir, exist_ok=True)
            if tensorboard:
                self.writer = tensorboard_writer(os.path.join(run_dir, "tb"))

    def _tensorboard_errors(self):
        """An event write that failed (here or in TensorBoard's thread) as one line."""
        return writes_to(os.path.join(self.run_dir, "tb"))

    def info(self, message: str) -> None:
        if self.enabled:
            tqdm.write(message, file=sys.stdout)
            sys.stdout.flush()

    def scalars(self, values: Dict[str, float], step: int) -> None:
        if self.writer is not None:
            with self._tensorboard_errors():
                for tag, value in values.items():
                    self.writer.add_scalar(tag, value, step)

    def hparams(self, params: Dict[str, object], results: Dict[str, float]) -> None:
        """The run's hyper-parameters and final results for TensorBoard's HPARAMS tab, where the
        runs of a table sit side by side (one row per run directory). Written into this run's
        own event file, so the tab lists the run under its directory name."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams
        plain = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in params.items()}
        results = {k: v for k, v in results.items() if v is not None}   # e.g. no epoch ran
        with self._tensorboard_errors():
            writer = self.writer._get_file_writer()
            for summary in hparams(plain, results):
                writer.add_summary(summary)
            for tag, value in results.items():
                self.writer.add_scalar(tag, value)
            self.writer.flush()

    def metrics(self, record: Dict) -> None:
        """One JSON object per epoch, appended; scripts read this, not the event files."""
        if self.enabled:
            append_text(os.path.join(self.run_dir, "metrics.jsonl"), json.dumps(record) + "\n")

    def truncate_metrics(self, last_epoch: int) -> None:
        """On resume: drop the epochs after the checkpoint, which the run will repeat, and any
        partial line; the file is rewritten atomically."""
        path = os.path.join(self.run_dir or "", "metrics.jsonl")
        if not self.enabled or not os.path.exists(path):
            return
        records, broken = read_metrics_lines(path)
        if broken:
            self.info(f"metrics.jsonl: dropped {len(broken)} incomplete line(s) of an interrupted write")
        write_text(path, "".join(json.dumps(r) + "\n" for r in records if r["epoch"] <= last_epoch))

    def progress(self, total: int, description: str):
        """A tqdm bar on a terminal; ``None`` otherwise (the trainer prints periodic lines)."""
        if self.enabled and console_is_terminal():
            return tqdm(total=total, desc=description, leave=False, dynamic_ncols=True)
        return None

    def close(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            with self._tensorboard_errors():
                try:
                    writer.flush()   # raises a failure of TensorBoard's thread; close() would not
                finally:
                    writer.close()
