"""The benchmark's baseline losses (AT, NST, PKT, KDSVD, OFD, RKD, VID, SP, CRD, ReviewKD) and
the DOT optimizer against the float64 oracle of the original code (reference/BASELINES.md),
plus the properties the formulas promise."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from distillers.crd_losses import ContrastMemory, CRDEmbedding, crd_loss, nce_loss
from distillers.kdsvd_losses import kdsvd_loss, leading_right_singular_vectors
from distillers.losses import (at_loss, nst_loss, pkt_loss, pool_to_common_size, rkd_loss,
                               sp_loss)
from distillers.ofd_losses import build_ofd_connector, ofd_loss, ofd_margin
from distillers.reviewkd_losses import ReviewFusion, hcl_loss
from distillers.vid_losses import build_vid_regressor, vid_initial_log_scale, vid_loss
from engine.dot import DistillationOrientedSGD
from tests import baseline_inputs as bi

ORACLE = torch.load(Path(__file__).parent / "reference" / "baseline_losses.pt", weights_only=True)
MAP_CASES = list(bi.CASES)


def leaves(tensors):
    return [t.clone().requires_grad_(True) for t in tensors]


def assert_grads(tensors, expected):
    assert len(tensors) == len(expected)
    for t, e in zip(tensors, expected):
        bi.assert_matches(t.grad if t.grad is not None else torch.zeros_like(t), e)


def assert_param_grads(module, expected):
    grads = {k: p.grad for k, p in module.named_parameters() if p.grad is not None}
    assert grads.keys() == expected.keys()
    for k, g in grads.items():
        bi.assert_matches(g, expected[k])


def test_oracle_names_its_source():
    assert ORACLE["source"] == "megvii-research/mdistiller"
    assert ORACLE["commit"] == "a08d46f10d6102bd6e3f258ca5ac880b020ea259"
    assert ORACLE["dtype"] == "float64"


def test_kdsvd_singular_vectors_of_a_bfloat16_map_are_those_of_its_float32_values():
    """No half-precision SVD exists: the helper raises such a map itself, whoever calls it (a
    generator of maps reaches it without full_precision's upcast)."""
    torch.manual_seed(0)
    m = torch.randn(2, 3, 4, 5).bfloat16()
    s_half, v_half = leading_right_singular_vectors(m, 2)
    s_full, v_full = leading_right_singular_vectors(m.float(), 2)
    assert s_half.dtype == torch.float32 and torch.equal(s_half, s_full) and torch.equal(v_half, v_full)
    assert torch.isfinite(kdsvd_loss(iter([m, m]), iter([m.float(), m.float()])))


@pytest.mark.parametrize("case", MAP_CASES)
@pytest.mark.parametrize("method", ["at", "nst", "sp"])
def test_map_losses_match_reference(case, method):
    x = bi.case_inputs(case)
    s = leaves(x["student_feats"])
    if method == "at":        # mdistiller: feats[1:], p = 2
        loss = at_loss(s, x["teacher_feats"], p=2)
    elif method == "nst":     # feats[1:]
        loss = nst_loss(s, x["teacher_feats"])
    else:                     # SP: the last stage map only
        loss = sp_loss(s[-1:], x["teacher_feats"][-1:])
    loss.backward()
    expected = ORACLE["cases"][case][method]
    bi.assert_matches(loss, expected["loss"])
    assert_grads(s, expected["grad_student"])


@pytest.mark.parametrize("case", MAP_CASES)
@pytest.mark.parametrize("method", ["pkt", "rkd"])
def test_pooled_feature_losses_match_reference(case, method):
    x = bi.case_inputs(case)
    s = leaves([x["student_pooled"]])
    if method == "pkt":
        loss = pkt_loss(s[0], x["teacher_pooled"])
    else:
        loss = rkd_loss(s[0], x["teacher_pooled"], distance_weight=25, angle_weight=50)
    loss.backward()
    expected = ORACLE["cases"][case][method]
    bi.assert_matches(loss, expected["loss"])
    assert_grads(s, expected["grad_student"])


@pytest.mark.parametrize("case", ["res32x4_res8x4", "kdsvd_small"])
def test_kdsvd_matches_reference(case):
    if case == "kdsvd_small":
        student, teacher = bi.kdsvd_inputs()
    else:
        x = bi.case_inputs(case)
        student, teacher = x["student_feats"], x["teacher_feats"]
    s = leaves(student)
    loss = kdsvd_loss(s, teacher, k=1)
    loss.backward()
    expected = ORACLE["cases"][case]["kdsvd"]
    bi.assert_matches(loss, expected["loss"])
    assert_grads(s, expected["grad_student"])


@pytest.mark.parametrize("case", MAP_CASES)
def test_vid_matches_reference(case):
    x = bi.case_inputs(case)
    expected = ORACLE["cases"][case]["vid"]
    s = leaves(x["student_feats"])
    total, regressors, log_scales = 0.0, [], []
    for i, (f_s, f_t) in enumerate(zip(s, x["teacher_feats"])):
        regressor = build_vid_regressor(f_s.shape[1], f_t.shape[1]).double()
        assert list(regressor.state_dict()) == expected["regressor_keys"][i]
        bi.fill_prefixed_(regressor, f"regressors.{i}.")
        # the reference draws its initial log-scales in float32: ours equal them to that
        # precision, and the loss runs from the reference's own values
        torch.testing.assert_close(vid_initial_log_scale(f_t.shape[1]).double(),
                                   expected["initial_log_scales"][i], rtol=1e-6, atol=0)
        log_scale = expected["initial_log_scales"][i].clone().requires_grad_(True)
        f_s, f_t = pool_to_common_size(f_s, f_t)
        total = total + vid_loss(regressor(f_s), f_t, log_scale, eps=1e-5)
        regressors.append(regressor)
        log_scales.append(log_scale)
    total.backward()
    bi.assert_matches(total, expected["loss"])
    assert_grads(s, expected["grad_student"])
    for regressor, grads in zip(regressors, expected["grad_regressors"]):
        assert_param_grads(regressor, grads)
    for log_scale, grad in zip(log_scales, expected["grad_log_scales"]):
        bi.assert_matches(log_scale.grad, grad)


@pytest.mark.parametrize("case", MAP_CASES)
def test_ofd_margins_and_loss_match_reference(case):
    x = bi.case_inputs(case)
    expected = ORACLE["cases"][case]["ofd"]
    for weight, bias, margin in zip(expected["bn_weight"], expected["bn_bias"], expected["margins"]):
        # the reference keeps its margins in float32; ours are float64
        torch.testing.assert_close(ofd_margin(weight, bias), margin, rtol=1e-6, atol=1e-7)
    s = leaves(x["student_preacts"])
    connectors, connected = [], []
    for i, (f_s, f_t) in enumerate(zip(s, x["teacher_preacts"])):
        connector = build_ofd_connector(f_s.shape[1], f_t.shape[1]).double().train()
        assert list(connector.state_dict()) == expected["connector_keys"][i]
        bi.fill_prefixed_(connector, f"connectors.connectors.{i}.")
        connectors.append(connector)
        connected.append(connector(f_s))
    loss = ofd_loss(connected, x["teacher_preacts"], expected["margins"])
    loss.backward()
    bi.assert_matches(loss, expected["loss"])
    assert_grads(s, expected["grad_student"])
    for connector, grads in zip(connectors, expected["grad_connectors"]):
        assert_param_grads(connector, grads)


@pytest.mark.parametrize("case", MAP_CASES)
def test_crd_two_steps_match_reference(case):
    """Step 1 fixes the NCE constants and updates the memory; step 2 scores against it."""
    spec = bi.CASES[case]
    expected = ORACLE["cases"][case]["crd"]
    embed_s = bi.fill_prefixed_(CRDEmbedding(spec["student_dim"], expected["dim"]).double(), "embed_s.")
    embed_t = bi.fill_prefixed_(CRDEmbedding(spec["teacher_dim"], expected["dim"]).double(), "embed_t.")
    assert list(embed_s.state_dict()) == expected["embed_keys"]
    # the reference's T is float32(0.07) (it sits in a float32 buffer); the oracle states it
    assert expected["temperature"] == torch.tensor(0.07, dtype=torch.float32).item()
    memory = ContrastMemory(expected["dim"], expected["num_data"], temperature=expected["temperature"],
                            momentum=expected["momentum"]).double()
    with torch.no_grad():
        for name in ("memory_v1", "memory_v2"):
            getattr(memory, name).copy_(bi.recipe_value(f"contrast.{name}", getattr(memory, name).shape))
    for step, want in enumerate(expected["steps"]):
        s_pooled = bi.vectors(case, f"crd_student{step}", spec["pooled_batch"], spec["student_dim"])
        t_pooled = bi.vectors(case, f"crd_teacher{step}", spec["pooled_batch"], spec["teacher_dim"])
        s = leaves([s_pooled])
        embed_s.zero_grad(set_to_none=True)
        embed_t.zero_grad(set_to_none=True)
        index, contrast_index = bi.crd_indices(step, spec["pooled_batch"])
        v_s, v_t = embed_s(s[0]), embed_t(t_pooled)
        p_s, p_t = memory(v_s, v_t, contrast_index)
        loss = crd_loss(p_s, p_t, expected["num_data"])
        memory.update(index, v_s.detach(), v_t.detach())
        loss.backward()
        bi.assert_matches(loss, want["loss"])
        assert_grads(s, want["grad_student"])
        assert_param_grads(embed_s, want["grad_embed_s"])
        assert_param_grads(embed_t, want["grad_embed_t"])
        bi.assert_matches(memory.normalizers, want["normalizers"])
        bi.assert_matches(memory.memory_v1[index], want["memory_v1_rows"])
        bi.assert_matches(memory.memory_v2[index], want["memory_v2_rows"])
    bi.assert_matches(memory.memory_v1, expected["memory_v1"])
    bi.assert_matches(memory.memory_v2, expected["memory_v2"])


@pytest.mark.parametrize("case", MAP_CASES)
def test_reviewkd_matches_reference(case):
    x = bi.case_inputs(case)
    spec = bi.CASES[case]
    expected = ORACLE["cases"][case]["reviewkd"]
    fusion = ReviewFusion([c for c, _, _ in spec["student"]] + [spec["student_dim"]],
                                 [c for c, _, _ in spec["teacher"]] + [spec["teacher_dim"]]).double().train()
    assert list(fusion.abfs.state_dict()) == expected["abfs_keys"]
    bi.fill_prefixed_(fusion.abfs, "abfs.")
    s_maps = leaves(x["student_feats"])
    s_pooled = leaves([x["student_pooled_maps_batch"]])[0]
    # the student's stage maps + its pooled feature as a 1×1 map; the teacher's pre-activation
    # maps + its pooled feature; output sizes are the teacher's
    student = s_maps + [s_pooled[:, :, None, None]]
    teacher = x["teacher_preacts"] + [x["teacher_pooled_maps_batch"][:, :, None, None]]
    loss = hcl_loss(fusion(student, [t.shape[2] for t in teacher]), teacher)
    loss.backward()
    bi.assert_matches(loss, expected["loss"])
    assert_grads(s_maps + [s_pooled], expected["grad_student"])
    assert_param_grads(fusion.abfs, expected["grad_abfs"])


def test_dot_trajectory_matches_reference():
    params = bi.dot_parameters()
    optimizer = DistillationOrientedSGD(list(params.values()), **bi.DOT_HP)
    for step, want in enumerate(ORACLE["dot"]["trajectory"]):
        bi.dot_step(optimizer, params, step)
        for name, value in params.items():
            torch.testing.assert_close(value.detach(), want[name], rtol=1e-12, atol=1e-14,
                                       msg=lambda m, name=name, step=step: f"{name} after step {step}: {m}")
    state = optimizer.state_dict()["state"]
    assert state.keys() == ORACLE["dot"]["final_state"].keys()
    for i, buffers in ORACLE["dot"]["final_state"].items():
        assert state[i].keys() == buffers.keys()
        for k, v in buffers.items():
            torch.testing.assert_close(state[i][k], v, rtol=1e-12, atol=1e-14)


# ---- properties the formulas promise (random float64 inputs)

def _maps(seed, shapes, batch=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn((batch,) + s, generator=g, dtype=torch.float64).relu() for s in shapes]


SHAPES = [(4, 8, 8), (6, 4, 4)]


@pytest.mark.parametrize("loss", [
    lambda s, t: at_loss(s, t), lambda s, t: nst_loss(s, t), lambda s, t: sp_loss(s, t),
    lambda s, t: kdsvd_loss(s, t), lambda s, t: hcl_loss(s, t),
    lambda s, t: pkt_loss(s[0].flatten(1), t[0].flatten(1)),
    lambda s, t: rkd_loss(s[0].flatten(1), t[0].flatten(1))],
    ids=["at", "nst", "sp", "kdsvd", "hcl", "pkt", "rkd"])
def test_identical_student_and_teacher_give_zero(loss):
    maps = _maps(1, SHAPES)
    assert abs(float(loss([m.clone() for m in maps], maps))) < 1e-12
    other = _maps(2, SHAPES)
    assert float(loss(other, maps)) > 1e-6


def test_attention_transfer_ignores_the_scale_of_a_map_and_pools_the_larger_map():
    s, t = _maps(3, [(4, 8, 8)]), _maps(4, [(5, 4, 4)])
    torch.testing.assert_close(at_loss([7.0 * s[0]], t), at_loss(s, t), rtol=1e-12, atol=0)
    pooled_s, same_t = pool_to_common_size(s[0], t[0])
    assert pooled_s.shape[2:] == (4, 4) and same_t is t[0]
    same_s, pooled_t = pool_to_common_size(t[0], s[0])
    assert pooled_t.shape[2:] == (4, 4) and same_s is t[0]


def _attention_transfer_as_the_paper_writes_it(student_maps, teacher_maps, p):
    """Zagoruyko & Komodakis (ICLR 2017), Eq. 2 with mdistiller's channel mean and mean over
    batch and positions, in float64 numpy: Q = Σ_c A_c^p per position, each sample's Q divided
    by its L2 norm, then the mean squared difference, summed over stages."""
    total = 0.0
    for f_s, f_t in zip(student_maps, teacher_maps):
        q_s, q_t = ((f.numpy() ** p).sum(axis=1).reshape(len(f), -1) for f in (f_s, f_t))
        q_s, q_t = (q / np.sqrt((q ** 2).sum(axis=1, keepdims=True)) for q in (q_s, q_t))
        total += ((q_s - q_t) ** 2).mean()
    return total


@pytest.mark.parametrize("p", [1.0, 3.0])
def test_attention_transfer_at_a_power_other_than_2_matches_the_papers_formula(p):
    """The oracle's cases all use p = 2, so this is what holds the loss to its ``p``."""
    s, t = _maps(7, [(4, 8, 8), (6, 4, 4)]), _maps(8, [(3, 8, 8), (5, 4, 4)])
    expected = _attention_transfer_as_the_paper_writes_it(s, t, p)
    assert abs(float(at_loss(s, t, p=p)) - expected) <= 1e-12 * expected
    assert abs(float(at_loss(s, t, p=2.0)) - expected) > 1e-3 * expected   # p matters here


def test_pair_losses_refuse_lists_of_different_lengths():
    s, t = _maps(5, SHAPES), _maps(6, SHAPES[:1])
    for loss in (at_loss, nst_loss, sp_loss, kdsvd_loss, hcl_loss):
        with pytest.raises(ValueError, match="equally long"):
            loss(s, t)


def test_ofd_is_zero_below_the_margin_and_where_student_equals_teacher():
    margin = torch.tensor([-0.5, -1.0, -0.2])
    teacher = -2.0 * torch.ones(2, 3, 4, 4, dtype=torch.float64)       # all below the margin
    student = -3.0 * torch.ones(2, 3, 4, 4, dtype=torch.float64)       # student below it too
    assert float(ofd_loss([student], [teacher], [margin])) == 0.0
    above = student + 2.8                                                # student above the margin
    assert float(ofd_loss([above], [teacher], [margin])) > 0
    t = _maps(7, [(3, 4, 4)])[0] - 0.5
    assert float(ofd_loss([t.clone()], [t], [margin])) == 0.0


def test_ofd_margin_is_the_truncated_gaussian_mean_or_minus_three_sigma():
    # m = 0, s = 1: E[x | x < 0] = −sqrt(2/π); a large shift takes the −3s branch
    torch.testing.assert_close(ofd_margin(torch.tensor([1.0, -2.0]), torch.tensor([0.0, 0.0])),
                               torch.tensor([-math.sqrt(2 / math.pi), -2 * math.sqrt(2 / math.pi)],
                                            dtype=torch.float64))
    assert ofd_margin(torch.tensor([0.5]), torch.tensor([5.0])).item() == -1.5


def test_vid_initial_variance_is_the_configured_one():
    log_scale = vid_initial_log_scale(4, init_pred_var=5.0, eps=1e-5).double()
    t = torch.zeros(1, 4, 2, 2, dtype=torch.float64)
    # with a perfect prediction the loss is ½·log σ²
    torch.testing.assert_close(vid_loss(t, t, log_scale, eps=1e-5),
                               torch.tensor(0.5 * math.log(5.0), dtype=torch.float64))


def test_crd_memory_update_keeps_unit_rows_and_only_touches_the_batch():
    memory = ContrastMemory(8, 20, momentum=0.5, generator=torch.Generator().manual_seed(0)).double()
    before = memory.memory_v1.clone()
    embedding = torch.nn.functional.normalize(torch.randn(3, 8, dtype=torch.float64), dim=1)
    index = torch.tensor([2, 7, 11])
    memory.update(index, embedding, embedding)
    torch.testing.assert_close(memory.memory_v1[index].norm(dim=1), torch.ones(3, dtype=torch.float64))
    untouched = torch.ones(20, dtype=torch.bool)
    untouched[index] = False
    assert torch.equal(memory.memory_v1[untouched], before[untouched])


def test_crd_normalizers_are_fixed_by_the_first_batch_only():
    memory = ContrastMemory(8, 20, generator=torch.Generator().manual_seed(0)).double()
    v = torch.nn.functional.normalize(torch.randn(4, 8, dtype=torch.float64), dim=1)
    index = torch.arange(4)
    contrast = torch.cat([index[:, None], torch.randint(0, 20, (4, 5))], dim=1)
    p_s, _ = memory(v, v, contrast)
    first = memory.normalizers.clone()
    assert (first > 0).all()
    memory(2 * v, v, contrast)
    assert torch.equal(memory.normalizers, first)
    assert nce_loss(p_s, 20) > 0


def test_dot_without_a_momentum_gap_is_sgd_on_the_summed_loss():
    """Δ = 0: the two buffers add up to SGD's one (for parameters both losses reach)."""
    params = {k: v for k, v in bi.dot_parameters().items() if k == "shared"}
    extra = {k: v.detach() for k, v in bi.dot_parameters().items() if k != "shared"}
    reference = params["shared"].detach().clone().requires_grad_(True)
    dot = DistillationOrientedSGD([params["shared"]], lr=0.1, momentum=0.9, momentum_kd=0.9, weight_decay=5e-4)
    sgd = torch.optim.SGD([reference], lr=0.1, momentum=0.9, weight_decay=5e-4)
    for step in range(4):
        bi.dot_step(dot, params, step, fixed=extra, schedule={})
        sgd.zero_grad()
        sum(bi.dot_losses({**extra, "shared": reference}, step)).backward()
        sgd.step()
        torch.testing.assert_close(params["shared"].detach(), reference.detach(), rtol=1e-12, atol=1e-14)


def test_dot_refuses_negative_hyper_parameters():
    with pytest.raises(ValueError, match="momentum_kd"):
        DistillationOrientedSGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum_kd=-0.1)
