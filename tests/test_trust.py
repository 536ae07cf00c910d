"""Runs a researcher can trust: teacher check, run record, effective loss, determinism, own data."""
import hashlib
import json

import pytest
import torch

from tests.datagen import write_image_folder
from tests.runs import load, read_metrics, run_here, run_script, write_config


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A real resnet8 teacher trained for 2 epochs; returns (checkpoint path, its best val top-1)."""
    directory = tmp_path_factory.mktemp("teacher")
    config = write_config(directory, "teacher", epochs=2)
    out = run_here("train.py", "--config", str(config))
    assert out.returncode == 0, out.stderr
    run_dir = directory / "runs" / "teacher"
    best = max(m["val/top1"] for m in read_metrics(run_dir))
    return run_dir / "best.pth", best


@pytest.fixture(scope="module")
def kd_run(tmp_path_factory, teacher):
    path, _ = teacher
    directory = tmp_path_factory.mktemp("kd")
    config = write_config(directory, "kd", epochs=1, distiller={"name": "kd", "kd_weight": 0.7},
                          teacher={"arch": "resnet8", "checkpoint": str(path)})
    out = run_here("train.py", "--config", str(config))
    assert out.returncode == 0, out.stderr
    return directory / "runs" / "kd", config, out


def test_teacher_check_logs_the_teachers_accuracy_before_training(teacher, kd_run):
    _, teacher_top1 = teacher
    run_dir, _, out = kd_run
    lines = out.stdout.splitlines()
    check = next(i for i, line in enumerate(lines) if line.startswith("teacher resnet8: val top-1"))
    first_epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch 1"))
    assert check < first_epoch
    assert f"val top-1 {teacher_top1:.2f}" in lines[check]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["teacher"]["measured"]["top1"] == teacher_top1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    assert events.Scalars("teacher/top1")[0].value == pytest.approx(teacher_top1)


def test_teacher_below_min_top1_stops_with_one_line(teacher, tmp_path):
    path, teacher_top1 = teacher
    config = write_config(tmp_path, "strict", epochs=1, distiller={"name": "kd"},
                          teacher={"arch": "resnet8", "checkpoint": str(path), "min_top1": teacher_top1 + 0.5})
    out = run_here("train.py", "--config", str(config))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"error: teacher resnet8 scores {teacher_top1:.2f} top-1 on the val set, below "
        f"teacher.min_top1={teacher_top1 + 0.5:g}: stopped before distilling"]


def test_run_record_answers_what_ran(teacher, kd_run):
    path, _ = teacher
    run_dir, _, _ = kd_run
    record = json.loads((run_dir / "run.json").read_text())
    for key in ("config", "config_hash", "seed", "command", "git", "environment", "world_size",
                "batch_size", "teacher", "dataset", "effective_loss", "summary"):
        assert key in record, key
    for key in ("python", "torch", "torchvision", "cuda", "cudnn", "device_names", "device_count"):
        assert key in record["environment"], key
    assert record["teacher"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["batch_size"] == {"global": 32, "per_process": 32}
    assert set(record["git"]) == {"commit", "dirty", *(["diff"] if record["git"]["dirty"] else [])}
    assert record["summary"]["best_epoch"] == 1 and "last_top1" in record["summary"]
    checkpoint = load(run_dir / "last.pth")
    assert checkpoint["record"]["config_hash"] == record["config_hash"]
    result = json.loads(run_here("eval.py", "--checkpoint", str(run_dir / "last.pth"), "--json").stdout)
    assert result["record"]["teacher"]["sha256"] == record["teacher"]["sha256"]


def test_effective_loss_is_printed_and_follows_the_config(teacher, kd_run, tmp_path):
    path, _ = teacher
    _, _, out = kd_run
    assert "loss = 0.1·CE + 0.7·KD(T=4)" in out.stdout
    config = write_config(tmp_path, "z", epochs=1,
                          distiller={"name": "kd", "logit_standardization": True, "zscore_kd_weight": 5,
                                     "base_temperature": 3},
                          teacher={"arch": "resnet8", "checkpoint": str(path)})
    out = run_here("train.py", "--config", str(config), "solver.epochs=1")
    assert out.returncode == 0, out.stderr
    assert "loss = 0.1·CE + 5·KD(T=3, z-score both sides)" in out.stdout
    assert "1 epochs x 16 steps = 16 optimizer steps" in out.stdout


def test_deterministic_mode_gives_bit_identical_weights(tmp_path):
    weights = []
    for name in ("a", "b"):
        config = write_config(tmp_path, name, epochs=1, extra={"runtime": {"deterministic": True}})
        assert run_script("train.py", "--config", str(config)).returncode == 0
        weights.append(load(tmp_path / "runs" / name / "last.pth")["model"])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    write_image_folder(root, classes=[f"class_{i}" for i in range(7)], per_class=12, size=32, seed=0)
    return root


def test_imagefolder_of_jpegs_trains_and_evaluates(own_data, tmp_path):
    config = write_config(tmp_path, "own", epochs=1, extra={"data": {
        "dataset": "imagefolder", "root": str(own_data), "image_size": 32, "num_classes": None}})
    out = run_here("train.py", "--config", str(config))
    assert out.returncode == 0, out.stderr
    assert load(tmp_path / "runs/own/last.pth")["model"]["fc.weight"].shape[0] == 7
    result = json.loads(run_here("eval.py", "--checkpoint", str(tmp_path / "runs/own/last.pth"),
                                   "--json").stdout)
    assert result["metrics"]["samples"] == 7 * 12


def test_teacher_with_wrong_class_count_fails_with_one_line(own_data, teacher, tmp_path):
    path, _ = teacher                       # trained on 10 classes; the folder has 7
    config = write_config(tmp_path, "mismatch", epochs=1, distiller={"name": "kd"},
                          teacher={"arch": "resnet8", "checkpoint": str(path)},
                          extra={"data": {"dataset": "imagefolder", "root": str(own_data),
                                          "image_size": 32, "num_classes": None}})
    out = run_here("train.py", "--config", str(config))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"error: {path} was trained for 10 classes, the model has 7"]


def test_dkd_with_two_classes_is_a_clear_error(tmp_path, teacher):
    config = write_config(tmp_path, "dkd2", epochs=1, distiller={"name": "dkd"},
                          teacher={"arch": "resnet8", "allow_random": True},
                          extra={"data": {"num_classes": 2}})
    out = run_here("train.py", "--config", str(config))
    assert out.returncode == 2
    assert "DKD needs at least 3 classes" in out.stderr and len(out.stderr.strip().splitlines()) == 1
