"""The distiller contract, checked on every registered method with small CIFAR models: a method
registered tomorrow is tested here with no new test code."""
import copy
import re
from pathlib import Path
from typing import Dict

import pytest
import torch

import models
from distillers import build_distiller, distiller_defaults, get_distiller_class
from distillers.losses import zscore
from tests.methods import LOGIT_METHODS, METHODS
from utils.batch import Batch
from utils.errors import UserError

STUDENT_ARCH = {"one": "one_resnet32"}  # an online method's student is its multi-branch network
BATCH = 4
# The training set the builder describes (CRD's bank has a row per image and draws its default
# 16384 negatives from the other classes): batch() holds its first BATCH rows.
TRAIN_SIZE = 20000
TRAIN_TARGETS = torch.arange(TRAIN_SIZE) % 100
REPO = Path(__file__).resolve().parents[1]


def build(name, seed=0, student_arch=None, teacher_arch="resnet20", **overrides):
    torch.manual_seed(seed)
    student = models.build_model(student_arch or STUDENT_ARCH.get(name, "resnet8"), 100)
    teacher = models.build_model(teacher_arch, 100) if get_distiller_class(name).needs_teacher else None
    return build_distiller({"name": name, **overrides}, student, teacher, train_size=TRAIN_SIZE,
                           train_targets=TRAIN_TARGETS, seed=seed)


def batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(BATCH, 3, 32, 32, generator=generator)
    # a strong view for MLKD, equal to the weak one so that its losses are functions of the
    # logits these tests compare (tests/test_ctkd_mlkd.py feeds it two different views)
    return Batch(images, TRAIN_TARGETS[:BATCH].clone(), torch.arange(BATCH), strong_images=images.clone())


def train_step(distiller, epoch=5):
    distiller.train()
    logits, losses = distiller(batch(), epoch)
    sum(losses.values()).backward()
    return logits, losses


def weight_keys(name):
    """The weights in effect without standardization (``zscore_kd_weight`` is used only with it)."""
    return [k for k in distiller_defaults(name) if k != "zscore_kd_weight" and
            (k.endswith("_weight") or k in ("alpha", "beta", "gamma"))]


@pytest.mark.parametrize("name", LOGIT_METHODS)
def test_standardization_switch_selects_its_own_weight_and_temperature(name):
    plain = build(name, kd_weight=0.37, zscore_kd_weight=7.5, base_temperature=2.5)
    standardized = build(name, kd_weight=0.37, zscore_kd_weight=7.5, base_temperature=2.5,
                         logit_standardization=True)
    assert plain.kd_weight == 0.37 and "0.37" in plain.describe()
    assert standardized.kd_weight == 7.5 and "7.5" in standardized.describe()
    assert "2.5, z-score both sides" in standardized.describe()


@pytest.mark.parametrize("name", METHODS)
def test_training_forward_returns_logits_and_finite_scalar_losses(name):
    logits, losses = train_step(build(name))
    assert logits.shape == (BATCH, 100)
    assert losses and all(k.startswith("loss_") for k in losses)
    for loss in losses.values():
        assert loss.dim() == 0 and torch.isfinite(loss) and loss.requires_grad


@pytest.mark.parametrize("name", METHODS)
def test_step_trains_the_student_and_leaves_the_teacher_untouched(name):
    distiller = build(name)
    teacher_before = copy.deepcopy(distiller.teacher.state_dict()) if distiller.teacher else {}
    student_before = copy.deepcopy(distiller.student.state_dict())
    optimizer = torch.optim.SGD(distiller.parameters(), lr=0.1)
    train_step(distiller)
    optimizer.step()
    if distiller.teacher is not None:
        assert not distiller.teacher.training
        assert all(p.grad is None for p in distiller.teacher.parameters())
        after = distiller.teacher.state_dict()
        assert all(torch.equal(v, after[k]) for k, v in teacher_before.items())
    student_after = distiller.student.state_dict()
    assert any(not torch.equal(v, student_after[k]) for k, v in student_before.items())


@pytest.mark.parametrize("name", METHODS)
def test_eval_forward_returns_the_students_logits(name):
    distiller = build(name).eval()
    images = batch().images
    with torch.no_grad():
        out = distiller(images)
    if isinstance(out, dict):  # several named predictions: the first is the headline one
        assert list(out)[0] == "branch1" and "ensemble" in out
        assert all(v.shape == (BATCH, 100) for v in out.values())
    else:
        assert out.shape == (BATCH, 100)
        torch.testing.assert_close(out, distiller.student(images))


def eval_outputs(distiller, images):
    with torch.no_grad():
        out = distiller.eval()(images)
    return out if isinstance(out, dict) else {"logits": out}


@pytest.mark.parametrize("name", METHODS)
def test_checkpoint_state_round_trips_into_a_fresh_distiller(name):
    trained = build(name, seed=0)
    train_step(trained)
    restored = build(name, seed=1)
    restored.load_checkpoint_state(trained.checkpoint_state())
    expected = trained.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in restored.state_dict().items())
    images = batch(seed=1).images
    want = eval_outputs(trained, images)
    for key, got in eval_outputs(restored, images).items():
        torch.testing.assert_close(got, want[key])


@pytest.mark.parametrize("name", METHODS)
def test_teacher_is_neither_saved_nor_optimised(name):
    distiller = build(name)
    assert not any(k.startswith("teacher") for k in distiller.state_dict())
    state = distiller.checkpoint_state()
    assert list(state["model"]) == list(distiller.student.state_dict())
    if distiller.teacher is not None:
        teacher_ids = {id(p) for p in distiller.teacher.parameters()}
        assert not teacher_ids & {id(p) for p in distiller.parameters()}


@pytest.mark.parametrize("name", METHODS)
def test_describe_mentions_every_weight(name):
    weights = {key: round(0.11 + 0.01 * i, 2) for i, key in enumerate(weight_keys(name))}
    description = build(name, **weights).describe()
    assert description.startswith("loss = ")
    for key, value in weights.items():
        assert f"{value:g}" in description, f"{key}={value} missing from {description!r}"


@pytest.mark.parametrize("name, attribute", [("fitnet", "regressor"), ("srrl", "connector")])
def test_learnable_connector_is_optimised_and_checkpointed(name, attribute):
    distiller = build(name)
    module = getattr(distiller, attribute)
    assert {id(p) for p in module.parameters()} <= {id(p) for p in distiller.parameters()}
    saved = distiller.checkpoint_state()["distiller"]
    assert set(saved) == {f"{attribute}.{k}" for k in module.state_dict()}
    train_step(distiller)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_fitnet_regressor_maps_the_hint_layer_shapes():
    distiller = build("fitnet")  # resnet8 feats[2] 32×16×16 → resnet20 feats[2] 32×16×16
    assert distiller.regressor.conv.kernel_size == (1, 1)
    assert distiller.student.training  # the shape probe gave the student back in train mode


def test_fitnet_hint_layer_out_of_range_is_a_user_error():
    with pytest.raises(UserError, match="distiller.hint_layer=4"):
        build("fitnet", hint_layer=4)


@pytest.mark.parametrize("name", ["fitnet", "srrl"])
def test_feature_method_fits_a_student_whose_maps_differ_in_size(name):
    distiller = build(name, student_arch="MobileNetV2")  # feats 16×8×8 / 160×2×2 vs 32×16×16 / 64×8×8
    if name == "fitnet":
        assert type(distiller.regressor.conv).__name__ == "ConvTranspose2d"
    logits, losses = train_step(distiller)
    assert logits.shape == (BATCH, 100) and all(torch.isfinite(v) for v in losses.values())


def test_srrl_sr_loss_reaches_the_connector_through_the_frozen_teacher_head():
    distiller = build("srrl", ce_weight=0.0, feat_weight=0.0)
    train_step(distiller)
    assert distiller.connector[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in distiller.teacher.parameters())


def test_dkd_warms_up_linearly_over_its_warmup_epochs():
    distiller = build("dkd", warmup=20)
    distiller.train()
    first = distiller(batch(), 1)[1]["loss_kd"]
    full = distiller(batch(), 20)[1]["loss_kd"]
    later = distiller(batch(), 40)[1]["loss_kd"]
    torch.testing.assert_close(first * 20, full)
    torch.testing.assert_close(later, full)


class ZScored(torch.nn.Module):
    """A network whose logits come out Z-scored (``zscore``), for the plain twin below."""

    def __init__(self, network):
        super().__init__()
        self.network, self.num_classes = network, network.num_classes

    def forward(self, images):
        return zscore(self.network(images))


# Exceptions: a method whose switched temperature is another key than ``temperature``.
PLAIN_TWIN_KEYS = {"ctkd": {"t_start": 3.0}}   # the base temperature replaces its lowest one


@pytest.mark.parametrize("name", LOGIT_METHODS)
def test_logit_standardization_is_the_plain_loss_of_zscored_logits_at_the_base_temperature(name):
    """Sun et al. (CVPR 2024): the switch Z-scores both sides' logits and takes the temperature
    and weight tuned for them. Derived for every logit method from its own plain loss: the same
    method unswitched, on networks whose logits are already Z-scored (``zscore`` is idempotent to
    1e-7), at the base temperature and the Z-score weight. Each method's formula itself is
    tests/test_distiller_weights.py's (the ``*-zscore`` cases)."""
    distiller = build(name, logit_standardization=True, base_temperature=3.0, zscore_kd_weight=2.0)
    plain = build_distiller({"name": name, **PLAIN_TWIN_KEYS.get(name, {})}, ZScored(distiller.student),
                            ZScored(distiller.teacher.model))
    plain.temperature, plain.kd_weight = 3.0, 2.0
    data = batch()
    losses = distiller.train()(data, 100)[1]
    expected = plain.train()(data, 100)[1]
    torch.testing.assert_close(losses["loss_kd"], expected["loss_kd"])
    assert "T=3" in distiller.describe() or "τ=3" in distiller.describe()


def test_one_consistency_weight_counts_epochs_from_zero_by_default():
    distiller = build("one")
    assert distiller.consistency_weight(1) == pytest.approx(torch.tensor(-5.0).exp().item())
    assert distiller.consistency_weight(81) == 1.0
    assert build("one", epoch_offset=0).consistency_weight(80) == 1.0


def test_teacher_precision_follows_the_step_or_teacher_amp():
    """teacher.amp: None follows the step's autocast; "off" keeps the teacher in fp32 even inside
    a bf16 step; "bf16" runs the teacher alone in bf16 and hands float32 outputs to the loss."""
    teacher = build("kd").teacher
    torch.manual_seed(1)
    images = torch.randn(4, 3, 32, 32)
    fp32 = teacher.logits(Batch(images))
    teacher.amp = "bf16"
    bf16 = teacher.logits(Batch(images))
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)
    torch.testing.assert_close(bf16, fp32, rtol=0.05, atol=0.05)
    features = teacher.features(images)
    assert all(f.dtype == torch.float32 for f in features["feats"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        teacher.amp = "off"
        assert torch.equal(teacher.logits(Batch(images)), fp32)
        teacher.amp = None
        assert torch.equal(teacher.logits(Batch(images)).float(), bf16)


def test_teacher_amp_is_set_from_the_config(tmp_path):
    from launch.build import build_run, load_run_config
    from tests.runs import write_config
    for value, expected in (("auto", None), ("bf16", "bf16"), ("off", "off")):
        config = write_config(tmp_path, f"kd_{value}", distiller={"name": "kd"},
                              teacher={"arch": "resnet8", "allow_random": True, "amp": value},
                              extra={"data": {"train_size": 4}})
        _, distiller = build_run(load_run_config(str(config)))
        assert distiller.teacher.amp == expected


def readme_table(heading: str) -> Dict[str, str]:
    """The rows of the README table under the paragraph starting with ``heading``: the first
    column's `name` -> the rest of the row."""
    text = (REPO / "README.md").read_text()
    table = text[text.index(heading):].split("\n\n")[1]
    rows = [line.split(" | ", 1) for line in table.splitlines()[2:]]
    return {name.strip("| `"): rest.rstrip(" |") for name, rest in rows}


# documented once for every logit method, in the README's Z-score paragraph
ZSCORE_KEYS = ("logit_standardization", "base_temperature", "zscore_kd_weight")


def test_readme_methods_table_lists_every_method_with_its_constructors_defaults():
    rows = readme_table("## Methods")
    assert sorted(rows) == sorted(METHODS)
    for name, row in rows.items():
        written = dict(re.findall(r"`(\w+)` (\S+?)(?:,|$)", row.rsplit(" | ", 1)[1]))
        defaults = {k: v for k, v in distiller_defaults(name).items() if k not in ZSCORE_KEYS}
        assert written.keys() == defaults.keys(), name
        for key, value in defaults.items():
            same = (written[key] == str(value).lower() if isinstance(value, (bool, str)) else
                    float(written[key]) == value)
            assert same, f"README says {name}.{key} = {written[key]}, the constructor {value!r}"


def test_readme_loss_table_is_what_each_baseline_describes_at_its_defaults():
    rows = readme_table("What each baseline prints at start-up")
    student, teacher = models.build_model("resnet8x4", 100), models.build_model("resnet32x4", 100)
    for name, row in rows.items():
        method = build_distiller({"name": name}, student, teacher, train_size=TRAIN_SIZE,
                                 train_targets=TRAIN_TARGETS, seed=0)
        assert row == f"`{method.describe()}`", name
