"""The pure losses against the original implementations' float64 oracle (reference/LOSSES.md),
and the properties the formulas promise on random inputs."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distillers.fitnet import build_regressor
from distillers.losses import (dist_loss, dkd_loss, fitnet_loss, kd_loss, one_kl_loss,
                               sigmoid_rampup, srrl_feature_loss, srrl_sr_loss, zscore)
from distillers.srrl import build_connector

REFERENCE = Path(__file__).parent / "reference"
LOGIT_CASES = torch.load(REFERENCE / "logit_losses.pt", weights_only=True)["cases"]
FEATURE_CASES = torch.load(REFERENCE / "feature_losses.pt", weights_only=True)["cases"]
DIST_BETA_GAMMA_CASES = torch.load(REFERENCE / "dist_beta_gamma.pt", weights_only=True)["cases"]


def cases_of(method):
    cases = [c for c in FEATURE_CASES if c["method"] == method]
    return pytest.mark.parametrize("case", cases, ids=[f"{method}{i}" for i in range(len(cases))])


def logit_case_id(case):
    n, c = case["student_logits"].shape
    return f"{case['method']}-N{n}-C{c}-{'zscore' if case['hp']['logit_standardization'] else 'plain'}"


def assert_matches_oracle(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-10)


def logit_loss(method, student, teacher, target, hp):
    if method == "kd":
        return kd_loss(student, teacher, hp["temperature"])
    if method == "dkd":
        return dkd_loss(student, teacher, target, hp["alpha"], hp["beta"], hp["temperature"])
    return dist_loss(student, teacher, hp["beta"], hp["gamma"], hp["tau"])


def test_oracle_holds_all_thirty_logit_cases():
    assert len(LOGIT_CASES) == 30
    assert {c["method"] for c in LOGIT_CASES} == {"kd", "dkd", "dist"}


def loss_and_gradient(case, hp):
    """Our loss of the case's logits with hyper-parameters ``hp``, and its student gradient."""
    student = case["student_logits"].clone().requires_grad_(True)
    teacher = case["teacher_logits"]
    student_in, teacher_in = student, teacher
    if hp["logit_standardization"]:
        student_in, teacher_in = zscore(student), zscore(teacher)
    loss = logit_loss(case["method"], student_in, teacher_in, case["target"], hp)
    loss.backward()
    return loss.detach(), student.grad


@pytest.mark.parametrize("case", LOGIT_CASES, ids=[logit_case_id(c) for c in LOGIT_CASES])
def test_logit_loss_and_gradient_match_reference(case):
    loss, grad = loss_and_gradient(case, case["hp"])
    assert_matches_oracle(loss, case["loss"])
    assert_matches_oracle(grad, case["grad_student_logits"])


@pytest.mark.parametrize("case", DIST_BETA_GAMMA_CASES, ids=[
    f"beta{c['hp']['beta']:g}-gamma{c['hp']['gamma']:g}-tau{c['hp']['tau']:g}"
    for c in DIST_BETA_GAMMA_CASES])
def test_dist_weighs_inter_by_beta_and_intra_by_gamma_as_the_original(case):
    """β ≠ γ (reference/dist_beta_gamma.pt, from the original DIST): value and gradient agree,
    and the same logits with β and γ exchanged do not, so the case tells the two terms apart."""
    hp = case["hp"]
    assert hp["beta"] != hp["gamma"]
    loss, grad = loss_and_gradient(case, hp)
    assert_matches_oracle(loss, case["loss"])
    assert_matches_oracle(grad, case["grad_student_logits"])
    swapped, _ = loss_and_gradient(case, {**hp, "beta": hp["gamma"], "gamma": hp["beta"]})
    assert not torch.allclose(swapped, case["loss"], rtol=1e-3, atol=0)


@cases_of("fitnet")
def test_fitnet_regressor_loss_and_gradients_match_reference(case):
    student = case["student_feature"].clone().requires_grad_(True)
    regressor = build_regressor(student.shape[1:], case["teacher_feature"].shape[1:]).double()
    conv = regressor.conv
    assert type(conv).__name__ == case["regressor_kind"]
    assert [list(conv.kernel_size), list(conv.stride), list(conv.padding)] == [
        case["regressor_kernel"], case["regressor_stride"], case["regressor_padding"]]
    assert list(regressor.state_dict()) == list(case["regressor_state_dict"])
    regressor.load_state_dict(case["regressor_state_dict"])
    loss = fitnet_loss(regressor.train()(student), case["teacher_feature"])
    loss.backward()
    assert_matches_oracle(loss.detach(), case["loss"])
    assert_matches_oracle(student.grad, case["grad_student_feature"])
    grads = {name: p.grad for name, p in regressor.named_parameters()}
    assert grads.keys() == case["grad_regressor"].keys()
    for name, grad in grads.items():
        assert_matches_oracle(grad, case["grad_regressor"][name])


def frozen_teacher_head(fc_state):
    fc = nn.Linear(*reversed(fc_state["weight"].shape)).double()
    fc.load_state_dict(fc_state)
    fc.requires_grad_(False)
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc)


@cases_of("srrl")
def test_srrl_losses_and_gradient_match_reference(case):
    student = case["student_feature"].clone().requires_grad_(True)
    connector = build_connector(student.shape[1], case["teacher_feature"].shape[1]).double()
    reference_keys = [k.removeprefix("Connectors.") for k in case["connector_state_dict"]]
    assert list(connector.state_dict()) == reference_keys
    connector.load_state_dict(dict(zip(reference_keys, case["connector_state_dict"].values())))
    head = frozen_teacher_head(case["teacher_fc_state_dict"])
    assert_matches_oracle(head(case["teacher_feature"]), case["teacher_logits"])
    connected = connector.train()(student)
    loss_feat = srrl_feature_loss(connected, case["teacher_feature"])
    loss_sr = case["hp"]["sr_weight"] * srrl_sr_loss(head(connected), case["teacher_logits"])
    (loss_feat + loss_sr).backward()
    assert_matches_oracle(loss_feat.detach(), case["loss_feat"])
    assert_matches_oracle(loss_sr.detach(), case["loss_sr"])
    assert_matches_oracle(student.grad, case["grad_student_feature"])
    assert all(p.grad is None for p in head.parameters())


@cases_of("one")
def test_one_losses_and_gradients_match_reference(case):
    branches = case["branch_logits"].clone().requires_grad_(True)
    ensemble = case["ensemble_logits"].clone().requires_grad_(True)
    target, hp = case["target"], case["hp"]
    weight = sigmoid_rampup(hp["epoch"], hp["rampup"])
    assert weight == pytest.approx(hp["consistency_weight"], rel=1e-12)
    loss_ce = sum(F.cross_entropy(b, target) for b in branches) + F.cross_entropy(ensemble, target)
    loss_kl = weight * one_kl_loss(branches, ensemble, hp["temperature"])
    (loss_ce + loss_kl).backward()
    assert_matches_oracle(loss_ce.detach(), case["loss_ce"])
    assert_matches_oracle(loss_kl.detach(), case["loss_kl"])
    assert_matches_oracle(branches.grad, case["grad_branch_logits"])
    assert_matches_oracle(ensemble.grad, case["grad_ensemble_logits"])


# --- properties on random inputs ---------------------------------------------------------------

def random_logits(rows=6, classes=10, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(rows, classes, generator=generator, dtype=torch.float64)
    shift = 5 * torch.randn(rows, 1, generator=generator, dtype=torch.float64)
    scale = 0.5 + 2 * torch.rand(rows, 1, generator=generator, dtype=torch.float64)
    target = torch.randint(classes, (rows,), generator=generator)
    return logits, shift, scale, target


def test_zscore_rows_have_zero_mean_and_unit_unbiased_std():
    logits = random_logits()[0] * 7 + 3
    standardized = zscore(logits)
    torch.testing.assert_close(standardized.mean(dim=1), torch.zeros(6, dtype=torch.float64))
    torch.testing.assert_close(standardized.std(dim=1, unbiased=True), torch.ones(6, dtype=torch.float64))


STANDARDIZED_LOSSES = {
    "kd": lambda s, t, target: kd_loss(zscore(s), zscore(t), 2.0),
    "dkd": lambda s, t, target: dkd_loss(zscore(s), zscore(t), target, 9.0, 18.0, 2.0),
}


@pytest.mark.parametrize("side", ["student", "teacher"])
@pytest.mark.parametrize("method", sorted(STANDARDIZED_LOSSES))
def test_standardized_loss_ignores_per_row_shift_and_positive_scale(method, side):
    student, shift, scale, target = random_logits(seed=1)
    teacher = random_logits(seed=2)[0]
    loss = STANDARDIZED_LOSSES[method]
    expected = loss(student, teacher, target)
    moved = {"student": student, "teacher": teacher}
    moved[side] = moved[side] * scale + shift
    # zscore's eps (1e-7 on the std) makes the invariance exact only up to ~1e-7 relative
    torch.testing.assert_close(loss(moved["student"], moved["teacher"], target), expected,
                               rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("side", ["student", "teacher"])
def test_dist_ignores_per_row_shift(side):
    student, shift, _, _ = random_logits(seed=3)
    teacher = random_logits(seed=4)[0]
    expected = dist_loss(student, teacher, 1.0, 2.0, 4.0)
    moved = {"student": student, "teacher": teacher}
    moved[side] = moved[side] + shift
    torch.testing.assert_close(dist_loss(moved["student"], moved["teacher"], 1.0, 2.0, 4.0), expected)


def test_dkd_with_two_classes_raises():
    logits, _, _, _ = random_logits(classes=2)
    with pytest.raises(ValueError, match="at least 3 classes"):
        dkd_loss(logits, logits, torch.zeros(6, dtype=torch.long), 1.0, 8.0, 4.0)


def test_dist_with_one_sample_raises():
    logits = random_logits(rows=1)[0]
    with pytest.raises(ValueError, match="at least 2 samples"):
        dist_loss(logits, logits, 1.0, 1.0, 4.0)


@pytest.mark.parametrize("loss", [fitnet_loss, srrl_feature_loss, srrl_sr_loss])
def test_feature_loss_rejects_mismatched_student_and_teacher(loss):
    with pytest.raises(ValueError, match="must agree"):
        loss(torch.zeros(2, 8, 4, 4), torch.zeros(2, 16, 4, 4))


def test_one_kl_loss_does_not_teach_the_ensemble():
    branches = random_logits(rows=6, classes=4)[0].reshape(2, 3, 4).requires_grad_(True)
    ensemble = random_logits(rows=3, classes=4, seed=5)[0].requires_grad_(True)
    one_kl_loss(branches, ensemble, 3.0).backward()
    assert ensemble.grad is None
    assert branches.grad.abs().sum() > 0


def test_sigmoid_rampup_starts_at_exp_minus_five_and_saturates_at_one():
    assert sigmoid_rampup(0, 80) == pytest.approx(torch.tensor(-5.0).exp().item())
    assert sigmoid_rampup(80, 80) == 1.0
    assert sigmoid_rampup(300, 80) == 1.0
    assert sigmoid_rampup(5, 0) == 1.0


def test_regressor_for_a_smaller_student_map_raises():
    with pytest.raises(ValueError, match="hint_layer"):
        build_regressor((16, 8, 8), (32, 32, 32))
