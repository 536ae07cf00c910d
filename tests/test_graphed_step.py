"""``runtime.cuda_graph`` (engine/graphed.py) without a GPU: the orchestration around the capture.

``EagerReplay`` stands in for the CUDA graph (capture records the step, replay runs it on the
graph's input buffers), so a graphed run must equal an ungraphed one bit for bit: a batch not
copied into the buffers, a learning rate not refilled before a replay, an epoch baked into a
graph that is not captured again, or a smaller last batch replayed through the full batch's
buffers would each change the weights. The real capture is held to the eager step on a GPU by
tests/test_cuda.py.
"""
import copy
from types import SimpleNamespace

import pytest
import torch

import models
from datasets.gpu_loader import GpuCifarLoader
from datasets.synthetic import generate
from distillers import build_distiller, get_distiller_class
from engine.graphed import EagerReplay
from launch.combination import cuda_graph_refusals
from launch.training import build_trainer
from utils.config import Config, SolverConfig, replace_section
from utils.logger import RunLogger

BATCH, FULL_BATCHES, LAST = 16, 4, 8      # 4 full batches and a smaller last one an epoch


def trainer_for(module, cuda_graph: bool, clip_grad_norm=None, **runtime):
    train, _ = generate(10, 32, BATCH * FULL_BATCHES + LAST, 2)
    loader = GpuCifarLoader(train, batch_size=BATCH, mean=[0.5] * 3, std=[0.25] * 3, seed=3)
    loaders = SimpleNamespace(train=loader, val=[], set_epoch=loader.set_epoch)
    # a per-step warm-up, then a milestone: the lr changes at every step of epoch 1 and at epoch 2
    cfg = Config(solver=SolverConfig(epochs=3, lr=0.05, milestones=[2], warmup_epochs=1,
                                     clip_grad_norm=clip_grad_norm))
    cfg = replace_section(cfg, "runtime", device="cpu", cuda_graph=cuda_graph, **runtime)
    cfg = replace_section(cfg, "log", print_freq=100)
    return build_trainer(cfg, module, loaders, torch.device("cpu"), RunLogger(None),
                         graphs=EagerReplay() if cuda_graph else None)


def distiller(name: str, **section):
    torch.manual_seed(0)
    student = models.build_model("one_resnet32" if name == "one" else "resnet8", 10)
    teacher = models.build_model("resnet8", 10) if get_distiller_class(name).needs_teacher else None
    return build_distiller({"name": name, **section}, student, teacher)


@pytest.mark.parametrize("name, section", [("kd", {}), ("dkd", {"warmup": 3}), ("fitnet", {}),
                                           ("reviewkd", {"warmup_epochs": 3})])
def test_a_graphed_run_equals_the_eager_run_bit_for_bit(name, section):
    """DKD's and ReviewKD's warm-up scale the loss by the epoch: a graph kept across epochs
    would replay epoch 1's factor; FitNet and ReviewKD train modules of their own."""
    eager_module = distiller(name, **section)
    graphed_module = copy.deepcopy(eager_module)
    eager, graphed = trainer_for(eager_module, False), trainer_for(graphed_module, True)
    for epoch in (1, 2, 3):
        expected, got = eager.train_epoch(epoch), graphed.train_epoch(epoch)
        assert got["loss"] == expected["loss"], epoch
    # replayed: every full batch but the first two steps of the run and the first of each epoch
    assert graphed.train_step.replays == (FULL_BATCHES - 2) + 2 * (FULL_BATCHES - 1)
    for (key, a), b in zip(eager_module.state_dict().items(), graphed_module.state_dict().values()):
        assert torch.equal(a, b), key
    for a, b in zip(eager.optimizer.state_dict()["state"].values(),
                    graphed.optimizer.state_dict()["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    lrs = [group["lr"] for group in graphed.optimizer.param_groups]
    assert all(type(lr) is float for lr in lrs), "checkpoints hold the learning rate as a float"


def test_bf16_graphed_run_equals_the_eager_bf16_run():
    eager_module = distiller("kd")
    graphed_module = copy.deepcopy(eager_module)
    eager, graphed = trainer_for(eager_module, False, amp="bf16"), trainer_for(graphed_module, True, amp="bf16")
    for epoch in (1, 2):
        assert graphed.train_epoch(epoch)["loss"] == eager.train_epoch(epoch)["loss"]


def test_a_graphed_run_with_gradient_clipping_equals_the_eager_run():
    """The clipping (solver.clip_grad_norm) is part of the step the graph replays, so each
    replay clips its own batch's gradients (torch's clip reads nothing back from the device;
    its capture on a GPU is not yet run)."""
    eager_module = distiller("kd")
    graphed_module = copy.deepcopy(eager_module)
    eager, graphed = trainer_for(eager_module, False, 0.5), trainer_for(graphed_module, True, 0.5)
    assert graphed.train_epoch(1)["loss"] == eager.train_epoch(1)["loss"]
    assert graphed.train_step.replays == FULL_BATCHES - 2
    for (key, a), b in zip(eager_module.state_dict().items(), graphed_module.state_dict().values()):
        assert torch.equal(a, b), key


def refusals(name="kd", device="cuda", distributed=False, **runtime):
    cfg = Config(solver=SolverConfig(optimizer=runtime.pop("optimizer", "sgd"), dot_delta=0.075))
    cfg = replace_section(cfg, "runtime", cuda_graph=True, **runtime)
    return cuda_graph_refusals(cfg, get_distiller_class(name), device, 2 if distributed else 1)


def test_what_cannot_be_captured_is_refused_with_its_reason():
    assert refusals() == []
    assert refusals(compile=True, amp="bf16") == []
    assert refusals(device="cpu") == ["it needs a CUDA device; this run is on cpu"]
    assert "DDP" in refusals(distributed=True)[0]
    assert "GradScaler" in refusals(amp="fp16")[0]
    assert "DOT" in refusals(optimizer="dot")[0]
    assert "reduce-overhead" in refusals(compile="reduce-overhead")[0]
    assert refusals("crd")[0].startswith("CRD draws each batch's negatives")
    assert refusals("kdsvd")[0].startswith("KDSVD reads the device")


def test_train_py_refuses_a_cuda_graph_on_the_cpu_in_one_line(tmp_path, capsys):
    from tests.runs import one_line, train_here, write_config
    config = write_config(tmp_path, "graphed", epochs=1, distiller={"name": "kd"},
                          teacher={"arch": "resnet8", "allow_random": True})
    assert train_here("--config", str(config), "runtime.cuda_graph=true") == 2
    line = one_line(capsys.readouterr().err)
    assert "runtime.cuda_graph=true cannot run here: it needs a CUDA device; this run is on cpu" in line
    assert not (tmp_path / "runs/graphed/last.pth").exists()


class RefusingCapture(EagerReplay):
    """A capture that fails, as CUDA's does on an operation a graph cannot hold."""

    def capture(self, step):
        raise RuntimeError("operation not permitted when stream is capturing")


def test_a_failed_capture_is_one_line_and_the_run_goes_on_eager_with_the_same_results(capsys):
    eager_module = distiller("kd")
    graphed_module = copy.deepcopy(eager_module)
    eager, graphed = trainer_for(eager_module, False), trainer_for(graphed_module, True)
    graphed.train_step.graphs = RefusingCapture()
    for epoch in (1, 2):
        assert graphed.train_epoch(epoch)["loss"] == eager.train_epoch(epoch)["loss"]
    assert graphed.train_step.replays == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "runtime.cuda_graph" in line]
    assert said == ["runtime.cuda_graph: the step could not be captured (operation not permitted "
                    "when stream is capturing); the run goes on without CUDA graphs (same results, slower)"]
    for (key, a), b in zip(eager_module.state_dict().items(), graphed_module.state_dict().values()):
        assert torch.equal(a, b), key
