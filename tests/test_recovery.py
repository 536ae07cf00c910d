"""Nothing is ever lost: a good checkpoint stays good, every state a kill leaves resumes.

A kill at a named moment is simulated by making the writer raise there (``_Killed`` is not an
``Exception``, so nothing in the run may catch it, like SIGKILL); a full disk by a writer that
raises ENOSPC; signals are real. Runs are real and short (CPU, generated data).
"""
import errno
import json
import os
import signal
import subprocess
import sys
import threading

import pytest
import torch

import engine.checkpoint
import engine.trainer
import launch.run
from tests.runs import REPO, load, one_line, read_metrics, train_here, write_config
from tools.tables import is_finished, run_status
from tools.tables import read_metrics as tables_metrics
from utils.atomic import TEMP_PREFIX, atomic_write, remove_stale_temps, temp_path, write_json

SMALL = {"data": {"train_size": 128, "val_size": 64}}   # 4 steps per epoch


class _Killed(BaseException):
    """The process dies here: no handler of the run may see it."""


def temps(directory) -> list:
    return [name for name in os.listdir(directory) if name.startswith(TEMP_PREFIX)]


def files_state(run_dir) -> dict:
    """Bytes and mtime of every file of a run directory (the lock file aside)."""
    state = {}
    for root, _, names in os.walk(run_dir):
        for name in names:
            if name != ".lock":
                path = os.path.join(root, name)
                with open(path, "rb") as f:
                    state[path] = (f.read(), os.stat(path).st_mtime_ns)
    return state


def test_divergence_in_a_method_module_that_validation_cannot_see_saves_nothing(
        tmp_path, monkeypatch, capsys):
    """The loss of every step is finite, but epoch 2's last step leaves a weight of FitNet's
    regressor infinite: validation (the student alone) stays finite, yet nothing of epoch 2 is
    saved or logged, and the message names last.pth at epoch 1."""
    original = engine.trainer.Trainer.train_epoch

    def train_epoch(self, epoch):
        out = original(self, epoch)
        if epoch == 2:
            with torch.no_grad():
                self.module.regressor.conv.weight.view(-1)[0] = float("inf")
        return out
    monkeypatch.setattr(engine.trainer.Trainer, "train_epoch", train_epoch)
    config = write_config(tmp_path, "div", epochs=2, extra=SMALL, distiller={"name": "fitnet"},
                          teacher={"arch": "resnet8", "allow_random": True})
    assert train_here("--config", str(config)) == 2
    err = one_line(capsys.readouterr().err)
    last = tmp_path / "runs/div/last.pth"
    assert "non-finite at epoch 2 (val loss " in err and "(val loss nan)" not in err
    assert "(val loss inf)" not in err and "stopped without saving" in err
    assert f"the last good checkpoint is {last} (epoch 1)" in err
    for name in ("last.pth", "best.pth"):
        kept = load(tmp_path / "runs/div" / name)
        assert kept["epoch"] == 1
        assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())
    assert [m["epoch"] for m in read_metrics(tmp_path / "runs/div")] == [1]


def test_kill_between_last_and_best_writes_leaves_a_best_pth_that_resume_repairs(tmp_path, monkeypatch):
    """Killed after last.pth of a new best epoch (not the first) and before best.pth: best.pth
    is older than the best epoch last.pth records; resume makes it that epoch again."""
    original, killed = engine.trainer.save_checkpoint, []

    def save(state, path):
        if path.endswith("best.pth") and state["epoch"] > 1 and not killed:
            killed.append(state["epoch"])
            raise _Killed
        original(state, path)
    monkeypatch.setattr(engine.trainer, "save_checkpoint", save)
    config = write_config(tmp_path, "best", epochs=3)
    run_dir = tmp_path / "runs/best"
    with pytest.raises(_Killed):
        train_here("--config", str(config))
    epoch = killed[0]
    last, stale = load(run_dir / "last.pth"), load(run_dir / "best.pth")
    assert last["epoch"] == last["best_epoch"] == epoch and stale["epoch"] < epoch
    monkeypatch.setattr(engine.trainer, "save_checkpoint", original)
    monkeypatch.setattr(engine.trainer.Trainer, "fit", _raise_killed)
    with pytest.raises(_Killed):  # stopped right after the resume, before any new epoch
        train_here("--config", str(config), "--resume", "auto")
    best = load(run_dir / "best.pth")
    assert best["epoch"] == epoch
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
    assert temps(run_dir) == []


def _raise_killed(self):
    raise _Killed


def test_a_second_run_in_a_directory_is_refused_and_a_dead_holders_lock_is_taken_over(
        tmp_path, capsys):
    config = write_config(tmp_path, "locked", epochs=1, extra=SMALL)
    run_dir = tmp_path / "runs/locked"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from utils.run_lock import RunLock; "
                               f"RunLock({str(run_dir)!r}).acquire(); print('held', flush=True); time.sleep(120)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert train_here("--config", str(config), "--resume", "auto") == 2
        err = one_line(capsys.readouterr().err)
        assert f"{run_dir} is in use by another run (process {holder.pid} on " in err
        assert not (run_dir / "last.pth").exists() and not (run_dir / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    assert train_here("--config", str(config), "--resume", "auto") == 0   # dead holder: taken over
    assert load(run_dir / "last.pth")["epoch"] == 1


def test_an_atomic_write_reaches_the_disk_before_it_is_renamed_over_the_file(tmp_path, monkeypatch):
    """Without an fsync before the rename, a power cut can leave the new name on an empty or
    partial file (the rename is journalled before the data): the old file would be lost."""
    events, payload = [], b"the new content"
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.fstat(fd).st_size))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.basename(dst)))
        real_replace(src, dst)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "kept.bin"
    atomic_write(str(target), lambda f: f.write(payload))
    first_replace = events.index(("replace", "kept.bin"))
    assert ("fsync", len(payload)) in events[:first_replace]
    assert target.read_bytes() == payload


def test_concurrent_writers_of_one_shared_file_never_collide(tmp_path):
    """Four writers, 150 writes each, of one teacher_checks.json: every write lands whole."""
    path, errors = str(tmp_path / "teacher_checks.json"), []

    def writer(k):
        try:
            for i in range(150):
                write_json(path, {"writer": k, "write": i})
        except Exception as err:  # noqa: BLE001 - any failure is what the test looks for
            errors.append(err)
    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert set(json.loads(open(path).read())) == {"writer", "write"}
    assert temps(tmp_path) == []
    assert temp_path(path) != temp_path(path)


def test_finished_run_resumed_is_one_line_exit_0_and_rewrites_nothing(tmp_path, capsys):
    config = write_config(tmp_path, "done", epochs=1, extra=SMALL)
    assert train_here("--config", str(config)) == 0
    run_dir = tmp_path / "runs/done"
    before = files_state(run_dir)
    capsys.readouterr()
    assert train_here("--config", str(config), "--resume", "auto") == 0
    line = one_line(capsys.readouterr().out)
    assert line.startswith(f"{run_dir} is already finished (epoch 1 of 1): nothing to do; done: best top-1")
    assert files_state(run_dir) == before


def test_run_killed_after_its_final_save_counts_as_finished_and_resume_writes_its_summary(
        tmp_path, monkeypatch, capsys):
    original = launch.run.write_json

    def write(path, data):
        if "summary" in data:
            raise _Killed
        original(path, data)
    monkeypatch.setattr(launch.run, "write_json", write)
    config = write_config(tmp_path, "late", epochs=2, extra=SMALL)
    run_dir = tmp_path / "runs/late"
    with pytest.raises(_Killed):
        train_here("--config", str(config))
    assert "summary" not in json.loads((run_dir / "run.json").read_text())
    assert is_finished(str(run_dir)) and run_status(str(run_dir)) == "finished"
    monkeypatch.setattr(launch.run, "write_json", original)
    capsys.readouterr()
    assert train_here("--config", str(config), "--resume", "auto") == 0
    assert "the last epoch was saved but not summarised: done: best top-1" in one_line(capsys.readouterr().out)
    summary = json.loads((run_dir / "run.json").read_text())["summary"]
    last = load(run_dir / "last.pth")
    assert summary["best_epoch"] == last["best_epoch"] and summary["last_top1"] == last["metrics"]["top1"]
    assert summary["epochs"] == 2 and summary["time_s"] > 0


def test_partial_metrics_line_and_leftover_temp_files_are_dropped_on_resume(tmp_path, capsys):
    config = write_config(tmp_path, "part", epochs=2, extra=SMALL)
    run_dir = tmp_path / "runs/part"
    assert train_here("--config", str(config), "solver.epochs=1", "solver.milestones=[]") == 0
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train/loss": 2.3')          # a kill in the middle of an append
    assert [m["epoch"] for m in tables_metrics(str(run_dir))] == [1]   # tools read past it
    leftover = run_dir / ".tmp-host-123-0badc0de.last.pth"
    leftover.write_bytes(b"half a checkpoint")
    assert train_here("--config", str(config), "--resume", "auto") == 0
    out = capsys.readouterr().out
    assert "removed 1 temporary file(s) of interrupted writes" in out
    assert "metrics.jsonl: dropped 1 incomplete line(s)" in out
    assert [m["epoch"] for m in read_metrics(run_dir)] == [1, 2]
    assert temps(run_dir) == []


def test_shared_directories_lose_only_dead_writers_temp_files(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live_name = os.path.basename(temp_path(str(tmp_path / "teacher_checks.json")))
    dead_name = live_name.replace(f"-{os.getpid()}-", f"-{dead.pid}-")
    for name in (live_name, dead_name):
        (tmp_path / name).write_text("{")
    assert remove_stale_temps(str(tmp_path)) == [dead_name]
    assert temps(tmp_path) == [live_name]


def test_corrupt_or_foreign_teacher_checks_file_is_rebuilt_with_one_warning(tmp_path, capsys):
    import models
    from launch.teacher_check import read_cache
    from utils.logger import RunLogger
    teacher = tmp_path / "teacher.pth"
    torch.save({"model": models.build_model("resnet8", num_classes=10).state_dict()}, teacher)
    checks = tmp_path / "runs/teacher_checks.json"
    checks.parent.mkdir()
    checks.write_text('{"abc": {"top1": 5')                 # a writer killed mid-file (old versions)
    kd = write_config(tmp_path, "kd", epochs=1, distiller={"name": "kd"}, extra=SMALL,
                      teacher={"arch": "resnet8", "checkpoint": str(teacher)})
    assert train_here("--config", str(kd)) == 0
    warning = (f"WARNING: {checks} is not a teacher-check cache (corrupt or foreign): "
               "measuring again and rebuilding it")
    assert [l for l in capsys.readouterr().out.splitlines() if l.startswith("WARNING")] == [warning]
    entries = json.loads(checks.read_text())
    assert len(entries) == 1 and set(next(iter(entries.values()))) == {"top1", "top5", "samples"}
    for foreign in ("[1, 2, 3]", '{"key": {"top1": "high"}}'):
        checks.write_text(foreign)
        assert read_cache(str(checks), RunLogger(str(tmp_path / "log"), tensorboard=False)) == {}
        assert capsys.readouterr().out.strip() == warning


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_stop_with_one_line_naming_the_checkpoint(tmp_path, signum):
    config = write_config(tmp_path, "sig", epochs=2, extra={"data": {"train_size": 256, "val_size": 64}})
    proc = subprocess.Popen([sys.executable, "train.py", "--config", str(config)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "2"})
    for line in proc.stdout:
        if line.startswith("epoch 2 [4/"):                # the middle of epoch 2 (8 steps)
            proc.send_signal(signum)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum
    last = tmp_path / "runs/sig/last.pth"
    assert one_line(err) == (f"stopped by {signal.Signals(signum).name}: the last good checkpoint is "
                             f"{last} (epoch 1); resume with --resume auto")
    assert load(last)["epoch"] == 1 and temps(last.parent) == []


def test_signal_during_a_checkpoint_write_discards_it_and_keeps_the_previous_file(
        tmp_path, monkeypatch, capsys):
    from utils.stopping import Stopped
    original = torch.save

    def save(state, f, *args, **kwargs):
        if isinstance(state, dict) and state.get("epoch") == 2:
            f.write(b"the first bytes of the new file")
            raise Stopped(signal.SIGTERM)
        original(state, f, *args, **kwargs)
    monkeypatch.setattr(engine.checkpoint.torch, "save", save)
    config = write_config(tmp_path, "sigwrite", epochs=2, extra=SMALL)
    assert train_here("--config", str(config)) == 143
    last = tmp_path / "runs/sigwrite/last.pth"
    assert one_line(capsys.readouterr().err).endswith(f"the last good checkpoint is {last} (epoch 1); "
                                                      "resume with --resume auto")
    assert load(last)["epoch"] == 1 and temps(last.parent) == []


def test_full_disk_says_so_in_one_line_and_names_the_intact_checkpoint(tmp_path, monkeypatch, capsys):
    original = torch.save

    def save(state, f, *args, **kwargs):
        if isinstance(state, dict) and state.get("epoch") == 2:
            f.write(b"x" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        original(state, f, *args, **kwargs)
    monkeypatch.setattr(engine.checkpoint.torch, "save", save)
    config = write_config(tmp_path, "full", epochs=2, extra=SMALL)
    assert train_here("--config", str(config)) == 2
    last = tmp_path / "runs/full/last.pth"
    assert one_line(capsys.readouterr().err) == (
        f"error: cannot write {last}: No space left on device; stopped; the last good checkpoint "
        f"is {last} (epoch 1); resume with --resume auto")
    assert load(last)["epoch"] == 1 and temps(last.parent) == []
