"""Where a run's numbers go: TensorBoard scalars, ``metrics.jsonl`` and the console.

Only the main process (rank 0) writes; other ranks get a logger that drops everything, so the
trainer never branches on the rank. Console output is a tqdm bar per epoch on a terminal and
plain periodic lines otherwise (log files and job schedulers).
"""
import json
import os
import sys
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from tqdm import tqdm

from utils.atomic import write_lines


def read_metrics_lines(path: str) -> Tuple[List[Dict], List[str]]:
    """The epochs recorded in a ``metrics.jsonl`` and its lines that are not a JSON object: a
    partial last line, left by a kill or a full disk in the middle of an append."""
    records, broken = [], []
    if not os.path.isfile(path):
        return records, broken
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                broken.append(line)
                continue
            (records if isinstance(record, dict) and "epoch" in record else broken).append(record)
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


class RunLogger:
    def __init__(self, run_dir: Optional[str], tensorboard: bool = True, enabled: bool = True):
        self.enabled = enabled and run_dir is not None
        self.run_dir = run_dir
        self.writer = None
        self.interactive = console_is_terminal()
        if self.enabled:
            os.makedirs(run_dir, exist_ok=True)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(os.path.join(run_dir, "tb"))

    def info(self, message: str) -> None:
        if self.enabled:
            tqdm.write(message, file=sys.stdout)
            sys.stdout.flush()

    def scalars(self, values: Dict[str, float], step: int) -> None:
        if self.writer is not None:
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
        writer = self.writer._get_file_writer()
        for summary in hparams(plain, results):
            writer.add_summary(summary)
        for tag, value in results.items():
            self.writer.add_scalar(tag, value)
        self.writer.flush()

    def metrics(self, record: Dict) -> None:
        """One JSON object per epoch, appended; scripts read this, not the event files."""
        if self.enabled:
            with open(os.path.join(self.run_dir, "metrics.jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")

    def truncate_metrics(self, last_epoch: int) -> None:
        """On resume: drop the epochs after the checkpoint, which the run will repeat, and any
        partial line; the file is rewritten atomically."""
        path = os.path.join(self.run_dir or "", "metrics.jsonl")
        if not self.enabled or not os.path.exists(path):
            return
        records, broken = read_metrics_lines(path)
        if broken:
            self.info(f"metrics.jsonl: dropped {len(broken)} incomplete line(s) of an interrupted write")
        write_lines(path, [json.dumps(r) + "\n" for r in records if r["epoch"] <= last_epoch])

    def progress(self, total: int, description: str):
        """A tqdm bar on a terminal; ``None`` otherwise (the trainer prints periodic lines)."""
        if self.enabled and self.interactive:
            return tqdm(total=total, desc=description, leave=False, dynamic_ncols=True)
        return None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
