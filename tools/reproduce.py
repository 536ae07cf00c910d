"""Reproduce a published table: every row x seed as a ``train.py`` run, several at a time.

    python tools/reproduce.py dkd_cifar100_diff --seeds 0 1 2 --gpus 0,1 --jobs-per-gpu 2
    python tools/reproduce.py dkd_cifar100_diff --dry-run > jobs.txt    # one command per line
    python tools/reproduce.py dkd_cifar100_diff --slurm > jobs.sh; bash jobs.sh   # SLURM job arrays
    python tools/reproduce.py dkd_cifar100_diff --summary                # Markdown + CSV

Runs live in ``<output-dir>/<table>/<row>/seed<k>``. A finished run (``run.json`` with a
summary) is skipped, an interrupted one continues (every command carries ``--resume auto``).
Teacher rows run first. A row whose teacher checkpoint (e.g. the released CIFAR teacher) is
missing uses the first seed's run of the table's teacher row for that architecture instead,
which is then trained first; without such a row the run fails with the path to fill.
"""
import argparse
import fnmatch
import itertools
import os
import queue
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.summarize import summarize  # noqa: E402
from tools.tables import FAILED_MARKER, REPO, config_path, is_finished, load_table, reproducible, run_dir  # noqa: E402
from utils.atomic import open_for_append, write_text  # noqa: E402
from utils.cli import parse_with_overrides  # noqa: E402
from utils.config import MAX_SEED  # noqa: E402
from utils.errors import UserError, exits_on_user_error  # noqa: E402


@dataclass
class PlannedRun:
    row: str
    seed: int
    directory: str
    command: List[str]
    phase: int                       # 0: teachers, 1: the rest
    needs: Optional[str] = None      # run directory whose last.pth this run's teacher is

    @property
    def label(self) -> str:
        return f"{self.row}/seed{self.seed}"


def train_command(config: str, directory: str, seed: int, overrides: List[str]) -> List[str]:
    return [sys.executable, os.path.join(REPO, "train.py"), "--config", config,
            f"experiment.output_dir={os.path.dirname(directory)}",
            f"experiment.name={os.path.basename(directory)}", f"experiment.seed={seed}",
            *overrides, "--resume", "auto"]


def teacher_checkpoint(config: str, overrides: List[str]) -> Optional[tuple]:
    """``(arch, checkpoint)`` of a config's teacher, or None for methods without one."""
    from launch.build import load_run_config
    cfg = load_run_config(config, overrides, here=False)   # the runs may go to other machines
    if not cfg.teacher.arch or cfg.distiller["name"] == "vanilla":
        return None
    return cfg.teacher.arch, cfg.teacher.checkpoint


def plan_runs(table: Dict, seeds: List[int], output_dir: str, overrides: List[str],
              only: Optional[str] = None) -> List[PlannedRun]:
    """Every (row, seed) run of the table, teachers first; rows without a config are skipped."""
    rows = [r for r in table["rows"] if reproducible(r)]
    teacher_rows = {r["arch"]: r for r in rows if r.get("role") == "teacher"}
    selected = [r for r in rows if not only or fnmatch.fnmatch(r["name"], only) or only in r["name"]]
    wanted = {(r["name"], s) for r in selected for s in seeds}
    runs, teacher_runs = [], {}
    for row in rows:
        config, extra, needs = config_path(row), list(overrides), None
        teacher = None if row.get("role") else teacher_checkpoint(config, overrides)
        if teacher and teacher[1] != "torchvision" and not os.path.exists(teacher[1] or ""):
            source = teacher_rows.get(teacher[0])
            if source is None:
                raise UserError(f"row {row['name']}: teacher checkpoint {teacher[1]} is missing and the table "
                                f"has no teacher row for {teacher[0]}; put the released teachers there "
                                "(see README, 'Distilling on CIFAR-100')")
            needs = run_dir(output_dir, table["name"], source["name"], seeds[0])
            teacher_runs[needs] = (source["name"], seeds[0])
            extra.append(f"teacher.checkpoint={os.path.join(needs, 'last.pth')}")
        for seed in seeds:   # the config is read once per row, not per seed
            directory = run_dir(output_dir, table["name"], row["name"], seed)
            runs.append(PlannedRun(row["name"], seed, directory, train_command(config, directory, seed, extra),
                                   phase=0 if row.get("role") == "teacher" else 1, needs=needs))
    needed = {teacher_runs[r.needs] for r in runs if r.needs and (r.row, r.seed) in wanted}
    return [r for r in sorted(runs, key=lambda r: r.phase) if (r.row, r.seed) in wanted | needed]


def execute(run: PlannedRun, slot_env: Dict[str, str]) -> int:
    """One run as a subprocess, its output in ``<run dir>/train.log``; a failure leaves a marker."""
    os.makedirs(run.directory, exist_ok=True)
    marker = os.path.join(run.directory, FAILED_MARKER)
    if os.path.exists(marker):
        os.remove(marker)
    log_path = os.path.join(run.directory, "train.log")
    with open_for_append(log_path) as log:   # never through a link planted in the run directory
        code = subprocess.call(run.command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, **slot_env})
    if code != 0:
        write_text(marker, f"exit code {code}; see {log_path}\n")
    return code


def run_all(runs: List[PlannedRun], slots: List[Dict[str, str]]) -> List[str]:
    """Run phase by phase with one worker per slot; returns the failures, one line each."""
    failures: List[str] = []
    free: "queue.Queue[int]" = queue.Queue()
    for i in range(len(slots)):
        free.put(i)

    def work(run: PlannedRun) -> None:
        if run.needs and not is_finished(run.needs):
            failures.append(f"{run.label}: its teacher run {run.needs} did not finish")
            print(f"[skip] {run.label}: teacher run missing", flush=True)
            return
        slot = free.get()
        start = time.time()
        where = slots[slot].get("CUDA_VISIBLE_DEVICES", "default device")
        print(f"[start] {run.label} (slot {slot}, {where})", flush=True)
        try:
            code = execute(run, slots[slot])
        except UserError as err:   # its log or marker cannot be written: said, the others go on
            failures.append(f"{run.label}: {err}")
            print(f"[fail] {run.label}: {err}", flush=True)
            return
        finally:
            free.put(slot)
        state = "done" if code == 0 else f"FAILED (exit {code}, log {run.directory}/train.log)"
        print(f"[{'done' if code == 0 else 'fail'}] {run.label}: {state}, {time.time() - start:.0f} s", flush=True)
        if code != 0:
            failures.append(f"{run.label}: exit code {code}, log {os.path.join(run.directory, 'train.log')}")

    for phase in sorted({r.phase for r in runs}):
        todo = [r for r in runs if r.phase == phase and not is_finished(r.directory)]
        for r in runs:
            if r.phase == phase and r not in todo:
                print(f"[skip] {r.label}: finished", flush=True)
        with ThreadPoolExecutor(max_workers=len(slots)) as pool:
            list(pool.map(work, todo))
    return failures


def gpu_slots(gpus: Optional[str], jobs_per_gpu: int) -> List[Dict[str, str]]:
    if not gpus:
        return [{} for _ in range(jobs_per_gpu)]
    return [{"CUDA_VISIBLE_DEVICES": g.strip()} for g in gpus.split(",") for _ in range(jobs_per_gpu)]


GPU_ID = re.compile(r"\d+|(GPU|MIG)-[0-9A-Za-z-]+")   # what CUDA_VISIBLE_DEVICES takes


def check_options(args) -> None:
    """The scheduling options, checked before any run starts (a bad one would start nothing
    useful: no slot at all, runs that each fail on their seed, GPUs no run can see)."""
    if args.jobs_per_gpu < 1:
        raise UserError(f"--jobs-per-gpu must be at least 1, got {args.jobs_per_gpu}")
    bad = [seed for seed in args.seeds if not 0 <= seed <= MAX_SEED]
    if bad:
        raise UserError(f"--seeds must be in [0, 2**63 - 1] (experiment.seed), got {bad[0]}")
    if args.gpus is not None and not all(GPU_ID.fullmatch(g.strip()) for g in args.gpus.split(",")):
        raise UserError(f"--gpus takes comma-separated GPU indices or UUIDs (e.g. 0,1), got {args.gpus!r}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", help="a file, or a name of configs/tables/ (e.g. dkd_cifar100_diff)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="passed to every run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--gpus", help="comma-separated GPU ids, one CUDA_VISIBLE_DEVICES per slot")
    parser.add_argument("--jobs-per-gpu", type=int, default=1, help="runs at a time per GPU (or on the CPU)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, one per line, teachers first")
    parser.add_argument("--only", metavar="PATTERN", help="rows whose name matches (glob or substring)")
    parser.add_argument("--summary", action="store_true", help="only summarise the runs that exist")
    parser.add_argument("--output-dir", default="checkpoints/tables")
    parser.add_argument("--slurm", action="store_true",
                        help="print an sbatch submission script: a job array of teacher runs, then one "
                             "of student runs depending on it (tools/slurm.py)")
    parser.add_argument("--slurm-option", action="append", default=[], metavar="'--partition=gpu'",
                        help="an #SBATCH line for both arrays (repeatable): partition, time, account...")
    return parse_with_overrides(parser, argv)


def repo_command(run: PlannedRun) -> List[str]:
    """A run's command as typed at the repository root (for --dry-run and --slurm)."""
    return ["python", "train.py", *run.command[2:]]


def print_dry_run(table: Dict, runs: List[PlannedRun]) -> None:
    """The commands on stdout, one per line (a file for any scheduler); on stderr, what each
    phase is and, before a row's first command, the row and the number the paper published."""
    published = {row["name"]: row.get("top1") for row in table["rows"]}
    for phase in sorted({r.phase for r in runs}):
        print(f"# phase {phase + 1}: {'teachers (finish these first)' if phase == 0 else 'students'}",
              file=sys.stderr)
        for row, row_runs in itertools.groupby((r for r in runs if r.phase == phase), key=lambda r: r.row):
            top1 = published.get(row)
            print(f"# {row}: published top-1 {top1 if top1 is not None else 'not given'}", file=sys.stderr)
            print("\n".join(shlex.join(repo_command(r)) for r in row_runs))


@exits_on_user_error
def main(argv=None) -> int:
    args = parse_args(argv)
    check_options(args)
    table = load_table(args.table)
    output_dir = os.path.abspath(args.output_dir)
    if args.summary:
        print(summarize(table, output_dir, args.seeds), end="")
        return 0
    runs = plan_runs(table, args.seeds, output_dir, args.overrides, args.only)
    if args.slurm:
        from tools.slurm import sbatch_script
        invocation = shlex.join(["python", "tools/reproduce.py", *(sys.argv[1:] if argv is None else argv)])
        print(sbatch_script(table["name"], [repo_command(r) for r in runs if r.phase == 0],
                            [repo_command(r) for r in runs if r.phase == 1], REPO,
                            os.path.join(output_dir, "slurm_logs"), invocation, args.slurm_option), end="")
        return 0
    if args.dry_run:
        print_dry_run(table, runs)
        return 0
    failures = run_all(runs, gpu_slots(args.gpus, args.jobs_per_gpu))
    print(summarize(table, output_dir, args.seeds), end="")
    if failures:
        print(f"{len(failures)} run(s) failed:", *(f"  {line}" for line in failures), sep="\n", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
