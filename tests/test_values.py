"""Every config value is checked before anything runs, numbers are read as researchers write them,
errors blame the place a value came from, and overrides stand anywhere on a command line."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from launch.build import load_run_config
from utils.cli import split_overrides
from utils.config import load_config
from utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]
KD = "configs/cifar100/kd/res32x4_res8x4.yaml"
CLI = "the command-line overrides"


def error_of(path, overrides=()):
    with pytest.raises(UserError) as err:
        load_run_config(str(path), list(overrides))
    message = str(err.value)
    assert "\n" not in message
    return message


# One bad value per rule: (override, the message it must give).
BAD_VALUES = [
    ("solver.lr=-0.1", "'solver.lr' in {cli} must be > 0, got -0.1"),
    ("solver.lr=0", "'solver.lr' in {cli} must be > 0, got 0.0"),
    ("solver.epochs=0", "'solver.epochs' in {cli} must be >= 1, got 0"),
    ("solver.momentum=1", "'solver.momentum' in {cli} must be in [0, 1), got 1.0"),
    ("solver.momentum=-0.9", "'solver.momentum' in {cli} must be in [0, 1), got -0.9"),
    ("solver.weight_decay=-5e-4", "'solver.weight_decay' in {cli} must be >= 0, got -0.0005"),
    ("solver.gamma=0", "'solver.gamma' in {cli} must be > 0, got 0.0"),
    ("solver.gamma=.inf", "'solver.gamma' in {cli} must be a finite number, got inf"),
    ("solver.lr=.nan", "'solver.lr' in {cli} must be a finite number, got nan"),
    ("solver.warmup_epochs=-1", "'solver.warmup_epochs' in {cli} must be >= 0, got -1"),
    ("solver.warmup_epochs=241", "'solver.warmup_epochs' in {cli} must be at most solver.epochs=240, got 241"),
    ("solver.milestones=[150,150]", "'solver.milestones' in {cli} must be increasing, got [150, 150]"),
    ("solver.milestones=[0,10]", "'solver.milestones' in {cli} must be >= 1, got [0, 10]"),
    ("solver.milestones=[10,300]", "'solver.milestones' in {cli} must lie within the 240 epochs"),
    ("data.batch_size=0", "'data.batch_size' in {cli} must be >= 1, got 0"),
    ("data.val_batch_size=0", "'data.val_batch_size' in {cli} must be >= 1, got 0"),
    ("data.num_workers=-1", "'data.num_workers' in {cli} must be >= 0, got -1"),
    ("data.train_size=0", "'data.train_size' in {cli} must be >= 1, got 0"),
    ("data.image_size=0", "'data.image_size' in {cli} must be >= 1, got 0"),
    ("data.std=[0.2,0,0.2]", "'data.std' in {cli} must be in (0, 1], got [0.2, 0.0, 0.2]"),
    ("experiment.seed=-1", "'experiment.seed' in {cli} must be >= 0, got -1"),
    ("teacher.min_top1=101", "'teacher.min_top1' in {cli} must be in [0, 100], got 101.0"),
    ("teacher.train_epochs=-2", "'teacher.train_epochs' in {cli} must be >= 0, got -2"),
    ("log.print_freq=0", "'log.print_freq' in {cli} must be >= 1, got 0"),
    ("runtime.device=gpu", "'runtime.device' in {cli} must be auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
    ("distiller.temperature=0", "'distiller.temperature' in {cli} must be > 0, got 0.0"),
    ("distiller.kd_weight=-1", "'distiller.kd_weight' in {cli} must be >= 0, got -1.0"),
    ("distiller.ce_weight=.nan", "'distiller.ce_weight' in {cli} must be a finite number, got nan"),
    ("distiller.kd_weight=abc", "'distiller.kd_weight' in {cli} must be float, got 'abc'"),
    ("distiller.logit_standardization=2", "'distiller.logit_standardization' in {cli} must be true or false, got 2"),
]


@pytest.mark.parametrize("override, message", BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_bad_value_is_one_line_naming_the_command_line(override, message):
    assert error_of(REPO / KD, [override]).startswith(message.format(cli=CLI))


@pytest.mark.parametrize("config, override, message", [
    ("configs/cifar100/dkd/res32x4_res8x4.yaml", "distiller.warmup=0", "'distiller.warmup' in {cli} must be >= 1"),
    ("configs/cifar100/dkd/res32x4_res8x4.yaml", "distiller.beta=-8", "'distiller.beta' in {cli} must be >= 0"),
    ("configs/cifar100/dist/res32x4_res8x4.yaml", "distiller.tau=-4", "'distiller.tau' in {cli} must be > 0"),
    ("configs/cifar100/dist/res32x4_res8x4.yaml", "distiller.gamma=-1", "'distiller.gamma' in {cli} must be >= 0"),
    ("configs/cifar100/fitnet/res32x4_res8x4.yaml", "distiller.feat_weight=-100", "'distiller.feat_weight' in {cli} must be >= 0"),
    ("configs/cifar100/fitnet/res32x4_res8x4.yaml", "distiller.hint_layer=1.5", "'distiller.hint_layer' in {cli} must be int"),
    ("configs/cifar100/srrl/res34_res10.yaml", "distiller.sr_weight=-1", "'distiller.sr_weight' in {cli} must be >= 0"),
    ("configs/cifar100/one/res110.yaml", "distiller.rampup=-80", "'distiller.rampup' in {cli} must be >= 0"),
    ("configs/cifar100/ctkd/res32x4_res8x4.yaml", "distiller.t_start=0", "'distiller.t_start' in {cli} must be > 0"),
    ("configs/cifar100/ctkd/res32x4_res8x4.yaml", "distiller.curriculum_epochs=0",
     "'distiller.curriculum_epochs' in {cli} must be >= 1"),
    ("configs/cifar100/mlkd/res32x4_res8x4.yaml", "distiller.temperature=0", "'distiller.temperature' in {cli} must be > 0"),
])
def test_every_method_checks_its_own_values(config, override, message):
    assert error_of(REPO / config, [override]).startswith(message.format(cli=CLI))


def test_a_bad_value_in_a_file_names_that_file_and_a_default_is_never_blamed_on_a_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("teacher: {arch: resnet20}\ndistiller: {name: kd, temperature: -4}\n"
                    "data: {batch_size: 0}\n")
    assert error_of(path).startswith(f"'data.batch_size' in {path} must be >= 1, got 0")
    assert error_of(path, ["data.batch_size=8"]).startswith(f"'distiller.temperature' in {path} must be > 0")
    # the typo in the file is blamed on the file, the one on the command line on the command line
    path.write_text("teacher: {arch: resnet20}\ndistiller: {name: kd, temprature: 4}\n")
    assert error_of(path).startswith(f"unknown key 'distiller.temprature' in {path}")
    path.write_text("teacher: {arch: resnet20}\ndistiller: {name: kd}\n")
    assert error_of(path, ["distiller.temprature=2"]).startswith(f"unknown key 'distiller.temprature' in {CLI}")
    # milestones from the schema's defaults beyond the file's epochs: the defaults are named
    path.write_text("solver: {epochs: 5}\n")
    assert "'solver.milestones' in the defaults (utils/config.py) must lie within the 5 epochs " \
           f"(solver.epochs in {path})" in error_of(path)


def test_numbers_are_read_as_researchers_write_them_in_files(tmp_path):
    path = tmp_path / "natural.yaml"
    path.write_text("teacher: {arch: resnet20}\n"
                    "distiller: {name: kd, temperature: 4e0, kd_weight: 9E-1, ce_weight: .1}\n"
                    "data: {train_size: 1_000, val_size: 1e3, mean: [5e-1, .5, 0.5]}\n"
                    "solver: {lr: 1E-3, weight_decay: 5e-4, momentum: .9, epochs: 2e2, milestones: [1e2, 150]}\n")
    cfg = load_run_config(str(path))
    assert cfg.solver.lr == 1e-3 and cfg.solver.weight_decay == 5e-4 and cfg.solver.momentum == 0.9
    assert cfg.solver.epochs == 200 and cfg.solver.milestones == [100, 150]
    assert type(cfg.solver.epochs) is int and type(cfg.solver.lr) is float
    assert cfg.data.train_size == 1000 and cfg.data.val_size == 1000 and cfg.data.mean == [0.5] * 3
    assert (cfg.distiller["temperature"], cfg.distiller["kd_weight"], cfg.distiller["ce_weight"]) == (4.0, 0.9, 0.1)


def test_numbers_are_read_as_researchers_write_them_on_the_command_line():
    cfg = load_run_config(str(REPO / KD), ["solver.weight_decay=5e-4", "solver.lr=1E-3", "solver.momentum=.1",
                                           "data.train_size=1_000", "distiller.temperature=4e0",
                                           "solver.epochs=3e2", "distiller.kd_weight=+9e-1"])
    assert (cfg.solver.weight_decay, cfg.solver.lr, cfg.solver.momentum) == (5e-4, 1e-3, 0.1)
    assert cfg.data.train_size == 1000 and cfg.solver.epochs == 300
    assert cfg.distiller["temperature"] == 4.0 and cfg.distiller["kd_weight"] == 0.9


@pytest.mark.parametrize("override, message", [
    ("solver.epochs=2.5", "'solver.epochs' in {cli} must be int, got 2.5"),
    ("solver.lr=1e-3x", "'solver.lr' in {cli} must be float, got '1e-3x'"),
    ("solver.lr=nan", "'solver.lr' in {cli} must be float, got 'nan'"),
    ("data.batch_size=true", "'data.batch_size' in {cli} must be int, got True"),
])
def test_only_real_number_spellings_are_converted(override, message):
    assert error_of(REPO / KD, [override]).startswith(message.format(cli=CLI))


def test_removing_a_key_on_the_command_line_with_null(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {dataset: synthetic, num_classes: 10}\n")
    assert load_config(str(path), ["data.num_classes=null"]).data.num_classes is None


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_bad_value_on_the_real_command_line_is_one_line_and_exit_2():
    out = run_cli("train.py", "--config", KD, "solver.lr=-0.1")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["error: 'solver.lr' in the command-line overrides must be > 0, got -0.1"]


def test_overrides_before_between_and_after_flags_on_train_py(capsys):
    import train   # in this process: the real command line's wiring is tested in test_config.py
    assert train.main(["solver.lr=0.02", "--config", str(REPO / KD), "solver.weight_decay=5e-4", "--resume", "auto",
                       "data.root=x", "--print-config", "solver.epochs=220"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["solver"]["lr"] == 0.02 and printed["solver"]["weight_decay"] == 5e-4
    assert printed["data"]["root"] == "x" and printed["solver"]["epochs"] == 220


def test_overrides_anywhere_in_every_cli_parser():
    import bench
    import eval as eval_cli
    import train
    from tools import reproduce
    args = train.parse_args(["--config", "C", "--smoke", "a.b=1", "--resume", "auto", "c.d=2"])
    assert args.overrides == ["a.b=1", "c.d=2"] and args.smoke and args.resume == "auto"
    args = eval_cli.parse_args(["a.b=1", "--checkpoint", "x.pth", "--json", "c.d=[1, 2]"])
    assert args.overrides == ["a.b=1", "c.d=[1, 2]"] and args.json and args.checkpoint == "x.pth"
    args = bench.parse_args(["--config", "C", "a.b=1", "--compare", "r.c=false", "r.c=true", "--json", "d.e=3"])
    assert args.compare == ["r.c=false", "r.c=true"] and args.overrides == ["a.b=1", "d.e=3"]
    args = reproduce.parse_args(["tbl", "--seeds", "0", "1", "a.b=1", "--dry-run", "c.d=2"])
    assert args.table == "tbl" and args.seeds == [0, 1] and args.overrides == ["a.b=1", "c.d=2"]


def test_split_overrides_leaves_flag_values_and_everything_after_double_dash():
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    parser.add_argument("--many", nargs="+")
    rest, overrides = split_overrides(parser, ["--out", "x.y=z", "--many", "1", "a.b=2", "--", "c.d=3"])
    assert rest == ["--out", "x.y=z", "--many", "1", "--", "c.d=3"] and overrides == ["a.b=2"]
    rest, overrides = split_overrides(parser, ["--out=a.b=c", "notanoverride=1", "k.v="])
    assert rest == ["--out=a.b=c", "notanoverride=1"] and overrides == ["k.v="]


def test_imagefolder_over_a_config_that_fixes_num_classes_says_how_to_remove_it(tmp_path):
    from PIL import Image
    import datasets
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / split / name / "a.png")
    config = tmp_path / "c.yaml"
    config.write_text("data: {dataset: synthetic, num_classes: 10, num_workers: 0, image_size: 8}\n")
    switched = ["data.dataset=imagefolder", f"data.root={tmp_path}"]
    with pytest.raises(UserError, match=r"data.num_classes is 10 but .* has 2 classes: remove it "
                                        r"\(on the command line: data.num_classes=null\) or set it to 2"):
        datasets.build_loaders(load_config(str(config), switched).data, seed=0)
    cfg = load_config(str(config), switched + ["data.num_classes=null"])
    assert datasets.build_loaders(cfg.data, seed=0).num_classes == 2
