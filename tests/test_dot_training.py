"""DOT in training (``solver.optimizer: dot``): the trainer's step is the authors' order of calls
on DistillationOrientedSGD (also under fp16 loss scaling, where an overflow in either backward
pass skips the step), the default stays plain SGD, wrong settings are one-line errors, and a
resumed DOT run equals the uninterrupted one bit for bit. 2 processes == 1 process: in
tests/test_distributed.py (slow)."""
import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import yaml

from engine.checkpoint import save_checkpoint
from engine.dot import DistillationOrientedSGD
from launch.build import load_run_config
from launch.schedule import describe_schedule
from launch.training import build_trainer
from tests.runs import load, run_here, write_config
from utils.batch import Batch
from utils.config import Config, SolverConfig, load_config, replace_section
from utils.errors import UserError
from utils.logger import RunLogger

STEPS, LR, MOMENTUM, DELTA, WD = 4, 0.1, 0.9, 0.075, 5e-4


class TwoLossNet(torch.nn.Module):
    """A tiny method: CE on the logits (plus a parameter only the task loss reaches), a KL to a
    fixed "teacher" and a feature loss through a connector only the distillation side reaches."""

    def __init__(self, names=("loss_ce", "loss_kd", "loss_feat")):
        super().__init__()
        self.names = names
        self.trunk = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                         torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                         torch.nn.Flatten())
        self.head = torch.nn.Linear(4, 5)
        self.connector = torch.nn.Linear(4, 3)
        self.task_only = torch.nn.Parameter(torch.zeros(5))
        self.register_buffer("teacher", torch.randn(3, 5))
        self.register_buffer("feature_target", torch.randn(3))

    def forward(self, batch, epoch=None):
        feats = self.trunk(batch.images)
        logits = self.head(feats)
        if not self.training:
            return logits
        teacher = batch.images.mean((2, 3)) @ self.teacher
        losses = {"loss_ce": F.cross_entropy(logits + self.task_only, batch.targets),
                  "loss_kd": F.kl_div(F.log_softmax(logits / 4, 1), F.softmax(teacher / 4, 1),
                                      reduction="batchmean") * 16,
                  "loss_feat": (self.connector(feats) - self.feature_target).pow(2).mean()}
        return logits, {name: losses[name] for name in self.names}


def batches(count=STEPS):
    generator = torch.Generator().manual_seed(1)
    return [Batch(torch.randn(8, 3, 6, 6, generator=generator),
                  torch.randint(0, 5, (8,), generator=generator)) for _ in range(count)]


def trainer_for(module, optimizer="dot", amp="off", warmup_epochs=1):
    cfg = Config(solver=SolverConfig(epochs=2, lr=LR, momentum=MOMENTUM, weight_decay=WD,
                                     milestones=[], warmup_epochs=warmup_epochs,
                                     optimizer=optimizer, dot_delta=DELTA))
    cfg = replace_section(cfg, "runtime", device="cpu", amp=amp)
    cfg = replace_section(cfg, "log", print_freq=100)
    loaders = SimpleNamespace(train=batches(), val=[], set_epoch=lambda epoch: None)
    return build_trainer(cfg, module, loaders, torch.device("cpu"), RunLogger(None))


def recipe_lr(step):
    """Warm-up over the first epoch (STEPS steps), then the full rate (no milestones)."""
    return LR * min(1.0, (step + 1) / STEPS)


def assert_same_state(a, b):
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_trainer_with_dot_equals_a_hand_written_loop_of_distillation_oriented_sgd():
    """Two epochs (through the warm-up): the authors' calls, written out, on a copy of the
    module; the distillation loss is every loss but "loss_ce". Bit-equal weights and buffers."""
    torch.manual_seed(0)
    module = TwoLossNet()
    by_hand = copy.deepcopy(module)
    trainer = trainer_for(module)
    for epoch in (1, 2):
        trainer.train_epoch(epoch)
    optimizer = DistillationOrientedSGD(by_hand.parameters(), lr=LR, momentum=MOMENTUM - DELTA,
                                        momentum_kd=MOMENTUM + DELTA, weight_decay=WD)
    by_hand.train()
    for step, batch in enumerate(batches() * 2):
        optimizer.param_groups[0]["lr"] = recipe_lr(step)
        _, losses = by_hand(batch, step // STEPS + 1)
        optimizer.zero_grad(set_to_none=True)
        (losses["loss_kd"] + losses["loss_feat"]).backward(retain_graph=True)
        optimizer.step_kd()
        optimizer.zero_grad(set_to_none=True)
        losses["loss_ce"].backward()
        optimizer.step()
    assert trainer.state.step == 2 * STEPS
    assert_same_state(module, by_hand)
    kinds = {name: set(trainer.optimizer.state[p]) for name, p in module.named_parameters()}
    assert kinds["head.weight"] == {"momentum_buffer", "momentum_kd_buffer"}
    assert kinds["connector.weight"] == {"momentum_kd_buffer"}     # distillation side only
    assert kinds["task_only"] == {"momentum_buffer"}               # task side only


def test_sgd_is_the_default_and_steps_on_the_summed_loss_as_before():
    torch.manual_seed(0)
    module = TwoLossNet()
    by_hand = copy.deepcopy(module)
    assert SolverConfig().optimizer == "sgd"
    trainer = trainer_for(module, optimizer=SolverConfig().optimizer)
    assert type(trainer.optimizer) is torch.optim.SGD
    trainer.train_epoch(1)
    optimizer = torch.optim.SGD(by_hand.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    by_hand.train()
    for step, batch in enumerate(batches()):
        optimizer.param_groups[0]["lr"] = recipe_lr(step)
        _, losses = by_hand(batch, 1)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
    assert_same_state(module, by_hand)


def test_dot_trains_under_bf16_autocast():
    torch.manual_seed(0)
    module = TwoLossNet()
    before = copy.deepcopy(module)
    stats = trainer_for(module, amp="bf16").train_epoch(1)
    assert torch.isfinite(torch.tensor(stats["loss"]))
    for (name, p), q in zip(module.named_parameters(), before.parameters()):
        assert torch.isfinite(p).all() and not torch.equal(p, q), name


def test_dot_under_fp16_equals_the_hand_written_loop_with_the_loss_scale():
    """Each loss scaled by the GradScaler's scale (2^16), each pass's gradients unscaled before
    the optimizer takes them: the authors' calls with the scaling written out, bit for bit."""
    torch.manual_seed(0)
    module = TwoLossNet()
    by_hand = copy.deepcopy(module)
    trainer = trainer_for(module, amp="fp16")
    trainer.train_epoch(1)
    scale = trainer.scaler.get_scale()
    assert scale == 2.0 ** 16   # no overflow, no growth within 4 steps
    optimizer = DistillationOrientedSGD(by_hand.parameters(), lr=LR, momentum=MOMENTUM - DELTA,
                                        momentum_kd=MOMENTUM + DELTA, weight_decay=WD)
    by_hand.train()

    def unscale():
        for p in by_hand.parameters():
            if p.grad is not None:
                p.grad.mul_(1.0 / scale)

    for step, batch in enumerate(batches()):
        optimizer.param_groups[0]["lr"] = recipe_lr(step)
        with torch.autocast("cpu", dtype=torch.float16):
            _, losses = by_hand(batch, 1)
        optimizer.zero_grad(set_to_none=True)
        ((losses["loss_kd"] + losses["loss_feat"]) * scale).backward(retain_graph=True)
        unscale()
        optimizer.step_kd()
        optimizer.zero_grad(set_to_none=True)
        (losses["loss_ce"] * scale).backward()
        unscale()
        optimizer.step()
    assert_same_state(module, by_hand)


class Overflowing(torch.nn.Module):
    """CE and a logit penalty; ``huge`` multiplies one of them by 1e35, so that loss, scaled by
    2^16, overflows float32 in its backward pass."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(3 * 6 * 6, 5)
        self.huge = None

    def forward(self, batch, epoch=None):
        logits = self.head(batch.images.flatten(1))
        losses = {"loss_ce": F.cross_entropy(logits, batch.targets), "loss_kd": logits.float().pow(2).mean()}
        if self.huge:
            losses[self.huge] = losses[self.huge] * 1e35
        return logits, losses


@pytest.mark.filterwarnings("ignore:Detected call of .lr_scheduler.step")   # the skipped step
@pytest.mark.parametrize("huge", ["loss_kd", "loss_ce"])
def test_an_fp16_overflow_in_either_pass_skips_the_whole_dot_step(huge):
    """Neither weights nor momentum buffers move, the scale is halved; the next finite step
    trains at the lower scale."""
    torch.manual_seed(0)
    module = Overflowing()
    before = copy.deepcopy(module)
    trainer = trainer_for(module, amp="fp16", warmup_epochs=0)
    batch = batches(1)[0]
    module.huge = huge
    trainer.step(batch, 1)
    for p, q in zip(module.parameters(), before.parameters()):
        assert torch.equal(p, q)
    assert not trainer.optimizer.state and trainer.scaler.get_scale() == 2.0 ** 15
    module.huge = None
    trainer.step(batch, 1)
    assert not torch.equal(module.head.weight, before.head.weight)
    assert set(trainer.optimizer.state[module.head.weight]) == {"momentum_buffer", "momentum_kd_buffer"}
    assert trainer.scaler.get_scale() == 2.0 ** 15


@pytest.mark.parametrize("names", [("loss_kd", "loss_feat"), ("loss_ce",)])
def test_a_method_without_the_task_loss_or_without_a_distillation_loss_is_one_line(names):
    """Raised at the first step, before any gradient is applied."""
    torch.manual_seed(0)
    module = TwoLossNet(names)
    before = copy.deepcopy(module)
    with pytest.raises(UserError, match="needs the task loss 'loss_ce' and at least one other") as err:
        trainer_for(module).train_epoch(1)
    assert "\n" not in str(err.value)
    for p, q in zip(module.parameters(), before.parameters()):
        assert torch.equal(p, q)


@pytest.fixture
def dot_config(tmp_path):
    path = tmp_path / "dot.yaml"
    path.write_text(yaml.safe_dump({"solver": {"optimizer": "dot"}, "distiller": {"name": "kd"},
                                    "teacher": {"arch": "resnet8"}}))
    return str(path)


@pytest.mark.parametrize("overrides, message", [
    (["solver.dot_delta=0.95"], "solver.dot_delta=0.95 (in the command-line overrides) must be at "
                                "most solver.momentum=0.9 (in the defaults (utils/config.py))"),
    (["solver.momentum=0.95"], "solver.momentum=0.95 (in the command-line overrides) + "
                               "solver.dot_delta=0.075 (in the defaults (utils/config.py)) must stay below 1"),
    (["solver.dot_delta=-0.01"], "'solver.dot_delta' in the command-line overrides must be in [0, 1)"),
    (["solver.optimizer=adam"], "'solver.optimizer' in the command-line overrides must be one of 'sgd', 'dot'"),
    (["runtime.compile=true"], "'runtime.compile' in the command-line overrides does not go with"),
    (["solver.nesterov=true"], "DOT has no Nesterov variant"),
])
def test_wrong_dot_settings_are_one_line_errors(dot_config, overrides, message):
    with pytest.raises(UserError) as err:
        load_run_config(dot_config, overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_dot_rules_do_not_apply_to_sgd_and_the_recipe_values_pass(dot_config):
    load_config(dot_config, ["solver.optimizer=sgd", "solver.momentum=0", "runtime.amp=fp16"])
    assert load_config(dot_config, ["solver.dot_delta=0.09"]).solver.dot_delta == 0.09
    assert load_config(dot_config, ["runtime.amp=bf16"]).runtime.amp == "bf16"
    assert load_config(dot_config, ["runtime.amp=fp16"]).runtime.amp == "fp16"


def test_start_up_summary_names_the_optimizer():
    assert describe_schedule(SolverConfig(optimizer="dot"), 10)[0] == \
        "optimizer: DOT (momentum 0.825 task / 0.975 distillation, weight decay 0.0005)"
    assert describe_schedule(SolverConfig(), 10)[0] == "optimizer: SGD (momentum 0.9, weight decay 0.0005)"


def test_trainer_resumed_with_dot_equals_the_uninterrupted_trainer(tmp_path):
    """Epoch 1, a checkpoint written and read back, a fresh trainer resumed from it for epoch 2:
    bit-equal to two epochs in one go (both momentum buffers travel in the checkpoint); a trainer
    with plain SGD refuses the checkpoint in one line."""
    torch.manual_seed(0)
    module = TwoLossNet()
    fresh, plain = copy.deepcopy(module), copy.deepcopy(module)
    uninterrupted = trainer_for(copy.deepcopy(module))
    for epoch in (1, 2):
        uninterrupted.train_epoch(epoch)
    stopped = trainer_for(module)
    stopped.train_epoch(1)
    stopped.state.epoch = 1
    path = str(tmp_path / "last.pth")
    save_checkpoint(stopped._checkpoint({}), path)
    resumed = trainer_for(fresh)
    resumed.resume(path)
    resumed.train_epoch(2)
    assert resumed.state.step == uninterrupted.state.step == 2 * STEPS
    assert_same_state(fresh, uninterrupted.module)
    for p, q in zip(fresh.parameters(), uninterrupted.module.parameters()):
        a, b = resumed.optimizer.state[p], uninterrupted.optimizer.state[q]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(UserError, match="it was trained with solver.optimizer=dot, this run has sgd"):
        trainer_for(plain, optimizer="sgd").resume(path)


@pytest.mark.slow
def test_resumed_dot_run_equals_uninterrupted_run_and_refuses_sgd(tmp_path):
    """train.py end to end (KD + DOT, 2 x 4 steps): stopped after epoch 1 and resumed, bit-equal
    to the uninterrupted run; resuming it with plain SGD is refused (exit code 2). All in this
    process (``run_here``): the runs compared share one thread count."""
    spec = dict(student="resnet8", distiller={"name": "kd"}, teacher={"arch": "resnet8", "allow_random": True},
                extra={"data": {"train_size": 128, "val_size": 64}, "solver": {"optimizer": "dot"}})
    full = write_config(tmp_path, "full", epochs=2, **spec)
    assert run_here("train.py", "--config", str(full)).returncode == 0
    part = write_config(tmp_path, "part", epochs=2, **spec)
    first = run_here("train.py", "--config", str(part), "solver.epochs=1", "solver.milestones=[]")
    assert first.returncode == 0, first.stderr
    assert "optimizer: DOT (momentum 0.825 task / 0.975 distillation" in first.stdout
    state = load(tmp_path / "runs/part/last.pth")["optimizer"]["state"]
    assert all({"momentum_buffer", "momentum_kd_buffer"} <= set(s) for s in state.values())
    resumed = run_here("train.py", "--config", str(part), "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    a, b = load(tmp_path / "runs/full/last.pth"), load(tmp_path / "runs/part/last.pth")
    assert a["epoch"] == b["epoch"] == 2
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for index, buffers in a["optimizer"]["state"].items():
        for name, value in buffers.items():
            assert torch.equal(value, b["optimizer"]["state"][index][name]), (index, name)
    refused = run_here("train.py", "--config", str(part), "--resume", "auto", "solver.epochs=3",
                         "solver.optimizer=sgd")
    assert refused.returncode == 2
    assert "it was trained with solver.optimizer=dot, this run has sgd" in refused.stderr


def test_a_missing_teacher_trained_first_uses_sgd(tmp_path):
    """teacher.train_epochs trains the teacher with CE alone, which DOT cannot split."""
    from launch.build import teacher_run_config
    path = tmp_path / "kd_dot.yaml"
    path.write_text(yaml.safe_dump({"distiller": {"name": "kd"}, "solver": {"optimizer": "dot"},
                                    "teacher": {"arch": "resnet8", "train_epochs": 2,
                                                "checkpoint": str(tmp_path / "teacher/last.pth")}}))
    cfg = load_config(str(path))
    assert cfg.solver.optimizer == "dot" and teacher_run_config(cfg).solver.optimizer == "sgd"
