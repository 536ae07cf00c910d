"""Every shipped config validates and trains for one epoch (smoke mode, one process, tiny sizes).

Smoke mode lets a config without its teacher checkpoint run with a random teacher, so this
catches a broken pair, hint layer, connector or branch split in any shipped config before a
user spends GPU hours on it. Sizes are tiny (two training steps) to keep CI fast.
"""
from pathlib import Path

import pytest

from launch.build import load_run_config
from launch.run import run_training
from tests.runs import REPO

ALL = sorted(str(p.relative_to(REPO)) for d in ("configs/cifar100", "configs/imagenet")
             for p in (REPO / d).rglob("*.yaml"))
TINY = ["data.train_size=32", "data.val_size=16", "data.batch_size=16", "data.val_batch_size=16",
        "data.num_classes=100", "runtime.device=cpu", "log.tensorboard=false"]


def test_every_config_loads_and_validates():
    for path in ALL:
        load_run_config(str(REPO / path))


@pytest.mark.parametrize("path", ALL)
def test_one_epoch_smoke_run(path, tmp_path):
    extra = ["data.image_size=72", "teacher.checkpoint=absent.pth"] if "imagenet" in path else []
    cfg = load_run_config(str(REPO / path), TINY + extra + [f"experiment.output_dir={tmp_path}"], smoke=True)
    summary = run_training(cfg)
    assert summary["best_epoch"] == 1 and 0.0 <= summary["best_top1"] <= 100.0
