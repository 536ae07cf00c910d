"""SLURM: ``srun python train.py`` without torchrun, and ``reproduce.py --slurm`` job arrays.

No cluster is needed: ``srun`` is faked by setting, for 2 real CPU processes (gloo), the
variables srun gives each task; ``sbatch`` and ``srun`` are faked by scripts on PATH that record
what they were asked to run.
"""
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.distributed import adopt_slurm_environment, first_host
from tests.runs import REPO, load, write_config, write_teacher_and_kd_table

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                 "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")


@pytest.mark.parametrize("nodes, first", [("gpu[07-09,12],cpu1", "gpu07"), ("a1,b2", "a1"),
                                          ("node-[5-6]", "node-5"), ("n[001-002],m1", "n001"),
                                          ("host", "host"), ("10.0.0.1", "10.0.0.1")])
def test_first_host_of_a_slurm_node_list(nodes, first):
    assert first_host(nodes) == first


def test_slurm_variables_are_adopted_only_in_a_job_step_and_never_over_torchrun():
    step = {"SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1",
            "SLURM_STEP_NODELIST": "gpu[03-06]", "SLURM_JOB_ID": "123456"}
    env = dict(step)
    assert adopt_slurm_environment(env)
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == ("5", "8", "1")
    assert env["MASTER_ADDR"] == "gpu03" and env["MASTER_PORT"] == str(20000 + 123456 % 20000)
    env = {**step, "MASTER_PORT": "29511"}
    adopt_slurm_environment(env)
    assert env["MASTER_PORT"] == "29511"                       # the user's port wins
    torchrun = {**step, "RANK": "0", "WORLD_SIZE": "2"}        # srun torchrun ...: torchrun's
    assert not adopt_slurm_environment(torchrun) and torchrun["WORLD_SIZE"] == "2"
    batch_script = {"SLURM_JOB_ID": "1", "SLURM_NTASKS": "4", "SLURM_PROCID": "0"}   # no srun
    assert not adopt_slurm_environment(batch_script) and "RANK" not in batch_script
    assert not adopt_slurm_environment({**step, "SLURM_STEP_NUM_TASKS": "1"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_srun_two_tasks_train_as_one_ddp_job_equal_to_one_process(tmp_path):
    extra = {"data": {"train_size": 128, "val_size": 64, "batch_size": 32},
             "runtime": {"sync_bn": True}, "log": {"tensorboard": False}}
    config = write_config(tmp_path, "srun", epochs=1, extra=extra)
    base = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS and not k.startswith("SLURM_")}
    base.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    port = str(free_port())
    tasks = [subprocess.Popen([sys.executable, "train.py", "--config", str(config)], cwd=REPO, env={
        **base, "SLURM_JOB_ID": "77", "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": str(rank),
        "SLURM_LOCALID": str(rank), "SLURM_STEP_NODELIST": "127.0.0.1", "MASTER_PORT": port},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = [task.communicate(timeout=300)[0] for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], outputs
    assert "2 process(es), global batch 32 (16 per process)" in outputs[0]
    assert outputs[1].strip() == ""                            # rank 1 prints nothing
    single = subprocess.run([sys.executable, "train.py", "--config", str(config), "experiment.name=one"],
                            cwd=REPO, env=base, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    two, one = load(tmp_path / "runs/srun/last.pth"), load(tmp_path / "runs/one/last.pth")
    assert two["record"]["world_size"] == 2 and one["record"]["world_size"] == 1
    for key, value in one["model"].items():      # equal up to float32 reduction order
        torch.testing.assert_close(two["model"][key], value, rtol=1e-3, atol=1e-4, msg=key)


FAKE_SBATCH = """#!/bin/bash
# records the options and the script it was given; answers a job id, as --parsable does
n=$(ls "$FAKE_DIR"/sbatch_*.args 2>/dev/null | wc -l)
echo "$@" > "$FAKE_DIR/sbatch_$n.args"
cat > "$FAKE_DIR/sbatch_$n.sh"
echo $((1000 + n))
"""
FAKE_SRUN = """#!/bin/bash
printf '%s\\n' "$@" > "$FAKE_DIR/srun.args"
"""


def executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_reproduce_slurm_submits_teachers_then_students_depending_on_them(tmp_path):
    table = write_teacher_and_kd_table(tmp_path, {"data": {"train_size": 64, "val_size": 32}})
    kd_cfg = tmp_path / "kd.yaml"
    out_dir = tmp_path / "out"
    # overrides before and after the flags, as on every CLI
    made = subprocess.run([sys.executable, "tools/reproduce.py", "solver.lr=0.1", str(table), "--seeds", "0", "1",
                           "--slurm", "--slurm-option=--time=1:00:00", "--output-dir", str(out_dir),
                           "log.print_freq=2"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    script = tmp_path / "jobs.sh"
    script.write_text(made.stdout)
    fake = tmp_path / "bin"
    fake.mkdir()
    executable(fake / "sbatch", FAKE_SBATCH)
    executable(fake / "srun", FAKE_SRUN)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "FAKE_DIR": str(tmp_path)}
    submitted = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert submitted.returncode == 0, submitted.stderr
    assert "tiny-teachers: job 1000" in submitted.stdout and "tiny-students: job 1001" in submitted.stdout
    teachers_args = (tmp_path / "sbatch_0.args").read_text()
    students_args = (tmp_path / "sbatch_1.args").read_text()
    assert "--array=0-1" in teachers_args and "--dependency" not in teachers_args   # 2 seeds
    assert "--array=0-1" in students_args and "--dependency=afterok:1000" in students_args
    for n in (0, 1):
        body = (tmp_path / f"sbatch_{n}.sh").read_text()
        assert "#SBATCH --time=1:00:00" in body and f"#SBATCH --chdir={REPO}" in body
    # array task 1 of the students runs kd seed 1 under srun, its teacher the teacher run's file
    task = subprocess.run(["bash", str(tmp_path / "sbatch_1.sh")], capture_output=True, text=True,
                          env={**env, "SLURM_ARRAY_TASK_ID": "1"}, timeout=60)
    assert task.returncode == 0, task.stderr
    argv = (tmp_path / "srun.args").read_text().splitlines()
    assert argv[:4] == ["python", "train.py", "--config", str(kd_cfg)]
    assert "experiment.seed=1" in argv and argv[-2:] == ["--resume", "auto"]
    assert "solver.lr=0.1" in argv and "log.print_freq=2" in argv
    assert f"teacher.checkpoint={out_dir}/tiny/teacher_resnet8/seed0/last.pth" in argv
