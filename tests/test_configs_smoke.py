"""Every shipped config loads and validates; one config of each distinct build (dataset, method,
teacher, student, optimizer) builds and takes a training step; one config of each method
directory trains a whole smoke epoch, those configs together covering every model family.

Smoke mode lets a config without its teacher checkpoint run with a random teacher, so this
catches a broken pair, hint layer, connector or branch split in any shipped config before a
user spends GPU hours on it. The proof is kept and the waste dropped: one step of 2 images per
config (seconds for all of them), and the full run (a few steps, evaluation, checkpoint, logs)
once per method, the chosen configs covering every model family, rather than once per config. Both assert what a broken run would not show: finite
losses and every student parameter moved by the step.
"""
import functools
import json
import math
from collections import Counter
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from engine.trainer import Trainer
from launch.build import build_run, load_run_config
from launch.run import run_training
from tests.runs import REPO
from utils.logger import RunLogger

ALL = sorted(str(p.relative_to(REPO)) for d in ("configs/cifar100", "configs/imagenet")
             for p in (REPO / d).rglob("*.yaml"))
ONE_STEP = ["data.train_size=2", "data.val_size=2", "data.batch_size=2", "data.val_batch_size=2",
            "data.num_classes=100", "runtime.device=cpu", "log.tensorboard=false"]
FAMILIES = (("one_", "one"), ("resnet", "resnet"), ("ResNet", "resnet_v2"), ("wrn", "wrn"),
            ("vgg", "vgg"), ("MobileNet", "mobilenet"), ("Shuffle", "shufflenet"))


@pytest.fixture(autouse=True)
def cheap_calibration(monkeypatch):
    """A random teacher's BatchNorm statistics from one batch of 4 (not 4 of 16): the logits'
    scale is what a smoke step needs, and calibrating deep teachers was most of this file's time."""
    import launch.build
    from models.calibrate import recalibrate_batchnorm
    monkeypatch.setattr(launch.build.models, "recalibrate_batchnorm",
                        functools.partial(recalibrate_batchnorm, batches=1, batch_size=4))


def smoke_config(path: str, extra=()):
    # ImageNet configs at 72 px: still the 224-px model family (> 64 px), a fraction of the cost
    size = ["data.image_size=72", "teacher.checkpoint=absent.pth"] if "imagenet" in path else []
    return load_run_config(str(REPO / path), ONE_STEP + size + list(extra), smoke=True)


def family(arch: str) -> str:
    return next(name for prefix, name in FAMILIES if arch.startswith(prefix))


@functools.lru_cache(maxsize=None)
def pair_of(path: str):
    """(dataset, method directory: the method and its switches, student family)."""
    dataset, method = Path(path).parts[1:3]
    return dataset, method, family(smoke_config(path).student.arch)


CHEAPEST_FIRST = ("resnet", "wrn", "shufflenet", "vgg", "mobilenet", "one", "resnet_v2")


def one_config_per_method():
    """One config per (dataset, method directory) for the whole smoke epoch, chosen so that
    together they cover every model family: each method takes, of its configs, one of a family
    not yet covered if it has one, else one of the cheapest family (``CHEAPEST_FIRST``). Every config still builds and steps (the test above); the epoch's
    evaluation, checkpoint and logs do not depend on the pair, so one per method proves them
    (once per (method, family) was 98 runs)."""
    by_method: Dict[tuple, List[str]] = {}
    for path in ALL:
        dataset, method, _ = pair_of(path)
        by_method.setdefault((dataset, method), []).append(path)
    covered: Counter = Counter()
    chosen = []
    for key in sorted(by_method):
        path = min(by_method[key], key=lambda p: (covered[pair_of(p)[2]] > 0,
                                                  CHEAPEST_FIRST.index(pair_of(p)[2]), p))
        covered[pair_of(path)[2]] += 1
        chosen.append(path)
    return chosen


def build_key(path: str) -> tuple:
    """What decides whether a config builds and steps: the networks, the method and the
    optimizer. Configs that differ only in numbers or switches (a Z-score variant of a pair, the
    same pair in two tables) build the same modules; their values are checked when loaded."""
    cfg = smoke_config(path)
    return (Path(path).parts[1], cfg.distiller["name"], cfg.teacher.arch, cfg.student.arch,
            cfg.solver.optimizer)


def one_config_per_build() -> List[str]:
    chosen: Dict[tuple, str] = {}
    for path in ALL:
        chosen.setdefault(build_key(path), path)
    return sorted(chosen.values())


@pytest.mark.parametrize("path", ALL)
def test_config_loads_and_validates(path):
    cfg = smoke_config(path)
    assert cfg.student.arch and cfg.distiller["name"]


@pytest.mark.parametrize("path", one_config_per_build())
def test_config_builds_and_one_step_trains(path):
    torch.manual_seed(0)
    cfg = smoke_config(path)
    loaders, distiller = build_run(cfg)
    trainer = Trainer(distiller, loaders, cfg, torch.device("cpu"), RunLogger(None))
    before = {k: v.detach().clone() for k, v in distiller.student.named_parameters()}
    stats = trainer.train_epoch(1)
    assert trainer.state.step == 1
    losses = {k: v for k, v in stats.items() if k.startswith("loss")}
    assert losses and all(math.isfinite(v) for v in losses.values()), losses
    for name, value in distiller.student.named_parameters():
        assert torch.isfinite(value).all(), name
        assert not torch.equal(value, before[name]), f"{name} did not move in the step"


@pytest.mark.slow
@pytest.mark.parametrize("path", one_config_per_method())
def test_one_smoke_epoch_per_method(path, tmp_path):
    cfg = smoke_config(path, [f"experiment.output_dir={tmp_path}", "data.train_size=6", "data.val_size=4"])
    summary = run_training(cfg)
    assert summary["best_epoch"] == 1 and 0.0 <= summary["best_top1"] <= 100.0
    with open(Path(cfg.run_dir) / "metrics.jsonl") as f:
        (epoch,) = [json.loads(line) for line in f]
    # training losses finite; validation ran (its loss is not asserted: after 3 steps a deep
    # network's BatchNorm running statistics are still mostly their initial values)
    numbers = {k: v for k, v in epoch.items() if k.startswith(("train/loss", "train/weighted/"))}
    assert len(numbers) >= 2 and all(math.isfinite(v) for v in numbers.values()), numbers
    assert 0.0 <= epoch["val/top1"] <= 100.0 and "val/loss" in epoch
    saved = torch.load(Path(cfg.run_dir) / "last.pth", map_location="cpu", weights_only=True)
    assert saved["epoch"] == 1 and saved["step"] == 3
    assert all(torch.isfinite(t).all() for t in saved["model"].values() if t.is_floating_point())


def test_the_smoke_epochs_cover_every_method_and_family():
    pairs = {pair_of(path) for path in one_config_per_method()}
    methods = {Path(p).parts[2] for p in ALL}
    assert {m for _, m, _ in pairs} == methods
    assert {f for _, _, f in pairs} == {name for _, name in FAMILIES}
