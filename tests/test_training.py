"""Real short runs of train.py and eval.py on learnable generated data (CPU)."""
import json
import signal

import pytest
import torch

from tests.runs import REPO, load, read_metrics, run_here, run_script, run_until_killed, write_config


@pytest.fixture(scope="module")
def vanilla_run(tmp_path_factory):
    """One real 3-epoch vanilla run shared by the tests that inspect its outputs."""
    directory = tmp_path_factory.mktemp("vanilla")
    config = write_config(directory, "vanilla", epochs=3)
    out = run_script("train.py", "--config", str(config))
    assert out.returncode == 0, out.stderr
    return directory / "runs" / "vanilla", config, out


def test_training_run_learns_well_above_chance(vanilla_run):
    run_dir, _, out = vanilla_run
    metrics = read_metrics(run_dir)
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert metrics[-1]["val/top1"] > 50.0            # 10 classes: chance is 10 %
    assert metrics[-1]["train/loss"] < metrics[0]["train/loss"]
    assert "done: best top-1" in out.stdout


def test_run_directory_holds_config_checkpoints_and_record(vanilla_run):
    run_dir, _, _ = vanilla_run
    for name in ("config.yaml", "last.pth", "best.pth", "metrics.jsonl", "run.json"):
        assert (run_dir / name).exists(), name
    ckpt = load(run_dir / "last.pth")
    assert ckpt["epoch"] == 3
    import models
    student = models.build_model("resnet8", num_classes=10)
    student.load_state_dict(ckpt["model"], strict=True)   # the released checkpoints' format


def test_eval_reproduces_logged_top1_exactly(vanilla_run):
    run_dir, _, _ = vanilla_run
    best = load(run_dir / "best.pth")
    logged = {m["epoch"]: m["val/top1"] for m in read_metrics(run_dir)}[best["epoch"]]
    out = run_script("eval.py", "--checkpoint", str(run_dir / "best.pth"), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["metrics"]["top1"] == logged
    text = run_here("eval.py", "--checkpoint", str(run_dir / "best.pth"))
    assert text.stdout.startswith(f"top1={logged:.2f} top5=")


def test_tensorboard_events_hold_the_named_tags(vanilla_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run_dir, _, _ = vanilla_run
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("train/loss", "train/weighted/loss_ce", "train/lr", "train/top1", "train/images_per_s",
                "val/top1", "val/top5", "val/loss"):
        assert tag in tags, tag
    assert [e.step for e in events.Scalars("val/top1")] == [1, 2, 3]


def test_existing_run_is_not_overwritten_without_resume(vanilla_run):
    run_dir, config, _ = vanilla_run
    out = run_here("train.py", "--config", str(config))
    assert out.returncode == 2
    assert "already holds a run" in out.stderr and "--resume auto" in out.stderr


def test_checkpoint_with_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": _Payload()}, path)
    out = run_here("eval.py", "--checkpoint", str(path), "--arch", "resnet8")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert "refusing to load" in out.stderr


class _Payload:
    """Stands for any arbitrary object a malicious checkpoint could unpickle."""


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    full = write_config(tmp_path, "full", epochs=3)
    assert run_script("train.py", "--config", str(full)).returncode == 0
    killed = write_config(tmp_path, "killed", epochs=3)
    assert run_until_killed(killed, "epoch 2 [8/") == -signal.SIGKILL   # in the middle of epoch 2
    assert load(tmp_path / "runs/killed/last.pth")["epoch"] == 1
    out = run_script("train.py", "--config", str(killed), "--resume", "auto")
    assert out.returncode == 0, out.stderr
    a, b = load(tmp_path / "runs/full/last.pth"), load(tmp_path / "runs/killed/last.pth")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert [m["epoch"] for m in read_metrics(tmp_path / "runs/killed")] == [1, 2, 3]


def test_missing_teacher_checkpoint_is_one_line(tmp_path):
    config = write_config(tmp_path, "kd", distiller={"name": "kd"},
                          teacher={"arch": "resnet20", "checkpoint": str(tmp_path / "nope.pth")})
    out = run_here("train.py", "--config", str(config))
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: teacher checkpoint not found: {tmp_path / 'nope.pth'} " \
        "(teacher.checkpoint); download the released teachers or train one with configs/cifar100/vanilla/"


def test_missing_cifar_offline_is_one_line(tmp_path):
    out = run_here("train.py", "--config", str(REPO / "configs/cifar100/vanilla/resnet8x4.yaml"),
                     f"data.root={tmp_path}", f"experiment.output_dir={tmp_path}")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "CIFAR-100" in lines[0] and str(tmp_path) in lines[0]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    # epoch 1 trains normally; from epoch 2 the lr is multiplied by 1e30 and the loss diverges
    config = write_config(tmp_path, "nan", epochs=3, extra={"solver": {"milestones": [1], "gamma": 1e30}})
    out = run_here("train.py", "--config", str(config))
    assert out.returncode == 2
    assert "loss became" in out.stderr and "epoch 2" in out.stderr
    assert f"the last good checkpoint is {tmp_path / 'runs/nan/last.pth'} (epoch 1)" in out.stderr
    kept = load(tmp_path / "runs/nan/last.pth")
    assert kept["epoch"] == 1 and all(torch.isfinite(v).all() for v in kept["model"].values()
                                      if v.is_floating_point())


def test_eval_of_a_one_checkpoint_reports_every_branch_and_the_ensemble(tmp_path, capsys):
    """eval.py on a ONE run: branch 1 is the headline (as training logs it), every branch and
    the ensemble are reported and equal the logged values; --output ensemble makes the ensemble
    the headline; a wrong --output is a one-line error."""
    import eval as eval_cli
    config = write_config(tmp_path, "one", student="one_resnet32", epochs=1,
                          distiller={"name": "one"}, extra={"data": {"train_size": 64, "val_size": 40}})
    out = run_here("train.py", "--config", str(config))
    assert out.returncode == 0, out.stderr
    run_dir = tmp_path / "runs" / "one"
    logged = read_metrics(run_dir)[-1]
    checkpoint = str(run_dir / "last.pth")
    for headline in (None, "ensemble"):
        argv = ["--checkpoint", checkpoint, "--json"] + (["--output", headline] if headline else [])
        assert eval_cli.main(argv) == 0
        metrics = json.loads(capsys.readouterr().out)["metrics"]
        for name in ("branch1", "branch2", "branch3", "ensemble"):
            assert metrics[f"{name}/top1"] == logged[f"val/{name}/top1"], name
        assert metrics["top1"] == metrics[f"{headline or 'branch1'}/top1"]
    assert eval_cli.main(["--checkpoint", checkpoint, "--output", "branch9"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_export_keeps_the_student_alone_and_scores_as_the_run_logged(tmp_path):
    """tools/export.py on a FitNet run: no regressor, optimizer or RNG state in the file; it
    loads strictly into a bare student and eval.py scores it exactly as training logged."""
    config = write_config(tmp_path, "fitnet", epochs=1, distiller={"name": "fitnet"},
                          teacher={"arch": "resnet20", "allow_random": True},
                          extra={"data": {"train_size": 64, "val_size": 40}})
    assert run_here("train.py", "--config", str(config)).returncode == 0
    run_dir = tmp_path / "runs" / "fitnet"
    assert load(run_dir / "last.pth")["distiller"], "the run checkpoints FitNet's regressor"
    exported = tmp_path / "export" / "resnet8_fitnet.pth"
    out = run_script("tools/export.py", "--checkpoint", str(run_dir / "last.pth"), "--out", str(exported))
    assert out.returncode == 0, out.stderr
    assert "exported resnet8 (epoch 1)" in out.stdout
    state = load(exported)
    assert set(state) == {"model", "arch", "epoch", "record", "checksum"} and state["arch"] == "resnet8"
    import models
    models.load_weights(models.build_model("resnet8", num_classes=10), str(exported), arch="resnet8")
    scored = run_here("eval.py", "--checkpoint", str(exported), "--arch", "resnet8",
                        "--config", str(run_dir / "config.yaml"), "--json")
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["metrics"]["top1"] == read_metrics(run_dir)[-1]["val/top1"]
    again = run_here("tools/export.py", "--checkpoint", str(exported), "--out", str(exported))
    assert again.returncode == 2 and again.stderr.startswith("error: ")
