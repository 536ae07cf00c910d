"""Exact resume across a warm-up and a learning-rate milestone, and of the RNG states.

The run: 4 epochs of 4 steps, linear warm-up over epochs 1-2, milestone 3 (epoch 4 at lr·γ).
It is killed in the middle of epoch 2 (inside the warm-up, before the milestone), so the
resumed process must finish the warm-up and take the decay from the restored scheduler; the
run that was never interrupted is the reference, bit for bit: weights, optimizer momenta,
every epoch's logged rate, loss and accuracy, and the RNG states in the last checkpoint.
"""
import random
import signal

import numpy as np
import pytest
import torch

from engine.rng import get_rng_state, set_rng_state
from tests.runs import load, read_metrics, run_script, run_until_killed, write_config

LR, GAMMA, WARMUP_EPOCHS, MILESTONE, EPOCHS, STEPS = 0.05, 0.1, 2, 3, 4, 4
EXTRA = {"data": {"train_size": 32 * STEPS, "val_size": 64},
         "solver": {"lr": LR, "gamma": GAMMA, "milestones": [MILESTONE],
                    "warmup_epochs": WARMUP_EPOCHS},
         "log": {"print_freq": 2, "tensorboard": False}}


def first_step_rate(epoch: int) -> float:
    """The recipe's rate at the first step of ``epoch`` (1-based): warm-up k/8, then decay."""
    step = (epoch - 1) * STEPS
    warmup = min(1.0, (step + 1) / (WARMUP_EPOCHS * STEPS))
    return LR * GAMMA ** sum(epoch > m for m in (MILESTONE,)) * warmup


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("resume_schedule")
    full = write_config(directory, "full", epochs=EPOCHS, extra=EXTRA)
    out = run_script("train.py", "--config", str(full))
    assert out.returncode == 0, out.stderr
    killed = write_config(directory, "killed", epochs=EPOCHS, extra=EXTRA)
    assert run_until_killed(killed, "epoch 2 [2/") == -signal.SIGKILL
    assert load(directory / "runs/killed/last.pth")["epoch"] == 1
    out = run_script("train.py", "--config", str(killed), "--resume", "auto")
    assert out.returncode == 0, out.stderr
    return {name: (load(directory / "runs" / name / "last.pth"),
                   read_metrics(directory / "runs" / name)) for name in ("full", "killed")}


def test_the_run_crosses_the_warmup_and_the_milestone(runs):
    """The logged rate of each epoch is the recipe's: the resume happens where it matters."""
    _, metrics = runs["full"]
    rates = [m["train/lr"] for m in metrics]
    assert rates == pytest.approx([first_step_rate(e) for e in range(1, EPOCHS + 1)], rel=1e-12)
    assert rates[0] < rates[1] < rates[2] and rates[3] == pytest.approx(GAMMA * rates[2], rel=1e-12)


def test_resume_across_warmup_and_milestone_equals_the_uninterrupted_run(runs):
    (a, a_metrics), (b, b_metrics) = runs["full"], runs["killed"]
    assert a["epoch"] == b["epoch"] == EPOCHS and a["step"] == b["step"] == EPOCHS * STEPS
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    momenta_a, momenta_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert momenta_a.keys() == momenta_b.keys()
    for index in momenta_a:
        assert torch.equal(momenta_a[index]["momentum_buffer"], momenta_b[index]["momentum_buffer"])
    assert a["scheduler"] == b["scheduler"]
    assert [m["epoch"] for m in b_metrics] == list(range(1, EPOCHS + 1))
    for logged_a, logged_b in zip(a_metrics, b_metrics):
        for key in ("train/lr", "train/loss", "val/top1", "val/loss"):
            assert logged_a[key] == logged_b[key], (logged_a["epoch"], key)


def assert_same_rng_states(a, b):
    assert a.keys() == b.keys()
    assert torch.equal(a["torch"], b["torch"]), "torch"
    assert a["python"] == b["python"], "python"
    assert a["numpy"].keys() == b["numpy"].keys()
    for key, value in a["numpy"].items():
        same = torch.equal(value, b["numpy"][key]) if torch.is_tensor(value) else value == b["numpy"][key]
        assert same, f"numpy {key}"
    if "cuda" in a:
        assert len(a["cuda"]) == len(b["cuda"])
        assert all(torch.equal(x, y) for x, y in zip(a["cuda"], b["cuda"])), "cuda"


def test_rng_states_after_resume_equal_the_uninterrupted_runs(runs):
    """The generators every later draw comes from (Python, NumPy, torch, CUDA when present)
    are where the uninterrupted run left them (the val loader draws from torch's each epoch)."""
    (a, _), (b, _) = runs["full"], runs["killed"]
    assert_same_rng_states(a["rng"], b["rng"])


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    """What a checkpoint stores restores every generator: the draws after a restore repeat the
    draws after the save, for Python, NumPy, torch and CUDA when present."""
    def draws():
        values = [random.random(), float(np.random.rand()), torch.rand(1).item()]
        if torch.cuda.is_available():
            values.append(torch.rand(1, device="cuda").item())
        return values

    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save({"rng": get_rng_state()}, tmp_path / "state.pth")
    expected = draws()
    draws()   # move every generator on
    set_rng_state(torch.load(tmp_path / "state.pth", weights_only=True)["rng"])
    assert draws() == expected
