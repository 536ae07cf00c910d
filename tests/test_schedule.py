"""The learning-rate schedule against the recipe's formula, written out here independently.

The recipes (mdistiller's CIFAR-100 solver) count epochs from 1 and give epoch e the rate
``lr · gamma^#{m in milestones : e > m}``; the optional warm-up multiplies the rate of the
first ``warmup_epochs`` epochs by ``k / (warmup_epochs · steps_per_epoch)`` at the k-th
optimizer step (1-based), so the last warm-up step reaches the full rate. The scheduler is
stepped once per optimizer step, so optimizer step s (0-based) lies in epoch s // steps + 1.
That a resumed run continues these rates is tests/test_resume_schedule.py's (a real run killed
inside the warm-up, resumed by our code, equal to the uninterrupted one).
"""
import pytest
import torch

from engine.schedule import build_optimizer, build_scheduler
from utils.config import SolverConfig

STEPS_PER_EPOCH = 3


def recipe_lr(step: int, lr: float, milestones, gamma: float, warmup_epochs: int) -> float:
    """The rate of optimizer step ``step`` (0-based), straight from the recipe's definition."""
    epoch = step // STEPS_PER_EPOCH + 1
    decays = len([m for m in milestones if epoch > m])
    rate = lr * gamma ** decays
    warmup_steps = warmup_epochs * STEPS_PER_EPOCH
    if step < warmup_steps:
        rate *= (step + 1) / warmup_steps
    return rate


def solver(**values) -> SolverConfig:
    base = dict(epochs=8, lr=0.2, momentum=0.9, weight_decay=5e-4, nesterov=False,
                milestones=[2, 4, 6], gamma=0.3, warmup_epochs=3)
    return SolverConfig(**{**base, **values})


def rates_used(cfg, steps: int):
    """The rate each optimizer step runs at, read from the optimizer before the step."""
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = build_optimizer([weight], cfg)
    scheduler = build_scheduler(optimizer, cfg, STEPS_PER_EPOCH)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        weight.grad = torch.ones(2)
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("milestones, gamma, warmup_epochs", [
    ([2, 4, 6], 0.3, 3),     # a milestone inside the warm-up, two after it
    ([1, 5], 0.1, 0),        # no warm-up
    ([3], 0.5, 1),           # warm-up of one epoch, one milestone
    ([8], 0.1, 2),           # the base configs' "no decay": milestone at the last epoch
])
def test_every_step_runs_at_the_recipes_rate(milestones, gamma, warmup_epochs):
    cfg = solver(milestones=milestones, gamma=gamma, warmup_epochs=warmup_epochs)
    steps = cfg.epochs * STEPS_PER_EPOCH
    rates = rates_used(cfg, steps)
    expected = [recipe_lr(s, cfg.lr, milestones, gamma, warmup_epochs) for s in range(steps)]
    assert rates == pytest.approx(expected, rel=1e-12, abs=0)


def test_recipe_counts_epochs_from_one_and_decays_after_each_milestone():
    """Spot values, so the formula above is itself pinned down: epochs 1-2 at lr (after the
    warm-up), epochs 3-4 at lr·γ, 5-6 at lr·γ², 7-8 at lr·γ³."""
    cfg = solver(warmup_epochs=0)
    rates = rates_used(cfg, cfg.epochs * STEPS_PER_EPOCH)
    per_epoch = rates[::STEPS_PER_EPOCH]
    assert per_epoch == pytest.approx([0.2, 0.2, 0.06, 0.06, 0.018, 0.018, 0.0054, 0.0054], rel=1e-12)
    warm = rates_used(solver(warmup_epochs=1, milestones=[8]), STEPS_PER_EPOCH + 1)
    assert warm == pytest.approx([0.2 / 3, 0.4 / 3, 0.2, 0.2], rel=1e-12)
