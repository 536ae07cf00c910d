"""Config files: inheritance, overrides, validation and the one-line errors users see."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from launch.build import load_run_config
from utils.config import load_config
from utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def tree(tmp_path):
    write(tmp_path / "_base_/a.yaml", "solver: {epochs: 240, lr: 0.05, milestones: [150, 180, 210]}\n"
                                      "data: {batch_size: 64, root: /data}\n")
    write(tmp_path / "_base_/b.yaml", "solver: {lr: 0.01}\nruntime: {amp: bf16}\n")
    return tmp_path


def test_base_inheritance_deep_merges_and_replaces_lists(tree):
    cfg_path = write(tree / "exp/run.yaml", "_base_: [../_base_/a.yaml, ../_base_/b.yaml]\n"
                                            "solver: {milestones: [5]}\n")
    cfg = load_config(str(cfg_path))
    assert cfg.solver.epochs == 240          # from a.yaml
    assert cfg.solver.lr == 0.01             # b.yaml overrides a.yaml
    assert cfg.solver.milestones == [5]      # lists are replaced, not merged
    assert cfg.data.root == "/data" and cfg.runtime.amp == "bf16"
    assert cfg.solver.momentum == 0.9        # schema default


def test_single_base_path_string(tree):
    cfg = load_config(str(write(tree / "r.yaml", "_base_: _base_/a.yaml\n")))
    assert cfg.solver.lr == 0.05


def test_overrides_are_parsed_as_yaml_and_win(tree):
    cfg_path = write(tree / "r.yaml", "_base_: _base_/a.yaml\n")
    cfg = load_config(str(cfg_path), ["solver.lr=0.1", "solver.milestones=[1, 2]",
                                      "runtime.channels_last=true", "experiment.name=x"])
    assert cfg.solver.lr == 0.1 and cfg.solver.milestones == [1, 2]
    assert cfg.runtime.channels_last is True and cfg.experiment.name == "x"


def test_bare_off_on_the_command_line_means_off(tree):
    cfg = load_config(str(write(tree / "r.yaml", "runtime: {amp: bf16}\n")), ["runtime.amp=off", "teacher.cache=off"])
    assert cfg.runtime.amp == "off" and cfg.teacher.cache == "off"


def test_int_is_accepted_where_float_expected(tree):
    cfg = load_config(str(write(tree / "r.yaml", "solver: {lr: 1}\n")))
    assert isinstance(cfg.solver.lr, float)


@pytest.mark.parametrize("text, overrides, message", [
    ("solver: {lrr: 0.1}\n", [], "unknown key 'solver.lrr' in {file}; did you mean 'solver.lr'?"),
    ("soler: {lr: 0.1}\n", [], "unknown key 'soler' in {file}; did you mean 'solver'?"),
    ("solver: {lr: 0.1}\n", ["solver.epochs=ten"], "'solver.epochs' in the command-line overrides must be int, got 'ten'"),
    ("runtime: {amp: fp32}\n", [], "'runtime.amp' in {file} must be one of 'off', 'fp16', 'bf16', got 'fp32'"),
    ("solver: {nesterov: 1}\n", [], "'solver.nesterov' in {file} must be true or false, got 1"),
    ("solver: 3\n", [], "'solver' in {file} must be a section (a mapping)"),
    ("solver: {milestones: [3, 1]}\n", [], "'solver.milestones' in {file} must be increasing, got [3, 1]"),
    ("solver: {lr: 0.1}\n", ["solver.lr"], "override 'solver.lr' must look like key.sub=value"),
    ("solver: {lr: [}\n", [], "invalid YAML in {file}:1"),
])
def test_config_errors_name_key_and_file(tmp_path, text, overrides, message):
    path = write(tmp_path / "x.yaml", text)
    with pytest.raises(UserError) as err:
        load_config(str(path), overrides)
    assert str(err.value).startswith(message.format(file=path))
    assert "\n" not in str(err.value)


def test_unknown_key_in_base_names_the_base_file(tmp_path):
    base = write(tmp_path / "base.yaml", "data: {batch_sise: 3}\n")
    with pytest.raises(UserError, match=f"unknown key 'data.batch_sise' in {base}; did you mean 'data.batch_size'"):
        load_config(str(write(tmp_path / "x.yaml", "_base_: base.yaml\n")))


def test_missing_file_and_base_cycle(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(str(tmp_path / "nope.yaml"))
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(UserError, match="_base_ cycle"):
        load_config(str(tmp_path / "a.yaml"))


def test_distiller_section_is_checked_against_the_method_constructor(tmp_path):
    path = write(tmp_path / "kd.yaml", "teacher: {arch: resnet20}\n"
                                       "distiller: {name: kd, temprature: 4}\n")
    with pytest.raises(UserError, match="unknown key 'distiller.temprature'.*did you mean 'distiller.temperature'"):
        load_run_config(str(path))
    path = write(tmp_path / "kd2.yaml", "teacher: {arch: resnet20}\ndistiller: {name: kdd}\n")
    with pytest.raises(UserError, match="unknown distiller 'kdd'; did you mean 'kd'"):
        load_run_config(str(path))


def test_distiller_defaults_are_filled_in(tmp_path):
    path = write(tmp_path / "kd.yaml", "teacher: {arch: resnet20}\ndistiller: {name: kd, temperature: 3}\n")
    cfg = load_run_config(str(path))
    assert cfg.distiller["temperature"] == 3
    assert cfg.distiller["ce_weight"] == 0.1 and cfg.distiller["kd_weight"] == 0.9


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_print_config_prints_resolved_yaml_and_exits_0():
    out = run_cli("train.py", "--config", "configs/cifar100/kd/res32x4_res8x4.yaml",
                  "solver.lr=0.02", "--print-config")
    assert out.returncode == 0, out.stderr
    printed = yaml.safe_load(out.stdout)
    assert printed["solver"]["lr"] == 0.02 and printed["solver"]["epochs"] == 240
    assert printed["distiller"] == {"name": "kd", "ce_weight": 0.1, "kd_weight": 0.9, "temperature": 4,
                                    **{k: printed["distiller"][k] for k in printed["distiller"]
                                       if k not in ("name", "ce_weight", "kd_weight", "temperature")}}
    assert printed["teacher"]["arch"] == "resnet32x4"


def test_config_typo_on_the_command_line_is_one_line_and_exit_2(capsys):
    import train   # in this process: the real command line's exit code is tested in test_values.py
    assert train.main(["--config", str(REPO / "configs/cifar100/kd/res32x4_res8x4.yaml"), "solver.lrr=0.1"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: unknown key 'solver.lrr' in the command-line overrides; did you mean 'solver.lr'?"]
