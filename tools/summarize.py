"""Summarise a table's runs against the published numbers (Markdown on stdout, .md and .csv files).

    python tools/summarize.py dkd_cifar100_diff [--seeds 0 1 2] [--output-dir checkpoints/tables] [--plot]

Per row: the paper's top-1, ours at the best epoch and at the last epoch (mean ± sample std over
the finished runs, n), best − paper, and every run that is not finished ("missing", "failed",
"running: epoch k/N"). No row is dropped; rows we cannot reproduce show why. ``--plot`` also
draws the rows against the paper (``summary.png``) and the validation top-1 curves of all the
table's runs (``curves.png``), with PDF copies, beside ``summary.md``.
"""
import argparse
import csv
import io
import os
import re
import statistics
import sys
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.tables import load_table, read_metrics, reproducible, run_dir, run_status  # noqa: E402
from utils.atomic import write_text  # noqa: E402
from utils.errors import exits_on_user_error  # noqa: E402

COLUMNS = ["row", "paper top-1", "ours best epoch", "ours last epoch", "best − paper", "runs"]


def mean_and_std(values: List[float]) -> Tuple[float, Optional[float]]:
    """The mean and the sample standard deviation (None for a single value)."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def mean_std(values: List[float]) -> str:
    """``mean ± sample std (n)``; ``—`` for the std of a single run."""
    if not values:
        return "—"
    mean, std = mean_and_std(values)
    return f"{mean:.2f} ± {'—' if std is None else f'{std:.2f}'} ({len(values)})"


def row_seeds(table_dir: str, row: str, seeds: Optional[List[int]]) -> List[int]:
    """The seeds asked for, plus any seed directory already on disk."""
    row_dir = os.path.join(table_dir, row)
    names = os.listdir(row_dir) if os.path.isdir(row_dir) else []
    found = {int(m.group(1)) for d in names if (m := re.fullmatch(r"seed(\d+)", d))}
    return sorted(found | set(seeds or ([] if found else [0])))


def row_runs(row: Dict, output_dir: str, table_name: str, seeds: Optional[List[int]]) -> Dict[str, list]:
    """The row's runs: the finished ones' best- and last-epoch top-1, the others' states
    ("seed1 running: epoch 3/240"), and every run's validation curve ``{seed: [(epoch, top1)]}``."""
    best, last, states, curves = [], [], [], {}
    for seed in row_seeds(os.path.join(output_dir, table_name), row["name"], seeds):
        directory = run_dir(output_dir, table_name, row["name"], seed)
        status = run_status(directory)
        metrics = read_metrics(directory)
        curve = [(m["epoch"], m["val/top1"]) for m in metrics if "val/top1" in m]
        if curve:
            curves[seed] = curve
        if status == "finished":
            best.append(max(m["val/top1"] for m in metrics))
            last.append(metrics[-1]["val/top1"])
        else:
            states.append(f"seed{seed} {status}")
    return {"best": best, "last": last, "states": states, "curves": curves}


def summarize_row(row: Dict, output_dir: str, table_name: str, seeds: Optional[List[int]]) -> Dict[str, str]:
    paper = row.get("top1")
    cells = {"row": row["name"], "paper top-1": "—" if paper is None else f"{paper:.2f}"}
    if not reproducible(row):
        return {**cells, "ours best epoch": "not reproducible", "ours last epoch": "—",
                "best − paper": "—", "runs": row.get("why", "no config")}
    runs = row_runs(row, output_dir, table_name, seeds)
    best, last = runs["best"], runs["last"]
    diff = f"{statistics.mean(best) - paper:+.2f}" if best and paper is not None else "—"
    return {**cells, "ours best epoch": mean_std(best), "ours last epoch": mean_std(last),
            "best − paper": diff, "runs": "; ".join([f"{len(best)} finished", *runs["states"]])}


def summarize(table: Dict, output_dir: str, seeds: Optional[List[int]] = None) -> str:
    """The Markdown summary; also written to ``<output_dir>/<table>/summary.{md,csv}``."""
    rows = [summarize_row(r, output_dir, table["name"], seeds) for r in table["rows"]]
    lines = [f"# {table['name']}: {table.get('paper', '')}", "",
             f"Paper reports: {table.get('reports', 'not stated')}.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r[c] for c in COLUMNS) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    directory = os.path.join(output_dir, table["name"])
    os.makedirs(directory, exist_ok=True)
    write_text(os.path.join(directory, "summary.md"), text)
    table_csv = io.StringIO(newline="")
    writer = csv.DictWriter(table_csv, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_text(os.path.join(directory, "summary.csv"), table_csv.getvalue())
    return text


@exits_on_user_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", help="a file, or a name of configs/tables/")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds expected (default: those on disk)")
    parser.add_argument("--output-dir", default="checkpoints/tables")
    parser.add_argument("--plot", action="store_true", help="also draw the rows against the paper "
                        "and every run's validation curve (summary.png, curves.png, + .pdf)")
    args = parser.parse_args(argv)
    table, output_dir = load_table(args.table), os.path.abspath(args.output_dir)
    print(summarize(table, output_dir, args.seeds), end="")
    if args.plot:
        from tools.table_figures import plot_table
        runs = {row["name"]: row_runs(row, output_dir, table["name"], args.seeds)
                for row in table["rows"] if reproducible(row)}
        for path in plot_table(table, runs, os.path.join(output_dir, table["name"])):
            print(f"figure: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
