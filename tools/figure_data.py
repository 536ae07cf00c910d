"""The numbers the figures draw, as pure functions of logits, targets and features (float64).

Drawing (tools/checkpoint_figures.py) only places what these return, so every number on a figure
is tested here alone against an independent count (tests/test_figures.py).

- The class-mean logit difference is the one of the DKD and Z-score papers' heatmaps (Zhao et
  al., CVPR 2022, Fig. 5; Sun et al., CVPR 2024, Figs. 3 and 5; their ``correlation`` notebooks):
  for each true class the mean logit vector of its val images, teacher and student, and
  ``|teacher − student|``, the diagonal (the true class's own logit) set to 0 as they set it.
- Per-sample logit statistics: the mean, standard deviation and range of each image's logits,
  the magnitude mismatch between teacher and student that the Z-score paper is about.
- A 2-D embedding of the student's pooled features: t-SNE where scikit-learn is installed, else
  PCA (``embedding_2d`` says which).
"""
from typing import Dict, List, Tuple

import torch

from distillers.losses import zscore

STATISTICS = ("mean", "std", "range")


def class_mean_logits(logits: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[num_classes, C]``: row k is the mean logit vector of the samples of class k (NaN for a
    class without samples)."""
    sums = torch.zeros(num_classes, logits.shape[1], dtype=torch.float64)
    sums.index_add_(0, targets.long().cpu(), logits.detach().double().cpu())
    counts = torch.bincount(targets.long().cpu(), minlength=num_classes).double()
    return sums / counts[:, None]


def class_mean_difference(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                          targets: torch.Tensor, num_classes: int, standardize: bool = False) -> torch.Tensor:
    """``|class means of the teacher − class means of the student|`` with a zero diagonal; with
    ``standardize`` both sides' logits are Z-scored per sample first (``distillers.losses.zscore``,
    the standardization the Z-score method distils with)."""
    if standardize:
        student_logits, teacher_logits = zscore(student_logits.double()), zscore(teacher_logits.double())
    difference = (class_mean_logits(teacher_logits, targets, num_classes)
                  - class_mean_logits(student_logits, targets, num_classes)).abs()
    difference.fill_diagonal_(0.0)
    return difference


def difference_summary(difference: torch.Tensor) -> Tuple[float, float]:
    """``(mean, max)`` of the off-diagonal entries (classes without samples left out): the two
    numbers the notebooks print under each heatmap."""
    off_diagonal = ~torch.eye(difference.shape[0], dtype=torch.bool)
    values = difference[off_diagonal & torch.isfinite(difference)]
    if not values.numel():
        return float("nan"), float("nan")
    return float(values.mean()), float(values.max())


def colour_limit(matrices: List[torch.Tensor]) -> float:
    """The largest finite value over ``matrices``: one colour scale for all the panels compared
    (1.0 where all are zero, so the scale stays valid)."""
    finite = [m[torch.isfinite(m)] for m in matrices]
    largest = max((float(values.max()) for values in finite if values.numel()), default=0.0)
    return largest if largest > 0 else 1.0


def logit_statistics(logits: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Per sample: the mean, the standard deviation (unbiased, over the classes, as ``zscore``
    takes it) and the range (max − min) of its logits."""
    logits = logits.detach().double().cpu()
    return {"mean": logits.mean(dim=1), "std": logits.std(dim=1),
            "range": logits.max(dim=1).values - logits.min(dim=1).values}


def shared_edges(values: List[torch.Tensor], bins: int) -> torch.Tensor:
    """``bins + 1`` equal-width edges spanning every value given (teacher's and students' alike,
    so both axes of a histogram and all compared panels share one scale)."""
    low = min(float(v.min()) for v in values)
    high = max(float(v.max()) for v in values)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    return torch.linspace(low, high, bins + 1, dtype=torch.float64)


def histogram_2d(x: torch.Tensor, y: torch.Tensor, x_edges: torch.Tensor,
                 y_edges: torch.Tensor) -> torch.Tensor:
    """Counts ``[len(x_edges) − 1, len(y_edges) − 1]`` of the pairs ``(x, y)``: bin i holds
    ``edges[i] ≤ v < edges[i + 1]``, the last bin also its right edge; pairs outside are left out
    (``torch.histogramdd``, numpy's ``histogram2d`` rule)."""
    points = torch.stack([x.detach().double().cpu(), y.detach().double().cpu()], dim=1)
    return torch.histogramdd(points, bins=[x_edges.double().cpu(), y_edges.double().cpu()]).hist.long()


def pca_2d(features: torch.Tensor) -> torch.Tensor:
    """The features projected on their two principal axes (``[N, 2]``, float64). Each axis's
    sign is fixed (its largest-magnitude loading positive), so the picture is deterministic."""
    centred = features.detach().double().cpu()
    centred = centred - centred.mean(dim=0, keepdim=True)
    _, _, right = torch.linalg.svd(centred, full_matrices=False)
    axes = right[:2]
    signs = torch.sign(axes.gather(1, axes.abs().argmax(dim=1, keepdim=True)))
    axes = axes * torch.where(signs == 0, torch.ones_like(signs), signs)
    projected = centred @ axes.T
    if projected.shape[1] < 2:   # one feature dimension: the second axis is flat
        projected = torch.cat([projected, torch.zeros_like(projected)], dim=1)
    return projected


def embedding_2d(features: torch.Tensor, seed: int = 0) -> Tuple[torch.Tensor, str]:
    """``(coordinates [N, 2], method)``: t-SNE (scikit-learn, seeded, PCA-initialised) when the
    library is installed, else PCA; ``method`` says which, for the figure's title."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        return pca_2d(features), "PCA (scikit-learn not installed, so no t-SNE)"
    data = features.detach().double().cpu().numpy()
    perplexity = float(min(30, max(1, len(data) - 1) / 3))
    coordinates = TSNE(n_components=2, perplexity=perplexity, init="pca",
                       random_state=seed).fit_transform(data)
    return torch.from_numpy(coordinates), "t-SNE (scikit-learn)"


def subset_indices(count: int, limit: int, seed: int = 0) -> torch.Tensor:
    """At most ``limit`` of ``count`` sample indices, drawn once by a seeded generator and sorted
    (the embedding of a large val set stays fast and the same on every call)."""
    if count <= limit:
        return torch.arange(count)
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:limit].sort().values
