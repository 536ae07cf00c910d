"""Resume, for every registered method: a run stopped after epoch 1 and resumed equals the
uninterrupted run, bit for bit (CPU, deterministic data order and augmentation), including a
method's own learnable modules (FitNet's regressor, SRRL's connector, VID's regressors, OFD's
connectors, ReviewKD's ABFs, ONE's branches and gate) and state (CRD's memory bank and the count of
its negatives' draws).

The three runs of a method (uninterrupted; stopped after epoch 1; resumed to epoch 2) run in this
process, through what ``train.py`` calls (``load_run_config`` + ``run_training``), not as three
``python train.py`` subprocesses: interpreter and torch start-up were most of the test's time.
The CLI path (``train.py --resume auto`` as a subprocess) is covered by
tests/test_training.py::test_resume_after_kill_matches_uninterrupted_run and
tests/test_distributed.py::test_ddp_resume_equals_uninterrupted_and_resumes_in_one_process.
Before every run the global random generators are scrambled, so a run that did not seed itself
cannot pass by reusing the previous run's state. (Skipping the restore of the checkpoint's
generator states goes unnoticed here, as it did with subprocesses: the data order and the
augmentation are seeded by (seed, epoch, sample) and leave the global generators as they were, and
no built-in method draws from them while training. A user's method may: ``GlobalDraws`` below
draws from torch's, Python's and NumPy's global generators at every step, and its resumed run
equals the uninterrupted one only if the checkpoint's generator states are restored.)"""
import itertools
import random
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distillers.base import Distiller
from engine.rng import get_rng_state, set_rng_state
from tests.methods import METHODS, every_method, needs_teacher
from tests.runs import load, write_config
from utils.batch import Batch

TEACHER = {"arch": "resnet20", "allow_random": True}


def default_case(name: str) -> dict:
    """resnet8 at the method's defaults, with a random resnet20 teacher where it needs one."""
    return dict(student="resnet8", distiller={"name": name},
                **({"teacher": TEACHER} if needs_teacher(name) else {}))


CASES = every_method({
    "dkd": dict(default_case("dkd"), distiller={"name": "dkd", "warmup": 2}),   # warm-up inside the run
    "one": dict(student="one_resnet32", distiller={"name": "one"}),   # its multi-branch student
    "crd": dict(default_case("crd"), distiller={"name": "crd", "nce_k": 8}),   # 16 training images
    # the reversal's curriculum still rising across the resume
    "ctkd": dict(default_case("ctkd"), distiller={"name": "ctkd", "curriculum_epochs": 2}),
}, default_case)
OWN_MODULES = ("fitnet", "srrl", "vid", "ofd", "reviewkd", "crd", "ctkd")   # learnable modules beside the student
# 16 training images in batches of 8: 2 optimizer steps an epoch (the least that still resumes a
# schedule and a data order mid-way); one 8-image val batch (the teacher check and each epoch's
# evaluation); no TensorBoard writer
SMALL = {"data": {"train_size": 16, "batch_size": 8, "val_size": 8, "val_batch_size": 8},
         "log": {"tensorboard": False}}
RUNS = itertools.count()


def scramble_global_rngs(seed: int) -> None:
    """Move torch's, NumPy's and Python's global generators to a state no run starts from (the
    configs seed 0), a different one before each run."""
    torch.manual_seed(1000 + seed)
    np.random.seed(1000 + seed)
    random.seed(1000 + seed)


def train(config: Path, *overrides: str, resume: Optional[str] = None) -> None:
    """What ``python train.py --config config [overrides] [--resume resume]`` does, in this process."""
    from launch.build import load_run_config
    from launch.run import run_training
    scramble_global_rngs(next(RUNS))
    cfg = load_run_config(str(config), list(overrides))
    run_training(cfg, resume=resume, argv=["train.py", "--config", str(config), *overrides])
    assert not torch.distributed.is_initialized(), "run_training left a process group behind"


@pytest.fixture(autouse=True)
def restore_global_state():
    """The in-process runs seed the global generators and set cuDNN flags: give the tests that
    share this process what they had."""
    rng, benchmark = get_rng_state(), torch.backends.cudnn.benchmark
    deterministic = torch.are_deterministic_algorithms_enabled()
    yield
    set_rng_state(rng)
    torch.backends.cudnn.benchmark = benchmark
    torch.use_deterministic_algorithms(deterministic)


@pytest.mark.parametrize("method", METHODS)
def test_resumed_run_equals_uninterrupted_run(method, tmp_path):
    spec = CASES[method]
    train(write_config(tmp_path, "full", epochs=2, extra=SMALL, **spec))
    part = write_config(tmp_path, "part", epochs=2, extra=SMALL, **spec)
    train(part, "solver.epochs=1", "solver.milestones=[]")   # stops at the epoch boundary
    first = load(tmp_path / "runs/part/last.pth")
    assert (first["epoch"], first["step"]) == (1, 2)   # 2 optimizer steps an epoch
    train(part, resume="auto")
    a, b = load(tmp_path / "runs/full/last.pth"), load(tmp_path / "runs/part/last.pth")
    assert a["epoch"] == b["epoch"] == 2
    for section in ("model", "distiller"):
        assert a[section].keys() == b[section].keys()
        for key in a[section]:
            assert torch.equal(a[section][key], b[section][key]), f"{section}.{key}"
    if method in OWN_MODULES:
        assert a["distiller"], "the method's learnable modules are checkpointed"


class GlobalDraws(Distiller):
    """A method of a user's own that draws from the global generators at every step: dropout on
    the logits (torch), and a loss scale from Python's and NumPy's generators."""

    needs_teacher = False

    def forward_train(self, batch: Batch, epoch: int):
        logits = self.student(batch.images)
        scale = (1.0 + random.random()) * (1.0 + float(np.random.rand()))
        dropped = F.dropout(logits, p=0.5, training=True)
        return logits, {"loss_ce": scale * F.cross_entropy(dropped, batch.targets)}


def test_a_method_drawing_from_the_global_generators_resumes_bit_exactly(tmp_path):
    """Fails if resume skips restoring the torch, Python or NumPy generator state."""
    spec = dict(student="resnet8", distiller={"name": f"{__name__}:GlobalDraws"})
    train(write_config(tmp_path, "full", epochs=2, extra=SMALL, **spec))
    part = write_config(tmp_path, "part", epochs=2, extra=SMALL, **spec)
    train(part, "solver.epochs=1", "solver.milestones=[]")
    train(part, resume="auto")
    a, b = load(tmp_path / "runs/full/last.pth"), load(tmp_path / "runs/part/last.pth")
    assert a["epoch"] == b["epoch"] == 2
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
