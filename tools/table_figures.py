"""``summarize.py TABLE --plot``: a table's rows against the paper, and every run's val curve.

- ``summary``: per row, the paper's top-1 and ours (mean ± sample std over the finished seeds) at
  the best and at the last epoch, on one top-1 axis;
- ``curves``: the validation top-1 of every run of the table by epoch, the seeds of a row in one
  colour, the row's published number as a dotted line of that colour.
"""
import textwrap
from typing import Dict, List

from tools.plotting import new_figure, save_figure
from tools.summarize import mean_and_std

FORMATS = ("png", "pdf")
OURS = (("best", 0.15, "o", "tab:blue"), ("last", -0.15, "s", "tab:orange"))   # key, y offset, marker, colour


def _title(table: Dict, what: str) -> str:
    heading = f"{table['name']}: {table.get('paper', '')}".rstrip(": ")
    return "\n".join(textwrap.wrap(heading, 90) + [what])


LINE_STYLES = ("-", "--", "-.", (0, (4, 1, 1, 1, 1, 1)))   # ":" is the paper's line


def row_style(index: int):
    """(colour, line style) of row ``index``: tab20's 20 colours, then the next line style, so
    the first 80 rows of a table are told apart (tab10 then tab20 repeated colours from row 10)."""
    from matplotlib import colormaps
    return colormaps["tab20"](index % 20), LINE_STYLES[(index // 20) % len(LINE_STYLES)]


def summary_figure(table: Dict, runs: Dict[str, Dict[str, list]]):
    rows = table["rows"]
    figure = new_figure((9.0, 1.6 + 0.38 * len(rows)))
    axis = figure.subplots()
    labels = []
    for position, row in enumerate(reversed(rows)):
        results = runs.get(row["name"])
        if row.get("top1") is not None:
            axis.plot(row["top1"], position, "D", color="black", label="paper")
        for key, offset, marker, colour in OURS:
            if results and results[key]:
                mean, std = mean_and_std(results[key])
                axis.errorbar(mean, position + offset, xerr=std or 0.0, fmt=marker, color=colour,
                              capsize=3, label=f"ours, {key} epoch (mean ± std over seeds)")
        count = len(results["best"]) if results else 0
        labels.append(f"{row['name']} ({count} finished)" if results is not None else
                      f"{row['name']} (not reproducible)")
    axis.set_yticks(range(len(rows)), labels, fontsize=8)
    axis.set_xlabel("val top-1 (%)")
    axis.grid(axis="x", alpha=0.3)
    handles, names = axis.get_legend_handles_labels()
    by_name = dict(zip(names, handles))   # one entry per marker kind
    if by_name:
        axis.legend(by_name.values(), by_name.keys(), fontsize=8, loc="best")
    axis.set_title(_title(table, "ours (finished runs) vs the paper"), fontsize=10)
    return figure


def curves_figure(table: Dict, runs: Dict[str, Dict[str, list]]):
    figure = new_figure((9.0, 5.5))
    axis = figure.subplots()
    for index, row in enumerate(table["rows"]):
        curves = (runs.get(row["name"]) or {}).get("curves") or {}
        colour, style = row_style(index)
        for number, (seed, points) in enumerate(sorted(curves.items())):
            epochs, top1 = zip(*points)
            axis.plot(epochs, top1, color=colour, linestyle=style, linewidth=1,
                      label=f"{row['name']} ({len(curves)} runs)" if number == 0 else None)
        if curves and row.get("top1") is not None:
            axis.axhline(row["top1"], color=colour, linestyle=":", linewidth=1)
    if not axis.lines:
        axis.text(0.5, 0.5, "no run has finished an epoch yet", ha="center", transform=axis.transAxes)
    else:
        axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    from matplotlib.ticker import MaxNLocator
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set(xlabel="epoch", ylabel="val top-1 (%)")
    axis.grid(alpha=0.3)
    axis.set_title(_title(table, "validation top-1 of every run (a row's seeds share a colour; "
                                 "dotted: the paper's number)"), fontsize=10)
    return figure


def plot_table(table: Dict, runs: Dict[str, Dict[str, list]], directory: str) -> List[str]:
    """Both figures, as ``summary.{png,pdf}`` and ``curves.{png,pdf}`` in ``directory``."""
    paths = save_figure(summary_figure(table, runs), f"{directory}/summary", FORMATS)
    return paths + save_figure(curves_figure(table, runs), f"{directory}/curves", FORMATS)
