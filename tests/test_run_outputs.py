"""What a run shows and leaves behind: the lr its steps used, its hyper-parameters and results
for TensorBoard's HParams tab, the code it ran (a diff when the tree is dirty), and an exported
student that eval.py scores without being told its architecture."""
import json
import subprocess

import pytest

from launch.record import git_state
from launch.run import run_training
from launch.build import load_run_config
from tests.runs import read_metrics, write_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """resnet8, 2 epochs of 2 steps, lr 0.1 dropping to 0.01 after epoch 1; printed every step."""
    directory = tmp_path_factory.mktemp("outputs")
    config = write_config(directory, "lr_drop", epochs=2, extra={
        "data": {"train_size": 64, "val_size": 40}, "solver": {"lr": 0.1, "milestones": [1], "gamma": 0.1},
        "log": {"print_freq": 1, "tensorboard": True}})
    import contextlib
    import io
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        summary = run_training(load_run_config(str(config)))
    return directory / "runs" / "lr_drop", printed.getvalue(), summary


def test_progress_shows_the_lr_the_steps_used(run):
    run_dir, printed, _ = run
    lines = [line for line in printed.splitlines() if line.startswith("epoch ") and "] loss" in line]
    assert [line.split(" lr ")[1] for line in lines] == ["0.1", "0.1", "0.01", "0.01"], lines
    assert [m["train/lr"] for m in read_metrics(run_dir)] == pytest.approx([0.1, 0.01])


def test_loss_terms_are_logged_as_weighted(run):
    run_dir, _, _ = run
    epoch = read_metrics(run_dir)[0]
    assert "train/weighted/loss_ce" in epoch and "train/loss_ce" not in epoch
    assert epoch["train/weighted/loss_ce"] == pytest.approx(epoch["train/loss"])   # vanilla: one term


def test_hparams_are_read_back_by_tensorboard(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    run_dir, _, summary = run
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    session = [plugin_data_pb2.HParamsPluginData.FromString(c).session_start_info
               for c in content.values() if plugin_data_pb2.HParamsPluginData.FromString(c)
               .HasField("session_start_info")]
    assert len(session) == 1
    hparams = {k: v.string_value or v.number_value for k, v in session[0].hparams.items()}
    assert hparams["method"] == "vanilla" and hparams["pair"] == "resnet8"
    assert hparams["solver.lr"] == 0.1 and hparams["solver.epochs"] == 2 and "seed" in hparams
    experiment = [plugin_data_pb2.HParamsPluginData.FromString(c).experiment for c in content.values()
                  if plugin_data_pb2.HParamsPluginData.FromString(c).HasField("experiment")]
    assert {m.name.tag for m in experiment[0].metric_infos} == {"hparams/best_top1", "hparams/last_top1"}
    assert events.Scalars("hparams/best_top1")[-1].value == pytest.approx(summary["best_top1"])
    assert events.Scalars("hparams/last_top1")[-1].value == pytest.approx(summary["last_top1"])


def test_hparams_name_the_pair_and_the_method_keys(tmp_path):
    from launch.run import hyperparameters
    config = write_config(tmp_path, "kd", distiller={"name": "kd", "temperature": 3},
                          teacher={"arch": "resnet20", "allow_random": True})
    params = hyperparameters(load_run_config(str(config)))
    assert params["method"] == "kd" and params["pair"] == "resnet20->resnet8"
    assert params["distiller.temperature"] == 3 and params["distiller.kd_weight"] == 0.9


def test_eval_of_an_exported_file_uses_the_recorded_arch(run, tmp_path, capsys):
    import eval as eval_cli
    from tools.export import export
    run_dir, _, _ = run
    exported = tmp_path / "student.pth"
    export(str(run_dir / "last.pth"), str(exported))
    assert eval_cli.main(["--checkpoint", str(exported), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["arch"] == "resnet8"
    assert result["metrics"]["top1"] == read_metrics(run_dir)[-1]["val/top1"]


def git(repo, *args):
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True,
                   capture_output=True)


def test_run_record_stores_the_diff_when_the_tree_is_dirty(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "losses.py").write_text("T = 4\n")
    git(tmp_path, "add", "losses.py")
    git(tmp_path, "commit", "-qm", "one")
    clean = git_state(str(tmp_path))
    assert clean["dirty"] is False and "diff" not in clean and len(clean["commit"]) == 40
    (tmp_path / "losses.py").write_text("T = 2\n")
    dirty = git_state(str(tmp_path))
    assert dirty["dirty"] is True and dirty["commit"] == clean["commit"]
    assert "-T = 4\n+T = 2" in dirty["diff"]
