"""VID, OFD and ReviewKD, the baselines with learnable parts: each method's whole training
forward equals the original's (the float64 oracle of reference/BASELINES.md, made by running
mdistiller's own ``forward_train`` on stub networks), so each taps the maps the original taps and
builds its modules as the original does; the modules are optimised and checkpointed; pairs of
networks that cannot work are one line."""
from pathlib import Path

import pytest
import torch
from torch import nn

import models
from distillers import build_distiller, resolve_distiller_section
from distillers.ofd_losses import ofd_loss, ofd_margin
from tests import baseline_inputs as bi
from tests.test_distillers import batch, build, train_step
from utils.batch import Batch
from utils.errors import UserError

ORACLE = torch.load(Path(__file__).parent / "reference" / "baseline_losses.pt", weights_only=True)
MAP_CASES = list(bi.CASES)


class FixedNetwork(nn.Module):
    """Stands in for a network: ``forward_features`` returns fixed float64 maps (after a dummy
    stem, as ``feats[0]``) whatever the images; ``bns`` are its BatchNorms before each stage's
    ReLU. Its one parameter only tells the distiller the device and dtype."""

    def __init__(self, feats, preacts, pooled, bns=None):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros((), dtype=torch.float64))
        stem = torch.zeros(feats[0].shape[0], 1, 2, 2, dtype=torch.float64)
        self.out = {"feats": [stem, *feats], "preact_feats": [stem, *preacts], "pooled_feat": pooled}
        self.bns = nn.ModuleList(bns or [])

    def forward_features(self, images):
        logits = torch.zeros(self.out["pooled_feat"].shape[0], 3, dtype=torch.float64)
        return {"logits": logits, **self.out}

    def bn_before_relu(self):
        return [None, *self.bns]


def leaves(tensors):
    return [t.clone().requires_grad_(True) for t in tensors]


def oracle_step(distiller, student_leaves, epoch=1):
    """One training forward (all weights 1) and the backward of its feature loss."""
    n = student_leaves[0].shape[0]
    data = Batch(torch.zeros(n, 3, 2, 2, dtype=torch.float64), torch.zeros(n, dtype=torch.long))
    _, losses = distiller.double().train()(data, epoch)
    losses["loss_feat"].backward()
    return losses["loss_feat"]


def assert_grads(tensors, expected):
    assert len(tensors) == len(expected)
    for t, e in zip(tensors, expected):
        bi.assert_matches(t.grad, e)


def assert_param_grads(module, expected):
    grads = {k: p.grad for k, p in module.named_parameters()}
    assert grads.keys() == expected.keys()
    for k, g in grads.items():
        bi.assert_matches(g, expected[k])


def build_on_stubs(name, student, teacher, **config):
    return build_distiller({"name": name, "feat_weight": 1.0, **config}, student, teacher,
                           input_shape=(3, 2, 2))


@pytest.mark.parametrize("learn_variance", [False, True])
@pytest.mark.parametrize("case", MAP_CASES)
def test_vid_training_forward_equals_the_original(case, learn_variance):
    x, expected = bi.case_inputs(case), ORACLE["cases"][case]["vid"]
    s = leaves(x["student_feats"])
    student = FixedNetwork(s, s, x["student_pooled_maps_batch"])
    teacher = FixedNetwork(x["teacher_feats"], x["teacher_feats"], x["teacher_pooled_maps_batch"])
    distiller = build_on_stubs("vid", student, teacher, learn_variance=learn_variance)
    for i, regressor in enumerate(distiller.regressors):
        assert list(regressor.state_dict()) == expected["regressor_keys"][i]
        bi.fill_prefixed_(regressor, f"regressors.{i}.")
    for ours, original in zip(distiller.log_scales.split(distiller.widths), expected["initial_log_scales"]):
        assert torch.equal(ours.detach().double(), original)   # both float32 values
    bi.assert_matches(oracle_step(distiller, s), expected["loss"])
    assert_grads(s, expected["grad_student"])
    for regressor, grads in zip(distiller.regressors, expected["grad_regressors"]):
        assert_param_grads(regressor, grads)
    if learn_variance:
        for grad, want in zip(distiller.log_scales.grad.split(distiller.widths), expected["grad_log_scales"]):
            bi.assert_matches(grad, want)
    else:
        assert not distiller.log_scales.requires_grad


@pytest.mark.parametrize("case", MAP_CASES)
def test_ofd_training_forward_equals_the_original(case):
    x, expected = bi.case_inputs(case), ORACLE["cases"][case]["ofd"]
    bns = []
    for weight, bias in zip(expected["bn_weight"], expected["bn_bias"]):
        bn = nn.BatchNorm2d(len(weight)).double()
        with torch.no_grad():
            bn.weight.copy_(weight)
            bn.bias.copy_(bias)
        bns.append(bn)
    s = leaves(x["student_preacts"])
    student = FixedNetwork(s, s, x["student_pooled_maps_batch"])
    teacher = FixedNetwork(x["teacher_preacts"], x["teacher_preacts"], x["teacher_pooled_maps_batch"], bns)
    distiller = build_on_stubs("ofd", student, teacher)
    for i, connector in enumerate(distiller.connectors):
        assert list(connector.state_dict()) == expected["connector_keys"][i]
        bi.fill_prefixed_(connector, f"connectors.connectors.{i}.")
    # the margins are the original's float32 values
    assert torch.equal(distiller.margins.double(), torch.cat(expected["margins"]))
    bi.assert_matches(oracle_step(distiller, s), expected["loss"])
    assert_grads(s, expected["grad_student"])
    for connector, grads in zip(distiller.connectors, expected["grad_connectors"]):
        assert_param_grads(connector, grads)


@pytest.mark.parametrize("case", MAP_CASES)
def test_reviewkd_training_forward_equals_the_original(case):
    x, expected = bi.case_inputs(case), ORACLE["cases"][case]["reviewkd"]
    s_maps = leaves(x["student_feats"])
    s_pooled = leaves([x["student_pooled_maps_batch"]])[0]
    student = FixedNetwork(s_maps, s_maps, s_pooled)
    teacher = FixedNetwork(x["teacher_feats"], x["teacher_preacts"], x["teacher_pooled_maps_batch"])
    distiller = build_on_stubs("reviewkd", student, teacher, warmup_epochs=1)
    assert list(distiller.fusion.abfs.state_dict()) == expected["abfs_keys"]
    bi.fill_prefixed_(distiller.fusion.abfs, "abfs.")
    bi.assert_matches(oracle_step(distiller, s_maps + [s_pooled], epoch=1), expected["loss"])
    assert_grads(s_maps + [s_pooled], expected["grad_student"])
    assert_param_grads(distiller.fusion.abfs, expected["grad_abfs"])


# ---- the learnable modules belong to the distiller --------------------------------------------
MODULES = {"vid": "regressors", "ofd": "connectors", "reviewkd": "fusion"}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_learnable_modules_are_optimised_and_checkpointed(name):
    distiller = build(name)
    module = getattr(distiller, MODULES[name])
    assert {id(p) for p in module.parameters()} <= {id(p) for p in distiller.parameters()}
    assert set(distiller.checkpoint_state()["distiller"]) == {f"{MODULES[name]}.{k}" for k in module.state_dict()}
    train_step(distiller, epoch=20)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_vid_variances_stay_fixed_unless_learnt():
    fixed = build("vid")
    assert not any(p is fixed.log_scales for p in fixed.parameters())
    assert "log_scales" not in fixed.state_dict()          # as the original's state dict
    learnt = build("vid", learn_variance=True)
    assert any(p is learnt.log_scales for p in learnt.parameters())
    assert "log_scales" in learnt.checkpoint_state()["distiller"]
    before = learnt.log_scales.detach().clone()
    optimizer = torch.optim.SGD(learnt.parameters(), lr=0.1)
    train_step(learnt)
    optimizer.step()
    assert not torch.equal(learnt.log_scales.detach(), before)
    torch.testing.assert_close(torch.nn.functional.softplus(before) + 1e-5,
                               torch.full_like(before, 5.0))


# ---- ReviewKD: the probe gives the original's configured shapes and channels -------------------
# mdistiller's values (cfg.py defaults for resnet32x4 -> resnet8x4, configs/imagenet/*/reviewkd.yaml),
# deepest first as it lists SHAPES / OUT_SHAPES, shallowest first for the channels; ABF width: its
# min(512, IN_CHANNELS[-1]) (its MAX_MID_CHANNEL is never read).
REVIEWKD_PAIRS = {
    "res32x4_res8x4": ("cifar100", "resnet32x4", "resnet8x4", False,
                       [1, 8, 16, 32], [1, 8, 16, 32], [64, 128, 256, 256], [64, 128, 256, 256], 256),
    "r34_r18": ("imagenet", "ResNet34", "ResNet18", True, [1, 7, 14, 28, 56], [1, 7, 14, 28, 56],
                [64, 128, 256, 512, 512], [64, 128, 256, 512, 512], 512),
    "r50_mv1": ("imagenet", "ResNet50", "MobileNetV1", True, [1, 7, 14, 28, 56], [1, 7, 14, 28, 56],
                [128, 256, 512, 1024, 1024], [256, 512, 1024, 2048, 2048], 512),
}


@pytest.mark.parametrize("pair", sorted(REVIEWKD_PAIRS))
def test_reviewkd_probe_gives_the_originals_configured_shapes(pair):
    dataset, teacher_arch, student_arch, preact, shapes, out_shapes, ins, outs, mid = REVIEWKD_PAIRS[pair]
    size = 224 if dataset == "imagenet" else 32
    classes = 1000 if dataset == "imagenet" else 100
    with torch.device("meta"):
        student = models.build_model(student_arch, classes, dataset=dataset)
        teacher = models.build_model(teacher_arch, classes, dataset=dataset)
        distiller = build_distiller({"name": "reviewkd", "student_preact": preact}, student, teacher,
                                    input_shape=(3, size, size))
    assert [h for _, h, _ in distiller.student_levels][::-1] == shapes
    assert [h for _, h, _ in distiller.teacher_levels][::-1] == out_shapes
    abfs = list(distiller.fusion.abfs)[::-1]   # shallowest first
    assert [abf.conv1[0].in_channels for abf in abfs] == ins
    assert [abf.conv2[0].out_channels for abf in abfs] == outs
    assert {abf.conv1[0].out_channels for abf in abfs} == {mid} == {distiller.mid_channels}


def test_reviewkd_caps_the_abf_width_and_warms_up_linearly():
    assert build("reviewkd", max_mid_channels=16).fusion.abfs[0].conv1[0].out_channels == 16
    distiller = build("reviewkd", warmup_epochs=20).train()
    first, full, later = (distiller(batch(), epoch)[1]["loss_feat"] for epoch in (1, 20, 40))
    torch.testing.assert_close(first * 20, full)
    torch.testing.assert_close(later, full)


# ---- OFD: margins from the teacher; its teacher in eval mode (a departure, measured) -----------
def test_ofd_margins_come_from_the_teachers_batchnorm_before_each_stage_relu():
    distiller = build("ofd")
    bns = distiller.teacher.model.bn_before_relu()[-3:]
    expected = torch.cat([ofd_margin(bn.weight, bn.bias).float() for bn in bns])
    assert torch.equal(distiller.margins, expected)
    assert "margins" not in distiller.state_dict()   # recomputed from the teacher, never saved


def test_ofd_teacher_maps_use_running_statistics_not_the_batchs():
    """The original's teacher runs in train mode (batch statistics); ours stays in eval mode."""
    distiller = build("ofd", ce_weight=0.0).train()
    data = batch()
    loss = distiller(data, 1)[1]["loss_feat"]
    student = distiller.student.forward_features(data.images)["preact_feats"][-3:]
    connected = [c(s) for c, s in zip(distiller.connectors, student)]
    margins = distiller.margins.split(distiller.widths)

    def loss_with_teacher_in(mode):
        teacher = distiller.teacher.model.train(mode)
        with torch.no_grad():
            maps = teacher.forward_features(data.images)["preact_feats"][-3:]
        teacher.eval()
        return 0.001 * ofd_loss(connected, maps, margins)

    torch.testing.assert_close(loss, loss_with_teacher_in(False))
    assert not torch.allclose(loss, loss_with_teacher_in(True))


def test_vid_pairs_the_shallowest_stages_when_the_teacher_has_more():
    """resnet8 has 3 stage maps after the stem, vgg8 4: the first 3 pair up, as the original's
    zip pairs them (one regressor each), and the start-up line says so."""
    distiller = build_distiller({"name": "vid"}, models.build_model("resnet8", 100),
                                models.build_model("vgg8", 100))
    assert len(distiller.regressors) == 3 and "over feats[1:4]" in distiller.describe()


# ---- pairs that cannot work, and bad values: one line ----------------------------------------
@pytest.mark.parametrize("name, student, teacher, overrides, message", [
    ("vid", "resnet8", "resnet20", {"init_pred_var": 1e-6}, "must exceed distiller.eps"),
    ("ofd", "resnet8", "ShuffleV1", {}, "the teacher ShuffleNet has none"),
])
def test_a_pair_that_cannot_work_is_one_user_error_line(name, student, teacher, overrides, message):
    with pytest.raises(UserError, match=message) as err:
        build_distiller({"name": name, **overrides}, models.build_model(student, 100),
                        models.build_model(teacher, 100))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name, key, value, message", [
    ("vid", "eps", 0.0, "must be > 0"), ("vid", "init_pred_var", -1.0, "must be > 0"),
    ("ofd", "connector_kernel_size", 0, "must be >= 1"), ("reviewkd", "warmup_epochs", 0, "must be >= 1"),
    ("reviewkd", "max_mid_channels", 0, "must be >= 1"), ("vid", "learn_variance", 1, "must be true or false"),
])
def test_values_out_of_range_are_refused_before_anything_is_built(name, key, value, message):
    with pytest.raises(UserError, match=f"'distiller.{key}' in config {message}"):
        resolve_distiller_section({"name": name, key: value})


def test_describe_states_the_loss_as_computed():
    assert build("vid").describe() == (
        "loss = 1·CE + 1·Σ_i VID(regressor_i(feats_s[i]), feats_t[i]) over feats[1:4] "
        "(3 stages, σ² fixed, init 5)")
    assert build("ofd").describe() == (
        "loss = 1·CE + 0.001·Σ_i 2^−(n−1−i)·OFD(connector_i(preact_feats_s[i]), preact_feats_t[i]) "
        "over the 3 deepest stages (k=1, teacher in eval mode)")
    assert build("reviewkd").describe() == (
        "loss = 1·CE + 1·min(epoch/20, 1)·HCL(ABF(feats_s[-3:] + pooled_s), "
        "preact_feats_t[-3:] + pooled_t) (ABF width 64)")
