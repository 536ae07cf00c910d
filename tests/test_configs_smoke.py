"""Every shipped config validates, and one config per method trains for one epoch (smoke, one process)."""
from pathlib import Path

import pytest

from launch.build import load_run_config
from launch.run import run_training
from tests.runs import REPO

ALL = sorted(str(p.relative_to(REPO)) for d in ("configs/cifar100", "configs/imagenet")
             for p in (REPO / d).rglob("*.yaml"))
TINY = ["data.train_size=64", "data.val_size=32", "data.batch_size=32", "data.val_batch_size=32",
        "data.num_classes=100", "runtime.device=cpu", "log.tensorboard=false"]
SMOKE = ["configs/cifar100/kd/res32x4_res8x4.yaml", "configs/cifar100/kd_zscore/res32x4_res8x4.yaml",
         "configs/cifar100/dkd/res32x4_res8x4.yaml", "configs/cifar100/dkd_zscore/vgg13_vgg8.yaml",
         "configs/cifar100/dist/res32x4_shuv1.yaml", "configs/cifar100/fitnet/res32x4_res8x4.yaml",
         "configs/cifar100/srrl/wrn40_4_wrn16_2.yaml", "configs/cifar100/one/res110.yaml"]


def test_every_config_loads_and_validates():
    for path in ALL:
        load_run_config(str(REPO / path))


@pytest.mark.parametrize("path", SMOKE + ["configs/imagenet/srrl/res34_res18.yaml"])
def test_one_epoch_smoke_run(path, tmp_path):
    extra = ["data.image_size=72", "teacher.checkpoint=absent.pth"] if "imagenet" in path else []
    cfg = load_run_config(str(REPO / path), TINY + extra + [f"experiment.output_dir={tmp_path}"], smoke=True)
    summary = run_training(cfg)
    assert summary["best_epoch"] == 1 and 0.0 <= summary["best_top1"] <= 100.0
