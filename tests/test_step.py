"""The training step (engine/steps.py) as a step-level change sees it: gradient clipping by norm
(``solver.clip_grad_norm``) is one edit of the SGD step, clips the true gradients also under
the fp16 GradScaler, reaches a run through ``build_trainer``, and stays off by default; the
trainer stops on a non-finite validation unless a smoke run asked it not to."""
import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from engine.precision import Precision
from engine.steps import SgdStep
from launch.training import build_trainer
from utils.batch import Batch
from utils.config import Config, SolverConfig, replace_section
from utils.errors import UserError
from utils.logger import RunLogger

LR, CLIP = 0.5, 0.01


class Linear(torch.nn.Module):
    """A linear classifier whose training forward returns one loss (CE); eval: the logits,
    or NaN when ``nan_on_eval`` (weights stay finite)."""

    def __init__(self, nan_on_eval=False):
        super().__init__()
        self.head = torch.nn.Linear(12, 5)
        self.nan_on_eval = nan_on_eval

    def forward(self, batch, epoch=None):
        logits = self.head(batch.images.flatten(1))
        if not self.training:
            return logits * float("nan") if self.nan_on_eval else logits
        return logits, {"loss_ce": F.cross_entropy(logits, batch.targets)}


def batch():
    generator = torch.Generator().manual_seed(3)
    return Batch(torch.randn(8, 3, 2, 2, generator=generator) * 10,
                 torch.randint(0, 5, (8,), generator=generator))


def clipped_sgd_by_hand(module, data):
    """p ← p − lr·g·min(1, CLIP / (‖g‖ + 1e-6)), ‖g‖ the L2 norm of all gradients together."""
    expected = copy.deepcopy(module)
    _, losses = expected(data)
    grads = torch.autograd.grad(losses["loss_ce"], list(expected.parameters()))
    norm = torch.cat([g.reshape(-1) for g in grads]).norm()
    assert norm > 10 * CLIP   # the clip acts
    with torch.no_grad():
        for p, g in zip(expected.parameters(), grads):
            p -= LR * g * min(1.0, CLIP / (float(norm) + 1e-6))
    return expected


def sgd_step(module, scaler_enabled=False, clip=CLIP):
    optimizer = torch.optim.SGD(module.parameters(), lr=LR)
    scaler = torch.amp.GradScaler("cpu", enabled=scaler_enabled)
    return SgdStep(module, optimizer, scaler, Precision("cpu"), clip_grad_norm=clip)


def test_the_sgd_step_clips_the_gradients_global_norm_before_stepping():
    torch.manual_seed(0)
    module, data = Linear(), batch()
    expected = clipped_sgd_by_hand(module, data)
    sgd_step(module)(data, 1)
    for p, q in zip(module.parameters(), expected.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_under_the_fp16_scaler_the_true_gradients_are_clipped_not_the_scaled_ones():
    """The scale (2^16) is a power of two: unscaled first, the clipped update is the unscaled
    run's bit for bit; clipped while scaled it would be 2^16 times too small."""
    torch.manual_seed(0)
    plain, data = Linear(), batch()
    scaled = copy.deepcopy(plain)
    sgd_step(plain)(data, 1)
    step = sgd_step(scaled, scaler_enabled=True)
    step(data, 1)
    assert step.scaler.get_scale() == 2.0 ** 16
    for p, q in zip(plain.parameters(), scaled.parameters()):
        assert torch.equal(p, q)


def run_config(val=(), **solver):
    cfg = Config(solver=SolverConfig(epochs=1, lr=LR, momentum=0.0, weight_decay=0.0, milestones=[],
                                     **solver))
    cfg = replace_section(replace_section(cfg, "runtime", device="cpu"), "log", print_freq=100)
    loaders = SimpleNamespace(train=[batch()], val=list(val), set_epoch=lambda epoch: None)
    return cfg, loaders


def test_solver_clip_grad_norm_reaches_the_step_of_a_run_and_is_off_by_default():
    torch.manual_seed(0)
    module = Linear()
    expected = clipped_sgd_by_hand(module, batch())
    unclipped = copy.deepcopy(module)
    cfg, loaders = run_config(clip_grad_norm=CLIP)
    build_trainer(cfg, module, loaders, torch.device("cpu"), RunLogger(None)).train_epoch(1)
    for p, q in zip(module.parameters(), expected.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    cfg, loaders = run_config()
    assert cfg.solver.clip_grad_norm is None
    build_trainer(cfg, unclipped, loaders, torch.device("cpu"), RunLogger(None)).train_epoch(1)
    moved = (unclipped.head.weight - expected.head.weight).abs().max()
    assert moved > 100 * CLIP * LR   # unclipped, the step is far larger


def test_a_non_finite_validation_stops_a_run_unless_the_smoke_run_turned_the_guard_off():
    torch.manual_seed(0)
    cfg, loaders = run_config(val=[batch()])
    guarded = build_trainer(cfg, Linear(nan_on_eval=True), loaders, torch.device("cpu"),
                            RunLogger(None))
    with pytest.raises(UserError, match="the weights or the validation became non-finite at epoch 1"):
        guarded._validate(1)
    smoke = build_trainer(cfg, Linear(nan_on_eval=True), loaders, torch.device("cpu"),
                          RunLogger(None), guard_validation=False)
    assert smoke._validate(1)["loss"] != smoke._validate(1)["loss"]   # NaN, and no stop
