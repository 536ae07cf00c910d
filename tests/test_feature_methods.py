"""The six loss-only feature baselines (AT, NST, SP, PKT, RKD, KDSVD) as methods: each taps the
maps the original taps (its full forward_train equals the original's on the oracle's fixed
maps, reference/BASELINES.md), says its loss, refuses a pair of networks it cannot distil in
one line, and trains a real student."""
from pathlib import Path

import pytest
import torch
from torch import nn

import models
from distillers import build_distiller, resolve_distiller_section
from distillers.losses import at_loss, nst_loss
from tests import baseline_inputs as bi
from utils.batch import Batch
from utils.errors import UserError

ORACLE = torch.load(Path(__file__).parent / "reference" / "baseline_losses.pt", weights_only=True)
MAP_METHODS = ["at", "nst", "sp", "kdsvd"]       # stage maps (feats)
POOLED_METHODS = ["pkt", "rkd"]                  # the pooled feature
METHODS = MAP_METHODS + POOLED_METHODS


class FixedNetwork(nn.Module):
    """Stands in for a network as the oracle's stub did: ``forward_features`` returns a stem map
    (``feats[0]``, never tapped) followed by the given maps, and the given pooled feature,
    whatever the images; zero logits, so the cross-entropy carries no gradient."""

    def __init__(self, maps, pooled):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros((), dtype=torch.float64))  # device/dtype for probes
        stem = torch.zeros(maps[0].shape[0], 1, 2, 2, dtype=torch.float64)
        self.feats, self.pooled = [stem, *maps], pooled

    def forward_features(self, images):
        logits = torch.zeros(self.pooled.shape[0], 3, dtype=torch.float64)
        return {"logits": logits, "feats": self.feats, "preact_feats": self.feats,
                "pooled_feat": self.pooled}

    def forward(self, images):
        return self.forward_features(images)["logits"]


def oracle_inputs(method, case):
    """``(student maps/feature as leaves, student stub, teacher stub)`` of one oracle case."""
    if method == "kdsvd" and case == "kdsvd_small":
        student, teacher = bi.kdsvd_inputs()
        pooled = torch.zeros(len(student[0]), 2, dtype=torch.float64)
        leaves = [m.clone().requires_grad_(True) for m in student]
        return leaves, FixedNetwork(leaves, pooled), FixedNetwork(teacher, pooled)
    x = bi.case_inputs(case)
    if method in POOLED_METHODS:
        leaves = [x["student_pooled"].clone().requires_grad_(True)]
        dummy = [torch.zeros(len(leaves[0]), 1, 1, 1, dtype=torch.float64)]
        return leaves, FixedNetwork(dummy, leaves[0]), FixedNetwork(dummy, x["teacher_pooled"])
    leaves = [m.clone().requires_grad_(True) for m in x["student_feats"]]
    return (leaves, FixedNetwork(leaves, x["student_pooled_maps_batch"]),
            FixedNetwork(x["teacher_feats"], x["teacher_pooled_maps_batch"]))


ORACLE_CASES = [(m, c) for m in METHODS for c in bi.CASES if m != "kdsvd"] + [
    ("kdsvd", "res32x4_res8x4"), ("kdsvd", "kdsvd_small")]


@pytest.mark.parametrize("method, case", ORACLE_CASES)
def test_forward_train_equals_the_originals_on_the_oracle_maps(method, case):
    """All weights 1, float64: the method's loss term and its gradient on every student input
    equal what the original's forward_train gave on the same stub networks, so the method taps
    the maps the original taps (feats[1:], feats[-1] or pooled_feat) with the same settings."""
    leaves, student, teacher = oracle_inputs(method, case)
    distiller = build_distiller({"name": method, "ce_weight": 1.0, "feat_weight": 1.0},
                                student, teacher).train()
    n = len(student.pooled)
    batch = Batch(torch.zeros(n, 3, 2, 2, dtype=torch.float64), torch.zeros(n, dtype=torch.long))
    _, losses = distiller(batch, 1)
    assert set(losses) == {"loss_ce", "loss_feat"}
    sum(losses.values()).backward()
    expected = ORACLE["cases"][case][method]
    bi.assert_matches(losses["loss_feat"], expected["loss"])
    assert len(leaves) == len(expected["grad_student"])
    for leaf, grad in zip(leaves, expected["grad_student"]):
        bi.assert_matches(leaf.grad if leaf.grad is not None else torch.zeros_like(leaf), grad)


def build(method, student="resnet8", teacher="resnet20", **section):
    torch.manual_seed(0)
    return build_distiller({"name": method, **section}, models.build_model(student, 100),
                           models.build_model(teacher, 100))


DESCRIPTIONS = {
    "at": "loss = 1·CE + 1000·AT(feats_s[1:4], feats_t[1:4], p=2)",
    "nst": "loss = 1·CE + 50·NST(feats_s[1:4], feats_t[1:4])",
    "sp": "loss = 1·CE + 3000·SP(feats_s[-1], feats_t[-1])",
    "pkt": "loss = 1·CE + 30000·PKT(pooled_s, pooled_t)",
    "rkd": "loss = 1·CE + 1·RKD(25·distance + 50·angle)(pooled_s, pooled_t)",
    "kdsvd": "loss = 1·CE + 1·KDSVD(feats_s[1:4], feats_t[1:4], k=1)",
}


@pytest.mark.parametrize("method", METHODS)
def test_describe_states_the_default_recipe(method):
    assert build(method).describe() == DESCRIPTIONS[method]


def test_describe_follows_the_method_settings():
    assert build("at", p=3.0).describe().endswith("p=3)")
    assert build("kdsvd", k=2).describe().endswith("k=2)")
    assert "RKD(2·squared distance + 3·angle)" in build(
        "rkd", distance_weight=2.0, angle_weight=3.0, squared=True).describe()


@pytest.mark.parametrize("method, student, message", [
    ("kdsvd", "ShuffleV1", "distiller 'kdsvd' needs maps of equal width stage by stage, but "
                           "feats[1] of the student is (240, 16, 16) and of the teacher "
                           "(16, 32, 32): choose another student.arch / teacher.arch pair"),
])
def test_a_pair_the_method_cannot_distil_is_one_line_at_construction(method, student, message):
    with pytest.raises(UserError) as error:
        build(method, student=student)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.mark.parametrize("method, loss", [("at", at_loss), ("nst", nst_loss)])
def test_unequal_stage_counts_pair_the_shallowest_stages_as_the_original_zip(method, loss):
    """vgg8 has 4 stage maps after the stem, resnet20 3: the first 3 pair up (mdistiller zips the
    lists; its ImageNet AT config, ResNet50 -> MobileNetV1, relies on it), the 4th is left out."""
    distiller = build(method, student="vgg8").double().train()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    student = distiller.student.forward_features(images)
    teacher = distiller.teacher.model.forward_features(images)
    got = distiller.feature_loss(student, teacher, None, 1)
    torch.testing.assert_close(got, loss(student["feats"][1:4], teacher["feats"][1:4]))
    assert "feats_s[1:4], feats_t[1:4]" in distiller.describe()


@pytest.mark.parametrize("method", ["at", "nst"])
def test_maps_that_reach_no_common_size_are_refused(method):
    """Only square maps meet after pooling the larger to the smaller's height: a 4×8 student map
    against a 4×4 teacher map is named (stage and shapes), not a shape error at step one."""
    student_maps = [torch.zeros(2, 3, 4, 8, dtype=torch.float64)]
    teacher_maps = [torch.zeros(2, 5, 4, 4, dtype=torch.float64)]
    pooled = torch.zeros(2, 4, dtype=torch.float64)
    with pytest.raises(UserError, match=r"feats\[1\] of the student \(3, 4, 8\) and of the teacher "
                                        r"\(5, 4, 4\) reach no common size"):
        build_distiller({"name": method}, FixedNetwork(student_maps, pooled),
                        FixedNetwork(teacher_maps, pooled))


@pytest.mark.parametrize("method", ["at", "nst", "sp", "pkt", "rkd"])
def test_maps_of_other_sizes_and_widths_are_distilled(method):
    """MobileNetV2 (5 maps, 160×2×2 last, 1280 pooled) from vgg8 (5 maps, 512×4×4, 512): AT and
    NST pool the larger map, SP and the pooled-feature methods share only the batch."""
    distiller = build(method, student="MobileNetV2", teacher="vgg8").train()
    generator = torch.Generator().manual_seed(0)
    batch = Batch(torch.randn(4, 3, 32, 32, generator=generator), torch.arange(4))
    _, losses = distiller(batch, 1)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_feat"] > 0


@pytest.mark.parametrize("method", METHODS)
def test_one_step_trains_a_resnet8_student_from_a_resnet20_teacher(method):
    distiller = build(method).train()
    before = {k: v.clone() for k, v in distiller.student.state_dict().items()}
    optimizer = torch.optim.SGD(distiller.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(0)
    batch = Batch(torch.randn(8, 3, 32, 32, generator=generator),
                  torch.randint(100, (8,), generator=generator))
    _, losses = distiller(batch, 1)
    sum(losses.values()).backward()
    grads = [p.grad for p in distiller.student.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert losses["loss_feat"] > 0
    optimizer.step()
    after = distiller.student.state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in before.items())
    assert all(p.grad is None for p in distiller.teacher.parameters())


@pytest.mark.parametrize("method, key, value, rule", [
    ("at", "p", 0, "> 0"), ("kdsvd", "k", 0, ">= 1"), ("rkd", "eps", 0, "> 0"),
    ("rkd", "distance_weight", -1, ">= 0"), ("sp", "feat_weight", -1, ">= 0")])
def test_out_of_range_settings_are_one_line(method, key, value, rule):
    with pytest.raises(UserError, match=f"'distiller.{key}' in config must be {rule}"):
        resolve_distiller_section({"name": method, key: value})
