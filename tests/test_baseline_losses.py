"""The benchmark's baseline losses (AT, NST, PKT, KDSVD, OFD, RKD, VID, SP, CRD, ReviewKD) and
the DOT optimizer against the float64 oracle of the original code (reference/BASELINES.md),
plus the properties the formulas promise."""
import math
from pathlib import Path

import pytest
import torch

from distillers.crd_losses import ContrastMemory, build_crd_embedding, crd_loss, nce_loss
from distillers.kdsvd_losses import kdsvd_loss
from distillers.losses import (at_loss, nst_loss, pkt_loss, pool_to_common_size, rkd_loss,
                               sp_loss)
from distillers.ofd_losses import build_ofd_connector, ofd_loss, ofd_margin
from distillers.reviewkd_losses import build_review_fusion, hcl_loss
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
    embed_s = bi.fill_prefixed_(build_crd_embedding(spec["student_dim"], expected["dim"]).double(), "embed_s.")
    embed_t = bi.fill_prefixed_(build_crd_embedding(spec["teacher_dim"], expected["dim"]).double(), "embed_t.")
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
    fusion = build_review_fusion([c for c, _, _ in spec["student"]] + [spec["student_dim"]],
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
        if step in bi.DOT_LR_AFTER:
            for group in optimizer.param_groups:
                group["lr"] = bi.DOT_LR_AFTER[step]
        loss_kd, loss_task = bi.dot_losses(params, step)
        optimizer.zero_grad(set_to_none=True)
        loss_kd.backward(retain_graph=True)
        optimizer.step_kd()
        optimizer.zero_grad(set_to_none=True)
        loss_task.backward()
        optimizer.step()
        for name, value in params.items():
            torch.testing.assert_close(value.detach(), want[name], rtol=1e-12, atol=1e-14,
                                       msg=lambda m, name=name, step=step: f"{name} after step {step}: {m}")
    state = optimizer.state_dict()["state"]
    assert state.keys() == ORACLE["dot"]["final_state"].keys()
    for i, buffers in ORACLE["dot"]["final_state"].items():
        assert state[i].keys() == buffers.keys()
        for k, v in buffers.items():
            torch.testing.assert_close(state[i][k], v, rtol=1e-12, atol=1e-14)
