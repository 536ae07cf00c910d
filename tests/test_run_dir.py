"""What a run directory already holds decides what a run may do there: nothing of a run is
overwritten, a damaged side file is one line, and the kills around a run's last writes (the final
epoch's best.pth, a teacher trained first) leave states that the same command finishes.

Kills are simulated as in tests/test_recovery.py: the writer raises a ``BaseException`` at the
chosen moment, which nothing in the run may catch. Runs are real, tiny and in-process.
"""
import json
import os
import shutil

import pytest

import engine.trainer
from launch.record import sha256_of_file
from tests.runs import load, one_line, read_metrics, train_here, write_config
from tests.test_recovery import _Killed

TINY = {"data": {"train_size": 32, "val_size": 16}}   # 1 step per epoch


def tree_state(run_dir) -> dict:
    """Every path under a run directory, directories included, with its bytes (None for a
    directory) and mtime; the lock file aside (a refused run may have taken the lock)."""
    state = {}
    for root, dirs, names in os.walk(run_dir):
        for name in dirs + names:
            path = os.path.join(root, name)
            if name == ".lock" and os.path.isfile(path):
                continue
            content = None if os.path.isdir(path) else open(path, "rb").read()
            state[path] = (content, os.stat(path).st_mtime_ns)
    return state


def kill_at_save(monkeypatch, when):
    """Make the checkpoint writer raise ``_Killed`` at the first save where ``when(state, path)``."""
    original = engine.trainer.save_checkpoint

    def save(state, path):
        if when(state, path):
            raise _Killed
        original(state, path)
    monkeypatch.setattr(engine.trainer, "save_checkpoint", save)
    return original


def test_kill_between_the_final_last_and_best_writes_repairs_best_on_every_resume_path(
        tmp_path, monkeypatch, capsys):
    """Killed after the final epoch's last.pth (a new best) and before its best.pth: resume takes
    the "saved but not summarised" path and still makes best.pth that epoch, so best.pth and
    run.json agree; a finished run with such a best.pth (summarised by older code) is repaired too."""
    original_validate = engine.trainer.Trainer._validate
    monkeypatch.setattr(engine.trainer.Trainer, "_validate",   # every epoch a new best
                        lambda self, epoch: {**original_validate(self, epoch), "top1": float(epoch)})
    original = kill_at_save(monkeypatch, lambda state, path: path.endswith("best.pth") and state["epoch"] == 2)
    config = write_config(tmp_path, "final", epochs=2, extra=TINY)
    run_dir = tmp_path / "runs/final"
    with pytest.raises(_Killed):
        train_here("--config", str(config))
    stale = (run_dir / "best.pth").read_bytes()
    assert load(run_dir / "best.pth")["epoch"] == 1 and load(run_dir / "last.pth")["best_epoch"] == 2
    monkeypatch.setattr(engine.trainer, "save_checkpoint", original)
    for path in ("saved but not summarised", "already finished"):
        capsys.readouterr()
        assert train_here("--config", str(config), "--resume", "auto") == 0
        out = capsys.readouterr().out
        assert f"best.pth was older than the best epoch 2: restored from {run_dir / 'last.pth'}" in out, path
        best, last = load(run_dir / "best.pth"), load(run_dir / "last.pth")
        summary = json.loads((run_dir / "run.json").read_text())["summary"]
        assert best["epoch"] == summary["best_epoch"] == 2 and best["best_top1"] == summary["best_top1"]
        assert (run_dir / "best.pth").read_bytes() == (run_dir / "last.pth").read_bytes()
        (run_dir / "best.pth").write_bytes(stale)   # as older code left a finished run


def test_teacher_run_killed_mid_training_is_continued_before_distilling(tmp_path, monkeypatch, capsys):
    """teacher.train_epochs: a kill in the teacher's epoch 2 leaves its best.pth of epoch 1; the
    next run continues the teacher's run to its end and distils from the finished teacher."""
    teacher_dir = tmp_path / "teachers/resnet8"
    config = write_config(tmp_path, "kd", epochs=1, distiller={"name": "kd"}, extra=TINY, teacher={
        "arch": "resnet8", "checkpoint": str(teacher_dir / "best.pth"), "train_epochs": 2})
    original = kill_at_save(monkeypatch, lambda state, path: state["epoch"] == 2)
    with pytest.raises(_Killed):
        train_here("--config", str(config))
    assert load(teacher_dir / "best.pth")["epoch"] == 1 and not (tmp_path / "runs/kd").exists()
    monkeypatch.setattr(engine.trainer, "save_checkpoint", original)
    capsys.readouterr()
    assert train_here("--config", str(config)) == 0
    out = capsys.readouterr().out
    assert (f"teacher checkpoint {teacher_dir / 'best.pth'} belongs to a run that did not finish "
            "(its run.json has no summary): continuing that run to its 2 epochs first") in out
    assert f"resumed from {teacher_dir / 'last.pth'} at epoch 1" in out
    assert load(teacher_dir / "last.pth")["epoch"] == 2
    assert "summary" in json.loads((teacher_dir / "run.json").read_text())
    record = json.loads((tmp_path / "runs/kd/run.json").read_text())
    assert record["teacher"]["sha256"] == sha256_of_file(str(teacher_dir / "best.pth"))


def test_random_teacher_weights_are_said_at_start_and_recorded(tmp_path, capsys):
    """teacher.allow_random outside a smoke run trains, but not without a word: one line at
    start, and run.json records the teacher's weights as random."""
    config = write_config(tmp_path, "noise", epochs=1, distiller={"name": "kd"}, extra=TINY,
                          teacher={"arch": "resnet8", "allow_random": True})
    assert train_here("--config", str(config)) == 0
    warnings = [l for l in capsys.readouterr().out.splitlines() if "random weights" in l]
    assert warnings == ["WARNING: teacher resnet8 has random weights (teacher.checkpoint is not set; "
                        "teacher.allow_random=true): what the student learns from it means nothing "
                        "(run.json: teacher.random_weights)"]
    assert json.loads((tmp_path / "runs/noise/run.json").read_text())["teacher"]["random_weights"] is True


def test_smoke_run_starts_afresh_each_time(tmp_path, capsys):
    """A repeated --smoke run replaces the earlier one's output (one epoch in metrics.jsonl, one
    TensorBoard event file); --resume does not apply to it."""
    config = write_config(tmp_path, "again", distiller={"name": "kd"},
                          teacher={"arch": "resnet8", "checkpoint": str(tmp_path / "absent.pth")})
    run_dir = tmp_path / "runs/smoke/again"
    for _ in range(2):
        assert train_here("--config", str(config), "--smoke") == 0
        out = capsys.readouterr().out
        assert sum("has random weights (its checkpoint" in line for line in out.splitlines()) == 1
    assert [m["epoch"] for m in read_metrics(run_dir)] == [1]
    assert len(os.listdir(run_dir / "tb")) == 1
    assert train_here("--config", str(config), "--smoke", "--resume", "auto") == 2
    assert one_line(capsys.readouterr().err) == \
        "error: --smoke starts afresh each time: --resume does not apply to it"


def fake_run(run_dir, names=("best.pth", "metrics.jsonl", "run.json", "config.yaml")) -> None:
    """Run files as a run leaves them (their content is not read before the refusals)."""
    run_dir.mkdir(parents=True)
    content = {"metrics.jsonl": '{"epoch": 1}\n{"epoch": 2}\n', "run.json": '{"summary": {}}'}
    for name in names:
        (run_dir / name).write_text(content.get(name, "x"))


@pytest.mark.parametrize("resume", [[], ["--resume", "auto"]])
def test_run_directory_without_last_pth_but_with_run_files_is_refused(tmp_path, capsys, resume):
    """last.pth deleted from a trained run (to save disk): starting again would overwrite its
    best.pth and metrics.jsonl, so the run stops with one line, every file untouched."""
    config = write_config(tmp_path, "pruned", epochs=1, extra=TINY)
    run_dir = tmp_path / "runs/pruned"
    fake_run(run_dir)
    before = tree_state(run_dir)
    assert train_here("--config", str(config), *resume) == 2
    assert one_line(capsys.readouterr().err) == (
        f"error: {run_dir} holds a run (best.pth, metrics.jsonl, run.json, config.yaml) but no "
        "last.pth to continue it from (deleted?): set another experiment.name, or move those files "
        "away to train it again from epoch 1")
    assert tree_state(run_dir) == before


def test_run_stopped_before_its_first_checkpoint_restarts_only_with_resume_auto(tmp_path, capsys):
    """A kill before the first save leaves run.json, config.yaml and epoch 1's metrics line: the
    same command without --resume names it; with --resume auto it starts at epoch 1 again."""
    from launch.run_dir import checkpoint_to_resume
    config = write_config(tmp_path, "early", epochs=1, extra=TINY)
    run_dir = tmp_path / "runs/early"
    fake_run(run_dir, names=("run.json", "config.yaml"))
    (run_dir / "run.json").write_text("{}")
    (run_dir / "metrics.jsonl").write_text('{"epoch": 1}\n')
    assert train_here("--config", str(config)) == 2
    assert one_line(capsys.readouterr().err) == (
        f"error: {run_dir} already holds a run stopped before its first checkpoint (metrics.jsonl, "
        "run.json, config.yaml): pass --resume auto to start it again, or set another experiment.name")
    assert checkpoint_to_resume(str(run_dir), "auto") is None


def edit_epoch(run_dir, value: str) -> None:
    path = run_dir / "metrics.jsonl"
    path.write_text(path.read_text().replace('"epoch": 1,', f'"epoch": {value},'))


DAMAGE = {
    "metrics line with epoch null": (lambda d: edit_epoch(d, "null"),
                                     "{m} line 1 has epoch None, not an epoch number: correct or delete that line, then resume"),
    "metrics line with epoch '2'": (lambda d: edit_epoch(d, '"2"'),
                                    "{m} line 1 has epoch '2', not an epoch number: correct or delete that line, then resume"),
    "metrics.jsonl a directory": (lambda d: ((d / "metrics.jsonl").unlink(), (d / "metrics.jsonl").mkdir()),
                                  "refusing to write {m}: it is a directory, not a regular file"),
    "run.json a directory": (lambda d: ((d / "run.json").unlink(), (d / "run.json").mkdir()),
                             "refusing to write {d}/run.json: it is a directory, not a regular file"),
    ".lock a directory": (lambda d: ((d / ".lock").unlink(), (d / ".lock").mkdir()),
                          "refusing to write {d}/.lock: it is a directory, not a regular file"),
    "tb a file": (lambda d: (shutil.rmtree(d / "tb"), (d / "tb").write_text("x")),
                  "refusing to write {d}/tb: it is a file, not the run's TensorBoard directory"),
    "tb a link": (lambda d: (shutil.rmtree(d / "tb"), (d.parent / "elsewhere").mkdir(),
                             (d / "tb").symlink_to(d.parent / "elsewhere")),
                  "refusing to write {d}/tb: it is a symbolic link, not the run's own directory"),
}


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    """A run of a 2-epoch config stopped after epoch 1 (as a kill leaves it)."""
    base = tmp_path_factory.mktemp("stopped")
    config = write_config(base, "damaged", epochs=2, extra=TINY)
    assert train_here("--config", str(config), "solver.epochs=1", "solver.milestones=[]") == 0
    return base / "runs/damaged"


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_side_file_on_resume_is_one_line_and_nothing_changes(
        one_epoch_run, tmp_path, capsys, damage):
    config = write_config(tmp_path, "damaged", epochs=2, extra=TINY)
    run_dir = tmp_path / "runs/damaged"
    shutil.copytree(one_epoch_run, run_dir)
    make, message = DAMAGE[damage]
    make(run_dir)
    before = tree_state(run_dir)
    assert train_here("--config", str(config), "--resume", "auto") == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("error: " + message.format(d=run_dir, m=run_dir / "metrics.jsonl")), line
    assert tree_state(run_dir) == before
