"""Top-1 / top-5 / loss of ``engine.evaluate`` against an independent count on fixed logits.

The count here sorts each row's classes in plain Python by (logit descending, class index
ascending): the rule ``argmax`` follows (the training top-1), so a tie is won by the lower
class index, and the result depends neither on ``topk``'s arbitrary tie order nor on batching.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from engine.evaluate import evaluate, target_ranks
from utils.batch import Batch

CPU = torch.device("cpu")


def independent_hits(logits, targets, k):
    """Samples whose target is among the k first classes in (-logit, index) order."""
    hits = 0
    for row, target in zip(logits.tolist(), targets.tolist()):
        order = sorted(range(len(row)), key=lambda c: (-row[c], c))
        hits += target in order[:k]
    return hits


def independent_mean_ce(logits, targets):
    total = 0.0
    for row, target in zip(logits.double().tolist(), targets.tolist()):
        top = max(row)
        total += top + math.log(sum(math.exp(v - top) for v in row)) - row[target]
    return total / len(targets)


# Each row is a case; the comment says where its target stands.
TIES = torch.tensor([
    [1., 1., 1., 0., 0., 0., 0., 0.],      # target 0: tied first, lowest index: top-1
    [1., 1., 1., 0., 0., 0., 0., 0.],      # target 2: tied first, third by index: top-5 only
    [0., 0., 0., 0., 0., 0., 0., 0.],      # target 4: all tied: 5th: top-5
    [0., 0., 0., 0., 0., 0., 0., 0.],      # target 5: all tied: 6th: miss
    [3., 2., 2., 2., 2., 2., 2., 0.],      # target 5: 2 is tied for 2nd..7th, 5th of them: miss
    [3., 2., 2., 2., 2., 2., 2., 0.],      # target 4: 5th place: top-5
    [0., 5., 0., 0., 0., 0., 0., 5.],      # target 7: tied first with 1, behind it: top-5
    [0., 0., 0., 0., 0., 0., 0., 9.],      # target 7: clear first
    [9., 8., 7., 6., 5., 4., 3., 2.],      # target 7: last: miss
    [float("nan"), 1., 0., 0., 0., 0., 0., 0.],   # target 1: a NaN ranks first: top-5 only
])
TIE_TARGETS = torch.tensor([0, 2, 4, 5, 5, 4, 7, 7, 7, 1])
EXPECTED_RANKS = [0, 2, 4, 5, 5, 4, 1, 0, 7, 1]


class Fixed(torch.nn.Module):
    """A 'model' whose input is already its logits (or a dict of named logits)."""

    def __init__(self, names=None):
        super().__init__()
        self.names = names

    def forward(self, x):
        if self.names is None:
            return x
        return {name: x * scale for name, scale in self.names.items()}


def loader_of(logits, targets, batch_size):
    return [Batch(logits[i:i + batch_size], targets[i:i + batch_size])
            for i in range(0, len(targets), batch_size)]


def test_target_ranks_break_ties_towards_the_lower_class_index():
    assert target_ranks(TIES, TIE_TARGETS).tolist() == EXPECTED_RANKS
    finite = TIES[:-1]
    assert (target_ranks(finite, finite.argmax(dim=1)) == 0).all()   # argmax's choice is top-1


def test_tied_logits_give_the_independent_count():
    result = evaluate(Fixed(), loader_of(TIES, TIE_TARGETS, 3), CPU)
    assert result["samples"] == 10
    assert result["top1"] == 100.0 * 2 / 10          # rows 0 and 7
    assert result["top5"] == 100.0 * 7 / 10          # ... and rows 1, 2, 5, 6, 9
    finite, targets = TIES[:-1], TIE_TARGETS[:-1]
    result = evaluate(Fixed(), loader_of(finite, targets, 4), CPU)
    assert result["top1"] == 100.0 * independent_hits(finite, targets, 1) / 9
    assert result["top5"] == 100.0 * independent_hits(finite, targets, 5) / 9


@pytest.mark.parametrize("classes, batch_size", [(100, 7), (1000, 64), (3, 5)])
def test_random_and_rounded_logits_give_the_independent_count(classes, batch_size):
    """Random logits, half of them rounded to a coarse grid so that many rows tie, over several
    batches of uneven size; 3 classes make top-5 every sample."""
    generator = torch.Generator().manual_seed(classes)
    logits = torch.randn(150, classes, generator=generator)
    logits[::2] = (logits[::2] * 2).round() / 2
    targets = torch.randint(classes, (150,), generator=generator)
    result = evaluate(Fixed(), loader_of(logits, targets, batch_size), CPU)
    assert result["samples"] == 150
    assert result["top1"] == 100.0 * independent_hits(logits, targets, 1) / 150
    assert result["top5"] == 100.0 * independent_hits(logits, targets, 5) / 150
    assert result["loss"] == pytest.approx(independent_mean_ce(logits, targets), rel=1e-6)
    if classes < 5:
        assert result["top5"] == 100.0


def test_named_outputs_are_each_counted_and_the_first_is_the_headline():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 10, generator=generator)
    targets = torch.randint(10, (40,), generator=generator)
    result = evaluate(Fixed({"branch1": 1.0, "ensemble": -1.0}), loader_of(logits, targets, 16), CPU)
    for name, scaled in (("branch1", logits), ("ensemble", -logits)):
        assert result[f"{name}/top1"] == 100.0 * independent_hits(scaled, targets, 1) / 40
        assert result[f"{name}/top5"] == 100.0 * independent_hits(scaled, targets, 5) / 40
        assert result[f"{name}/loss"] == pytest.approx(F.cross_entropy(scaled, targets).item(), rel=1e-6)
    assert (result["top1"], result["top5"]) == (result["branch1/top1"], result["branch1/top5"])
