"""The figures of one or several checkpoints, side by side on one scale per figure.

- ``logit_difference`` / ``logit_difference_zscore``: the papers' heatmaps of
  ``|teacher − student|`` class-mean logits (raw, and both sides Z-scored), one colour scale;
- ``logit_statistics``: per-image logit mean, std and range, teacher (x) against student (y), as
  2-D histograms with shared bins and one colour scale;
- ``embedding``: the student's pooled features in 2-D (t-SNE or PCA), coloured by class.

The numbers come from tools/figure_data.py; this module only places them.
"""
from typing import Dict, List, Optional

from tools.checkpoint_outputs import CheckpointOutputs
from tools.figure_data import (STATISTICS, class_mean_difference, colour_limit, difference_summary,
                               embedding_2d, histogram_2d, logit_statistics, shared_edges,
                               subset_indices)
from tools.plotting import new_figure

PANEL_INCHES = (4.6, 4.4)      # one heatmap / histogram / scatter with its titles and labels
COLOUR_BAR_INCHES = 1.1
STATISTIC_TITLES = {"mean": "mean of the logits", "std": "std of the logits",
                    "range": "range (max − min) of the logits"}
HISTOGRAM_BINS = 40


def class_ticks(num_classes: int) -> range:
    """Every class named up to 20 classes; every 10th beyond."""
    return range(0, num_classes, 1 if num_classes <= 20 else 10)


def panels(rows: int, columns: int, extra_height: float = 0.0):
    """A figure of ``rows`` x ``columns`` panels beside one colour bar, and its axes grid."""
    figure = new_figure((PANEL_INCHES[0] * columns + COLOUR_BAR_INCHES,
                         (PANEL_INCHES[1] + 0.4) * rows + extra_height))
    return figure, figure.subplots(rows, columns, squeeze=False)


def difference_figure(runs: List[CheckpointOutputs], standardize: bool, max_diff: Optional[float] = None):
    matrices = [class_mean_difference(r.student_logits, r.teacher_logits, r.targets, r.num_classes,
                                      standardize) for r in runs]
    limit = max_diff if max_diff is not None else colour_limit(matrices)
    figure, (axes,) = panels(1, len(runs))
    for axis, run, matrix in zip(axes, runs, matrices):
        image = axis.imshow(matrix.numpy(), vmin=0.0, vmax=limit, cmap="Reds", interpolation="nearest")
        mean, largest = difference_summary(matrix)
        axis.set_title(f"{run.label}\n{run.run}\noff-diagonal mean {mean:.3f}, max {largest:.3f}",
                       fontsize=9)
        axis.set(xlabel="logit of class", ylabel="true class of the val images",
                 xticks=class_ticks(run.num_classes), yticks=class_ticks(run.num_classes))
    clipped = any(float(m.nan_to_num(0.0).max()) > limit for m in matrices)
    figure.colorbar(image, ax=list(axes), extend="max" if clipped else "neither",
                    label="|teacher − student| class-mean logit")
    which = "both sides Z-scored per image" if standardize else "raw logits"
    figure.suptitle(f"Class-mean logits, |teacher − student|: {which}\n"
                    f"(diagonal set to 0; colour scale 0 to {limit:.3g})", fontsize=10)
    return figure


def statistics_figure(runs: List[CheckpointOutputs]):
    teacher = [logit_statistics(r.teacher_logits) for r in runs]
    student = [logit_statistics(r.student_logits) for r in runs]
    edges = {name: shared_edges([s[name] for s in teacher + student], HISTOGRAM_BINS) for name in STATISTICS}
    counts = [[histogram_2d(t[name], s[name], edges[name], edges[name]) for name in STATISTICS]
              for t, s in zip(teacher, student)]
    peak = max(int(c.max()) for row in counts for c in row)
    from matplotlib.colors import LogNorm
    norm = LogNorm(vmin=1, vmax=max(peak, 2))
    figure, axes = panels(len(runs), 3, extra_height=0.4)
    for row, run in enumerate(runs):
        for column, name in enumerate(STATISTICS):
            axis, grid = axes[row][column], edges[name].numpy()
            shown = counts[row][column].double().T.numpy()
            shown[shown == 0] = float("nan")   # empty bins stay blank
            mesh = axis.imshow(shown, origin="lower", extent=(grid[0], grid[-1], grid[0], grid[-1]),
                               norm=norm, cmap="viridis", interpolation="nearest")
            axis.plot(grid[[0, -1]], grid[[0, -1]], "--", color="grey", linewidth=1)
            axis.set_title(f"{STATISTIC_TITLES[name]} per image", fontsize=9)
            axis.set_xlabel("teacher")
            axis.set_ylabel(f"{run.label}\n{run.run}\nstudent" if column == 0 else "student",
                            fontsize=9)
    figure.colorbar(mesh, ax=axes.ravel().tolist(), shrink=min(1.0, 0.5 + 0.25 * len(runs)),
                    label="val images per bin (log scale)")
    figure.suptitle("Logit statistics of each val image, teacher (x) vs student (y): on the dashed "
                    "line the student matches the teacher", fontsize=10)
    return figure


def embedding_figure(runs: List[CheckpointOutputs], max_samples: int):
    figure, (axes,) = panels(1, len(runs))
    method = ""
    for axis, run in zip(axes, runs):
        chosen = subset_indices(len(run.targets), max_samples)
        coordinates, method = embedding_2d(run.pooled_features[chosen])
        cmap = "tab10" if run.num_classes <= 10 else "tab20" if run.num_classes <= 20 else "turbo"
        points = axis.scatter(coordinates[:, 0].numpy(), coordinates[:, 1].numpy(), s=6, cmap=cmap,
                              c=run.targets[chosen].numpy(), vmin=-0.5, vmax=run.num_classes - 0.5, linewidths=0)
        axis.set_title(f"{run.label}\n{run.run}, {len(chosen)} val images", fontsize=9)
        axis.set(xlabel="component 1", ylabel="component 2")
    figure.colorbar(points, ax=list(axes), label="class").set_ticks(class_ticks(runs[0].num_classes))
    figure.suptitle(f"Student's pooled features, coloured by class\n{method}", fontsize=10)
    return figure


def checkpoint_figures(runs: List[CheckpointOutputs], max_diff: Optional[List[float]] = None,
                       embedding_samples: int = 2000) -> Dict[str, object]:
    """Every figure, by file stem. ``max_diff``: one colour-scale top for both heatmaps, or two
    (raw, Z-scored); by default each heatmap figure's largest value."""
    raw_limit, zscore_limit = (max_diff * 2)[:2] if max_diff else (None, None)
    return {"logit_difference": difference_figure(runs, False, raw_limit),
            "logit_difference_zscore": difference_figure(runs, True, zscore_limit),
            "logit_statistics": statistics_figure(runs),
            "embedding": embedding_figure(runs, embedding_samples)}

