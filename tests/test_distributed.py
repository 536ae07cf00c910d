"""DDP through torchrun, for real: CPU, gloo, 2 processes, launched exactly as the README says.

    torchrun --standalone --nproc_per_node 2 train.py --config C                     (one machine)
    torchrun --nnodes 2 --node_rank R --nproc_per_node 1 --master_addr 127.0.0.1 \\
             --master_port P train.py --config C                         (two "machines", R = 0, 1)

Tiny synthetic data (10 classes, 256 train images, 201 val images: odd on purpose), resnet8,
global batch 64. Each run is shared by the tests that inspect it (module-scoped fixtures); the
runs of every method share two launches of tests/ddp_methods.py (one process, then torchrun 2),
which train config after config in one process: start-up, not training, is what a launch costs.
"""
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.ddp_methods import split_output
from tests.methods import METHODS as REGISTERED, every_method
from tests.runs import REPO, load, read_metrics

TIMEOUT = 240  # seconds per launch: a hang fails the test instead of blocking CI
METHODS_TIMEOUT = 360  # a launch of tests/ddp_methods.py, every method's run in turn (both
#                        launches together: 51-71 s on 2 shared cores)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
DATA = {"dataset": "synthetic", "num_classes": 10, "image_size": 32, "train_size": 256,
        "val_size": 201, "batch_size": 64, "val_batch_size": 50, "num_workers": 0}
TEACHER = {"arch": "resnet8", "allow_random": True}   # the same random weights on every rank
# method: (distiller section, epochs, train images, atol of the 1- vs 2-process comparison,
# student). Deep or relation-based losses on random networks amplify float32 rounding step by
# step (the reduction order differs between 1 x 64 and 2 x 32): FitNet's default feat_weight=100
# (measured 8e-6 relative after 1 step, ~3e-3 after 8), DIST's Pearson terms on near-uniform
# softmaxes (1.3e-5 after 1 step) and any 32-layer ResNet (plain resnet32 vanilla:
# 4.5e-5 after one step; ONE's trunk the same). Those compare after few steps, where a real
# semantic difference (a per-process relation, an unsynchronised connector) shows as 1e-2 (DIST
# with per-process relations: 4e-2 after one step). The float64 test at the end proves the
# collectives themselves exact.
# FitNet's 4 steps amplify rounding the most, and by how much depends on the machine (max gap
# 3e-5 on one 2-core machine, 2.2e-4 on another, both torch 2.14.1), so no fixed tolerance
# holds: its atol (None) is measured on the machine itself, SPREAD_FACTOR x the float32 spread
# of the one-process run repeated with runtime.channels_last=true (every convolution then sums
# in another order; same recipe, same samples). Measured: spread 1.8e-4, a real semantic
# difference (BatchNorm statistics per process instead of synchronised) 1.4e-2.
# CRD's NCE constants are ~130 (mean score x 64 images, summed in another order over the two
# processes), where one float32 ulp is 1.5e-5 (measured: exactly that, the student 1.4e-7).
SPREAD_FACTOR = 4


def default_case(name: str) -> tuple:
    """The method at its defaults, one step of 64 images, the feature baselines' tolerance
    (measured 1x64 vs 2x32 gap 6e-8 (KDSVD) to 7e-6 (NST); SP and PKT with per-process
    relations instead of the gathered batch: 4e-2 and 1e-3)."""
    return {"name": name}, 1, 64, 5e-5, "resnet8"


METHODS = every_method({
    "vanilla": ({"name": "vanilla"}, 1, 64, 1e-5, "resnet8"),
    "kd": ({"name": "kd"}, 2, 256, 5e-5, "resnet8"),
    "fitnet": ({"name": "fitnet", "feat_weight": 1.0}, 1, 256, None, "resnet8"),
    "dkd": ({"name": "dkd", "warmup": 1}, 1, 64, 1e-5, "resnet8"),
    "srrl": ({"name": "srrl"}, 1, 64, 1e-5, "resnet8"),
    # measured 1 x 64 vs 2 x 32 after one step: VID 6e-8, OFD 9e-7, ReviewKD 1.2e-7
    "vid": ({"name": "vid"}, 1, 64, 1e-5, "resnet8"),
    "ofd": ({"name": "ofd"}, 1, 64, 1e-5, "resnet8"),
    "reviewkd": ({"name": "reviewkd"}, 1, 64, 1e-5, "resnet8"),
    "one": ({"name": "one"}, 1, 64, 3e-4, "one_resnet32"),
    "crd": ({"name": "crd", "nce_k": 16}, 1, 64, 5e-5, "resnet8"),
}, default_case)


def torchrun_command():
    """torchrun from this interpreter's environment (the module is the same program)."""
    script = Path(sys.executable).with_name("torchrun")
    return [str(script)] if script.exists() else [sys.executable, "-m", "torch.distributed.run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(directory: Path, name: str, distiller: dict, epochs: int = 2, sync_bn: bool = True,
                 student: str = "resnet8", runtime: dict = None, **data) -> Path:
    config = {"experiment": {"name": name, "output_dir": str(directory / "runs"), "seed": 0},
              "data": {**DATA, **data}, "student": {"arch": student}, "distiller": distiller,
              "solver": {"epochs": epochs, "lr": 0.05, "milestones": [], "weight_decay": 5e-4},
              "runtime": {"device": "cpu", "sync_bn": sync_bn, **(runtime or {})},
              "log": {"print_freq": 2, "tensorboard": False}}
    if distiller["name"] not in ("vanilla", "one"):
        config["teacher"] = dict(TEACHER)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def single(*args: str, timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def single_node(*args: str, script: str = "train.py", timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    command = [*torchrun_command(), "--standalone", "--nproc_per_node", "2", script, *args]
    return subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def two_nodes(args_node0, args_node1):
    """Two torchrun agents, one per simulated machine, started together on loopback."""
    port = free_port()
    procs = [subprocess.Popen([*torchrun_command(), "--nnodes", "2", "--node_rank", str(rank),
                               "--nproc_per_node", "1", "--master_addr", "127.0.0.1",
                               "--master_port", str(port), "train.py", *args],
                              cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
             for rank, args in enumerate((args_node0, args_node1))]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=TIMEOUT)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [p.returncode for p in procs], outputs


def ok(out: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return out


def max_abs_difference(a: dict, b: dict) -> float:
    """The largest |a - b| over the floating tensors of two checkpoints' student and method."""
    return max((a[section][key].double() - b[section][key].double()).abs().max().item()
               for section in ("model", "distiller") for key in a[section]
               if a[section][key].is_floating_point())


def assert_close(a: dict, b: dict, atol: float, exact: bool = False):
    assert a.keys() == b.keys()
    for key in a:
        if exact:
            assert torch.equal(a[key], b[key]), key
        else:
            torch.testing.assert_close(a[key].double(), b[key].double(), atol=atol, rtol=0,
                                       msg=lambda m, key=key: f"{key}: {m}")


# --- the runs -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every distiller, SyncBN: one process x batch 64 and torchrun 2 x 32. All methods' runs
    in two launches of tests/ddp_methods.py (one per process count), each printing a marker
    line before each run, by which each method's output is told apart."""
    directory = tmp_path_factory.mktemp("ddp")
    singles, ddps = [], []
    for method, (distiller, epochs, train_size, atol, student) in METHODS.items():
        recipe = dict(epochs=epochs, student=student, train_size=train_size)
        singles.append(write_config(directory, method + "_single", distiller, **recipe))
        if atol is None:   # the same run in another reduction order: the spread
            singles.append(write_config(directory, method + "_reordered", distiller,
                                        runtime={"channels_last": True}, **recipe))
        ddps.append(write_config(directory, method, distiller, **recipe))
    ok(single("tests/ddp_methods.py", *map(str, singles), timeout=METHODS_TIMEOUT))
    ddp_out = split_output(ok(single_node(*map(str, ddps), script="tests/ddp_methods.py",
                                          timeout=METHODS_TIMEOUT)).stdout)
    assert list(ddp_out) == list(METHODS), "one marker per run, in order, on rank 0 only"
    result = {(method, "ddp_out"): ddp_out[method] for method in METHODS}
    for method in METHODS:
        result[method, "single"] = load(directory / "runs" / f"{method}_single" / "last.pth")
        result[method, "ddp"] = load(directory / "runs" / method / "last.pth")
        if METHODS[method][3] is None:
            result[method, "reordered"] = load(directory / "runs" / f"{method}_reordered" / "last.pth")
    result["dir"], result["kd_config"] = directory, directory / "kd.yaml"
    return result


@pytest.mark.parametrize("method", REGISTERED)
def test_two_processes_equal_one_process_with_the_same_global_batch(runs, method):
    """2 x 32 with SyncBatchNorm == 1 x 64 after 8 (KD) / 4 (FitNet) / 1 (others) SGD steps: the same
    samples per step (DistributedSampler's shards of one permutation), the same augmentation,
    gradients averaged over 64, BN statistics over 64. FitNet's regressor, SRRL's and OFD's
    connectors and ReviewKD's ABFs (distiller modules with their own BatchNorm) must be
    synchronised too. FitNet's tolerance is
    SPREAD_FACTOR x the float32 spread of the one-process run itself (see METHODS)."""
    _, epochs, train_size, atol, _ = METHODS[method]
    ddp, one = runs[method, "ddp"], runs[method, "single"]
    if atol is None:
        spread = max_abs_difference(one, runs[method, "reordered"])
        assert spread > 0, "channels_last changed no bit: no measure of float32 rounding here"
        atol = SPREAD_FACTOR * spread
    steps = epochs * train_size // 64
    assert ddp["epoch"] == one["epoch"] == epochs and ddp["step"] == one["step"] == steps
    assert not any(k.startswith("module.") for k in [*ddp["model"], *ddp["distiller"]])
    assert_close(ddp["model"], one["model"], atol=atol)
    assert_close(ddp["distiller"], one["distiller"], atol=atol)
    if method in ("fitnet", "srrl", "vid", "ofd", "reviewkd"):
        assert ddp["distiller"], "the regressor/connector is checkpointed with the student"
    record = json.loads((runs["dir"] / "runs" / method / "run.json").read_text())
    assert record["world_size"] == 2
    assert record["batch_size"] == {"global": 64, "per_process": 32}
    out = runs[method, "ddp_out"]   # this method's part of the torchrun launch's output
    assert out.count("done: best top-1") == 1 and "SyncBatchNorm on" in out   # rank 0 prints


@pytest.mark.slow
def test_two_processes_equal_one_process_with_kd_and_dot(tmp_path):
    """solver.optimizer=dot: DDP's reducer allows one backward per forward, DOT takes two, so its
    step averages each pass's gradients by hand (engine/steps.py). KD, 2 steps (the second uses
    both momentum buffers), SyncBatchNorm: 2 x 32 == 1 x 64 to float32 rounding (measured 4e-7;
    the KD gradients left unaveraged: 1e-3), both momentum buffers included."""
    config = write_config(tmp_path, "kd_dot", {"name": "kd"}, epochs=1, train_size=128)
    tree = yaml.safe_load(config.read_text())
    tree["solver"]["optimizer"] = "dot"
    config.write_text(yaml.safe_dump(tree))
    ok(single("train.py", "--config", str(config), "experiment.name=kd_dot_single"))
    out = ok(single_node("--config", str(config)))
    one, ddp = (load(tmp_path / "runs" / name / "last.pth") for name in ("kd_dot_single", "kd_dot"))
    assert ddp["step"] == one["step"] == 2
    assert_close(ddp["model"], one["model"], atol=5e-5)
    buffers = {(i, name): value for i, state in one["optimizer"]["state"].items()
               for name, value in state.items()}
    assert {name for _, name in buffers} == {"momentum_buffer", "momentum_kd_buffer"}
    for (i, name), value in buffers.items():
        torch.testing.assert_close(ddp["optimizer"]["state"][i][name], value, atol=5e-5, rtol=0)
    assert "optimizer: DOT (momentum 0.825 task / 0.975 distillation" in out.stdout


def test_checkpoint_written_under_ddp_loads_in_a_bare_student(runs):
    import models
    student = models.build_model("resnet8", num_classes=10)
    student.load_state_dict(runs["kd", "ddp"]["model"], strict=True)


def test_ddp_resume_equals_uninterrupted_and_resumes_in_one_process(runs):
    """DDP epoch 1, then (a) DDP resume to epoch 2: bit-equal to the uninterrupted DDP run;
    (b) the same epoch-1 checkpoint resumed by a single process: equal to the uninterrupted
    single-process run within float tolerance (DDP's epoch 1 equals it only to rounding)."""
    directory = runs["dir"]
    config = write_config(directory, "kd_resumed", {"name": "kd"}, epochs=1)
    ok(single_node("--config", str(config)))
    first = directory / "runs" / "kd_resumed" / "last.pth"
    assert load(first)["epoch"] == 1
    (directory / "runs" / "kd_single_resumed").mkdir()
    shutil.copy(first, directory / "runs" / "kd_single_resumed" / "last.pth")
    ok(single_node("--config", str(config), "--resume", "auto", "solver.epochs=2"))
    ok(single("train.py", "--config", str(config), "--resume", "auto", "solver.epochs=2",
              "experiment.name=kd_single_resumed"))
    resumed = load(first)
    assert resumed["epoch"] == 2
    assert_close(resumed["model"], runs["kd", "ddp"]["model"], atol=0, exact=True)
    in_one = load(directory / "runs" / "kd_single_resumed" / "last.pth")
    assert in_one["epoch"] == 2
    assert_close(in_one["model"], runs["kd", "single"]["model"], atol=METHODS["kd"][3])
    epochs = [m["epoch"] for m in read_metrics(directory / "runs" / "kd_resumed")]
    assert epochs == [1, 2]


def test_two_machines_equal_one_machine(runs):
    """Two torchrun agents (--nnodes 2, one process each) on loopback run the same job as
    --standalone --nproc_per_node 2: bit-equal weights."""
    config = str(runs["kd_config"])
    codes, outputs = two_nodes(["--config", config, "experiment.name=kd_nodes"],
                               ["--config", config, "experiment.name=kd_nodes"])
    assert codes == [0, 0], "\n".join(o[-3000:] for o in outputs)
    nodes = load(runs["dir"] / "runs" / "kd_nodes" / "last.pth")
    assert_close(nodes["model"], runs["kd", "ddp"]["model"], atol=0, exact=True)
    assert outputs[0].count("done: best top-1") == 1 and "done: best top-1" not in outputs[1]


def test_validation_under_ddp_equals_eval_in_one_process(tmp_path):
    """201 val images over 2 processes (101 + 100, no padding), plain BatchNorm (each rank's
    running statistics drift apart during training): the logged val top-1 equals eval.py's on
    the saved checkpoint, exactly, and the sample count is 201."""
    config = write_config(tmp_path, "vanilla", {"name": "vanilla"}, epochs=2, sync_bn=False)
    ok(single_node("--config", str(config)))
    run_dir = tmp_path / "runs" / "vanilla"
    logged = read_metrics(run_dir)[-1]
    out = ok(single("eval.py", "--checkpoint", str(run_dir / "last.pth"), "--json"))
    metrics = json.loads(out.stdout)["metrics"]
    assert metrics["samples"] == 201
    assert metrics["top1"] == logged["val/top1"] and metrics["top5"] == logged["val/top5"]
    # CE is summed in float32 per batch (25 per rank vs 50): equal to float32 rounding
    assert metrics["loss"] == pytest.approx(logged["val/loss"], rel=1e-6)
    # predictions are not uniform (so they depend on the BatchNorm statistics being compared)
    assert abs(logged["val/loss"] - math.log(10)) > 1e-3
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(".")) == sorted(
        ["best.pth", "config.yaml", "last.pth", "metrics.jsonl", "run.json"])


def test_user_error_under_torchrun_ends_the_job_promptly(tmp_path):
    """A global batch that does not divide over the processes: every rank stops with the
    one-line error and exit code 2; torchrun reports it and returns non-zero."""
    config = write_config(tmp_path, "bad", {"name": "vanilla"}, epochs=1, batch_size=63)
    started = time.time()
    out = single_node("--config", str(config))
    assert out.returncode != 0
    assert time.time() - started < 90
    text = out.stdout + out.stderr
    assert "data.batch_size=63 is the global batch and must divide evenly over 2 processes" in text
    assert "exitcode  : 2" in text


def test_one_machine_failing_ends_the_other(tmp_path):
    """Node 1 misses the teacher checkpoint (a real per-machine failure: its file system lacks
    the file) and stops with a user error while node 0 is already waiting in a collective:
    node 0 must fail too, promptly, instead of hanging."""
    good = write_config(tmp_path, "nodes", {"name": "kd"}, epochs=1)
    bad = yaml.safe_load(good.read_text())
    bad["teacher"] = {"arch": "resnet8", "checkpoint": str(tmp_path / "missing.pth")}
    bad_path = tmp_path / "nodes_bad.yaml"
    bad_path.write_text(yaml.safe_dump(bad))
    started = time.time()
    codes, outputs = two_nodes(["--config", str(good)], ["--config", str(bad_path)])
    assert time.time() - started < 120
    assert codes[0] != 0 and codes[1] != 0
    assert "teacher checkpoint not found" in outputs[1]
    assert not (tmp_path / "runs" / "nodes" / "last.pth").exists()


def test_sync_batchnorm_converts_the_distiller_not_the_teacher():
    """runtime.sync_bn converts the student and connectors (same state-dict keys) and leaves the
    frozen teacher's BatchNorm alone; in one process CpuSyncBatchNorm is plain BatchNorm."""
    import models
    from distillers import build_distiller
    from engine.distributed import CpuSyncBatchNorm, convert_sync_batchnorm
    torch.manual_seed(0)
    student, teacher = models.build_model("resnet8", 10), models.build_model("resnet20", 10)
    distiller = build_distiller({"name": "fitnet"}, student, teacher, input_shape=(3, 32, 32))
    keys = list(distiller.state_dict())
    x = torch.randn(4, 3, 32, 32)
    before = distiller.student(x)
    converted = convert_sync_batchnorm(distiller, "cpu")
    assert list(converted.state_dict()) == keys
    kinds = {type(m) for m in converted.modules()}
    assert CpuSyncBatchNorm in kinds and torch.nn.BatchNorm2d not in kinds
    assert not any(isinstance(m, CpuSyncBatchNorm) for m in converted.teacher.modules())
    assert not converted.teacher.training
    torch.testing.assert_close(converted.student(x), before)


# --- collectives with gradients, exact in float64 (2 gloo processes, no torchrun) ----------------
def _float64_worker(rank: int, world_size: int, init_file: str, result_file: str):
    """Each process holds half of a float64 batch; it returns its rows' outputs and gradients."""
    import torch.distributed as dist
    from distillers.losses import dist_loss
    from engine.distributed import CpuSyncBatchNorm
    from utils.collectives import gather_batch
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world_size)
    try:
        torch.manual_seed(0)
        images, logits_s, logits_t = (torch.randn(8, 3, 5, 5, dtype=torch.float64),
                                      torch.randn(8, 6, dtype=torch.float64),
                                      torch.randn(8, 6, dtype=torch.float64))
        rows = slice(rank * 4, rank * 4 + 4)
        norm = CpuSyncBatchNorm(3).double()
        x = images[rows].clone().requires_grad_()
        out = norm(x)
        (out * torch.arange(out.numel(), dtype=torch.float64).view_as(out)).sum().backward()
        s = logits_s[rows].clone().requires_grad_()
        loss = dist_loss(gather_batch(s), gather_batch(logits_t[rows]), 1.0, 1.0, 4.0)
        loss.backward()
        torch.save({"bn_out": out.detach(), "bn_grad": x.grad, "bn_weight_grad": norm.weight.grad,
                    "running_var": norm.running_var, "dist_loss": loss.detach(), "dist_grad": s.grad},
                   f"{result_file}.{rank}")
    finally:
        dist.destroy_process_group()


def test_sync_batchnorm_and_gathered_batch_equal_one_process_in_float64(tmp_path):
    """CpuSyncBatchNorm over 2 x 4 rows equals BatchNorm over 8 (outputs, input and weight
    gradients, running variance), and DIST on ``gather_batch``-ed logits equals DIST on the whole
    batch (value and each process's rows' gradient), to float64 rounding: the 1-vs-2-process gaps
    of deep float32 runs above are rounding, not semantics."""
    import torch.multiprocessing as mp
    from distillers.losses import dist_loss
    result = str(tmp_path / "result")
    mp.spawn(_float64_worker, args=(2, str(tmp_path / "init"), result), nprocs=2, join=True)
    parts = [torch.load(f"{result}.{rank}", weights_only=True) for rank in range(2)]
    torch.manual_seed(0)
    images, logits_s, logits_t = (torch.randn(8, 3, 5, 5, dtype=torch.float64),
                                  torch.randn(8, 6, dtype=torch.float64),
                                  torch.randn(8, 6, dtype=torch.float64))
    norm = torch.nn.BatchNorm2d(3).double()
    x = images.clone().requires_grad_()
    out = norm(x)
    weights = torch.cat([torch.arange(4 * 75, dtype=torch.float64)] * 2).view_as(out)
    (out * weights).sum().backward()
    close = dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.cat([p["bn_out"] for p in parts]), out.detach(), **close)
    torch.testing.assert_close(torch.cat([p["bn_grad"] for p in parts]), x.grad, **close)
    torch.testing.assert_close(sum(p["bn_weight_grad"] for p in parts), norm.weight.grad, **close)
    for p in parts:
        torch.testing.assert_close(p["running_var"], norm.running_var, **close)
    s = logits_s.clone().requires_grad_()
    loss = dist_loss(s, logits_t, 1.0, 1.0, 4.0)
    loss.backward()
    for p in parts:
        torch.testing.assert_close(p["dist_loss"], loss.detach(), **close)
    # each process's rows got 2x the one-process gradient (both processes computed the whole
    # loss); DDP's average over the 2 processes halves it back
    torch.testing.assert_close(torch.cat([p["dist_grad"] for p in parts]) / 2, s.grad, **close)


class _Logger:
    def __init__(self, enabled):
        self.enabled, self.lines = enabled, []

    def info(self, line):
        self.lines.append(line)

    def scalars(self, *_):
        pass


def _teacher_check_worker(rank: int, world_size: int, init_file: str, directory: str):
    """Rank 0 finds the teacher's result in teacher_checks.json; rank 1 would not (its output
    directory has none: what a write by another job between two reads looks like) and must
    take rank 0's answer (it has no val loader here: measuring would fail, and in a real job
    would wait in a collective rank 0 never joins)."""
    import torch.distributed as dist
    from launch.teacher_check import check_teacher
    from utils.config import load_config
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        output_dir = directory if rank == 0 else f"{directory}/elsewhere"
        cfg = load_config(str(REPO / "configs" / "demo.yaml"), [
            f"experiment.output_dir={output_dir}", f"teacher.checkpoint={directory}/teacher.pth"])
        result = check_teacher(cfg, teacher=None, val_loader=None, device=torch.device("cpu"),
                               fingerprint={"data": "x"}, logger=_Logger(enabled=rank == 0))
        (Path(directory) / f"result{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_every_process_follows_the_main_process_teacher_check_cache(tmp_path):
    import torch.multiprocessing as mp
    from launch.record import config_hash, sha256_of_file
    (tmp_path / "teacher.pth").write_bytes(b"weights")
    key = f"{sha256_of_file(str(tmp_path / 'teacher.pth'))}:{config_hash({'data': 'x'})}"
    (tmp_path / "teacher_checks.json").write_text(json.dumps(
        {key: {"top1": 79.42, "top5": 95.0, "samples": 10000}}))
    mp.spawn(_teacher_check_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2,
             join=True)
    results = [json.loads((tmp_path / f"result{rank}.json").read_text()) for rank in range(2)]
    assert results[0] == results[1]
    assert results[0]["cached"] and results[0]["top1"] == 79.42 and results[0]["samples"] == 10000


# --- CRD's gathered bank update, exact in float64 (2 gloo processes, no torchrun) -----------------
class LinearFeatures(torch.nn.Module):
    """A one-layer float64 "network" for CRD: pooled feature = linear(images), logits from it."""

    def __init__(self, width: int):
        super().__init__()
        self.body, self.head = torch.nn.Linear(12, width).double(), torch.nn.Linear(width, 4).double()

    def forward_features(self, images):
        pooled = self.body(images.flatten(1))
        return {"logits": self.head(pooled), "feats": [], "preact_feats": [], "pooled_feat": pooled}

    def forward(self, images):
        return self.forward_features(images)["logits"]


CRD_STEPS, CRD_BATCH, CRD_DATA = 2, 8, 20


def crd_float64_run(rank: int = 0, world_size: int = 1):
    """Two CRD steps on a float64 global batch of 8 (this process's rows ``rank::world_size``,
    as DistributedSampler shards): per step the losses and the parameters' gradients; then the
    method's state (bank, NCE constants, draw count)."""
    from distillers import build_distiller
    from utils.batch import Batch
    torch.manual_seed(0)
    targets = torch.arange(CRD_DATA) % 4
    d = build_distiller({"name": "crd", "nce_k": 6, "embed_dim": 5}, LinearFeatures(6), LinearFeatures(7),
                        input_shape=(3, 2, 2), train_size=CRD_DATA, train_targets=targets,
                        seed=0).train()
    data = torch.Generator().manual_seed(1)
    steps = []
    for _ in range(CRD_STEPS):
        images = torch.randn(CRD_BATCH, 3, 2, 2, dtype=torch.float64, generator=data)
        indices = torch.randperm(CRD_DATA, generator=data)[:CRD_BATCH]
        rows = slice(rank, None, world_size)
        d.zero_grad(set_to_none=True)
        _, losses = d(Batch(images[rows], targets[indices[rows]], indices[rows]), 1)
        sum(losses.values()).backward()
        steps.append({"losses": {k: v.detach() for k, v in losses.items()},
                      "grads": {k: p.grad.clone() for k, p in d.named_parameters()}})
    return {"steps": steps, "state": d.checkpoint_state()["distiller"]}


def _crd_float64_worker(rank: int, world_size: int, init_file: str, result_file: str):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world_size)
    try:
        torch.save(crd_float64_run(rank, world_size), f"{result_file}.{rank}")
    finally:
        dist.destroy_process_group()


def test_crd_gathered_bank_update_equals_one_process_in_float64(tmp_path):
    """2 processes x 4 == 1 process x 8 for CRD, to float64 rounding: the banks (updated with the
    gathered embeddings), the NCE constants (fixed from the global batch), the draws (made for
    the global batch, whatever its order), and the losses and gradients averaged over the
    processes as DDP averages them."""
    import torch.multiprocessing as mp
    result = str(tmp_path / "result")
    mp.spawn(_crd_float64_worker, args=(2, str(tmp_path / "init"), result), nprocs=2, join=True)
    parts = [torch.load(f"{result}.{rank}", weights_only=True) for rank in range(2)]
    one = crd_float64_run()
    close = dict(rtol=1e-12, atol=1e-12)
    for part in parts:
        assert part["state"].keys() == one["state"].keys()
        for key, value in one["state"].items():
            torch.testing.assert_close(part["state"][key], value, **close, msg=lambda m, key=key: f"{key}: {m}")
    for step, want in enumerate(one["steps"]):
        for kind in ("losses", "grads"):
            for key, value in want[kind].items():
                mean = sum(p["steps"][step][kind][key] for p in parts) / 2
                torch.testing.assert_close(mean, value, **close,
                                           msg=lambda m, key=key: f"step {step} {kind} {key}: {m}")
