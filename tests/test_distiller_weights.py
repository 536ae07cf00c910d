"""Each method's constructor weights reach their own loss term, in numbers.

Every method is built through the public ``build_distiller`` with weights unlike its defaults
and unlike each other, runs one training forward in float64 on a fixed batch, and each named
loss is compared with the formula written here from the pure losses (themselves checked against
the original implementations in test_losses.py), on the very logits and features of that
forward. A weight given to the wrong term, or dropped, changes a number here. A method
without a formula case in ``CASES`` (one registered tomorrow) is still checked: each of its
weights must change its losses.
"""
import pytest
import torch
import torch.nn.functional as F

from distillers import distiller_defaults, list_distillers
from distillers.crd_losses import contrast_scores, crd_loss
from distillers.kdsvd_losses import kdsvd_loss
from distillers.mlkd_losses import mlkd_loss_terms
from distillers.losses import (at_loss, dist_loss, dkd_loss, fitnet_loss, kd_loss, nst_loss,
                               one_kl_loss, pkt_loss, pool_to_common_size, rkd_loss, sigmoid_rampup,
                               sp_loss, srrl_feature_loss, srrl_sr_loss, zscore)
from distillers.ofd_losses import ofd_loss, ofd_margin
from distillers.reviewkd_losses import hcl_loss
from distillers.vid_losses import vid_initial_log_scale, vid_loss
from tests.test_distillers import batch, build, weight_keys

EPOCH = 4


def expected_kd(d, images, targets, logits):
    teacher = d.teacher.model(images)
    return {"loss_ce": 0.3 * F.cross_entropy(logits, targets),
            "loss_kd": 0.7 * kd_loss(logits, teacher, 4.0)}


def expected_kd_zscore(d, images, targets, logits):
    teacher = d.teacher.model(images)
    return {"loss_ce": 0.3 * F.cross_entropy(logits, targets),
            "loss_kd": 5.0 * kd_loss(zscore(logits), zscore(teacher), 3.0)}


def expected_dkd(d, images, targets, logits):
    teacher = d.teacher.model(images)
    ramp = EPOCH / 10
    return {"loss_ce": 0.4 * F.cross_entropy(logits, targets),
            "loss_kd": ramp * 1.5 * dkd_loss(logits, teacher, targets, 2.0, 5.0, 3.0)}


def expected_dkd_zscore(d, images, targets, logits):
    teacher = d.teacher.model(images)
    ramp = EPOCH / 10
    return {"loss_ce": 0.4 * F.cross_entropy(logits, targets),
            "loss_kd": ramp * 6.0 * dkd_loss(zscore(logits), zscore(teacher), targets, 2.0, 5.0, 2.5)}


def expected_dist(d, images, targets, logits):
    teacher = d.teacher.model(images)
    return {"loss_ce": 0.6 * F.cross_entropy(logits, targets),
            "loss_kd": 1.7 * dist_loss(logits, teacher, 0.5, 2.5, 3.0)}


def expected_dist_zscore(d, images, targets, logits):
    teacher = d.teacher.model(images)
    return {"loss_ce": 0.6 * F.cross_entropy(logits, targets),
            "loss_kd": 4.5 * dist_loss(zscore(logits), zscore(teacher), 0.5, 2.5, 1.5)}


def expected_fitnet(d, images, targets, logits):
    student_map = d.student.forward_features(images)["feats"][2]
    teacher_map = d.teacher.model.forward_features(images)["feats"][2]
    return {"loss_ce": 0.5 * F.cross_entropy(logits, targets),
            "loss_feat": 3.0 * fitnet_loss(d.regressor(student_map), teacher_map)}


def expected_srrl(d, images, targets, logits):
    connected = d.connector(d.student.forward_features(images)["feats"][-1])
    teacher_out = d.teacher.model.forward_features(images)
    return {"loss_ce": 0.5 * F.cross_entropy(logits, targets),
            "loss_feat": 2.0 * srrl_feature_loss(connected, teacher_out["feats"][-1]),
            "loss_sr": 3.0 * srrl_sr_loss(d.teacher.model.forward_head(connected), teacher_out["logits"])}


def expected_vid(d, images, targets, logits):
    student_maps = d.student.forward_features(images)["feats"][1:]
    teacher_maps = d.teacher.model.forward_features(images)["feats"][1:]
    total = 0.0
    for regressor, f_s, f_t in zip(d.regressors, student_maps, teacher_maps):
        f_s, f_t = pool_to_common_size(f_s, f_t)
        log_scale = vid_initial_log_scale(f_t.shape[1], init_pred_var=4.0, eps=1e-4).double()
        total = total + vid_loss(regressor(f_s), f_t, log_scale, eps=1e-4)
    return {"loss_ce": 0.5 * F.cross_entropy(logits, targets), "loss_feat": 3.0 * total}


def expected_ofd(d, images, targets, logits):
    student_maps = d.student.forward_features(images)["preact_feats"][-3:]
    teacher_maps = d.teacher.model.forward_features(images)["preact_feats"][-3:]
    margins = [ofd_margin(bn.weight, bn.bias).float() for bn in d.teacher.model.bn_before_relu()[-3:]]
    connected = [c(s) for c, s in zip(d.connectors, student_maps)]
    return {"loss_ce": 0.5 * F.cross_entropy(logits, targets),
            "loss_feat": 0.01 * ofd_loss(connected, teacher_maps, margins)}


def expected_reviewkd(d, images, targets, logits):
    student_out = d.student.forward_features(images)
    teacher_out = d.teacher.model.forward_features(images)
    student = student_out["feats"][-3:] + [student_out["pooled_feat"][:, :, None, None]]
    teacher = teacher_out["preact_feats"][-3:] + [teacher_out["pooled_feat"][:, :, None, None]]
    fused = d.fusion(student, [t.shape[2] for t in teacher])
    return {"loss_ce": 0.5 * F.cross_entropy(logits, targets),
            "loss_feat": 2.0 * (EPOCH / 8) * hcl_loss(fused, teacher)}


def both_features(d, images):
    return d.student.forward_features(images), d.teacher.model.forward_features(images)


def expected_at(d, images, targets, logits):
    s, t = both_features(d, images)
    return {"loss_ce": 0.5 * F.cross_entropy(logits, targets),
            "loss_feat": 7.0 * at_loss(s["feats"][1:], t["feats"][1:], p=3.0)}


def expected_nst(d, images, targets, logits):
    s, t = both_features(d, images)
    return {"loss_ce": 0.5 * F.cross_entropy(logits, targets),
            "loss_feat": 7.0 * nst_loss(s["feats"][1:], t["feats"][1:])}


def expected_sp(d, images, targets, logits):
    s, t = both_features(d, images)
    return {"loss_ce": 0.5 * F.cross_entropy(logits, targets),
            "loss_feat": 7.0 * sp_loss([s["feats"][-1]], [t["feats"][-1]])}


def expected_pkt(d, images, targets, logits):
    s, t = both_features(d, images)
    return {"loss_ce": 0.5 * F.cross_entropy(logits, targets),
            "loss_feat": 7.0 * pkt_loss(s["pooled_feat"], t["pooled_feat"])}


def expected_rkd(d, images, targets, logits):
    s, t = both_features(d, images)
    return {"loss_ce": 0.5 * F.cross_entropy(logits, targets),
            "loss_feat": 7.0 * rkd_loss(s["pooled_feat"], t["pooled_feat"], distance_weight=2.0,
                                        angle_weight=3.0, squared=True, eps=1e-10)}


def expected_kdsvd(d, images, targets, logits):
    s, t = both_features(d, images)
    return {"loss_ce": 0.5 * F.cross_entropy(logits, targets),
            "loss_feat": 7.0 * kdsvd_loss(s["feats"][1:], t["feats"][1:], k=2)}


def expected_one(d, images, targets, logits):
    out = d.student.forward_features(images)
    branches, ensemble = out["branch_logits"], out["ensemble_logits"]
    ce = sum(F.cross_entropy(b, targets) for b in branches) + F.cross_entropy(ensemble, targets)
    return {"loss_ce": 0.5 * ce,
            "loss_kl": sigmoid_rampup(EPOCH - 2, 10) * one_kl_loss(branches, ensemble, 2.0)}


def expected_crd(d, images, targets, logits):
    """From a fresh twin (same seed: same initial bank, same first draw), since the forward
    under test has already updated ``d``'s bank; the embeddings are ``d``'s (a forward leaves
    them as they were)."""
    twin = build("crd", ce_weight=0.5, feat_weight=1.5).double()
    contrast = twin.sampler(torch.arange(len(targets)))
    v_s = d.embed_s(d.student.forward_features(images)["pooled_feat"])
    v_t = d.embed_t(d.teacher.model.forward_features(images)["pooled_feat"])
    scores_s = contrast_scores(v_s, twin.memory.memory_v2, contrast, 0.07)
    scores_t = contrast_scores(v_t, twin.memory.memory_v1, contrast, 0.07)
    n = twin.num_data
    return {"loss_ce": 0.5 * F.cross_entropy(logits, targets),
            "loss_feat": 1.5 * crd_loss(scores_s / (scores_s.mean() * n), scores_t / (scores_t.mean() * n), n)}


def expected_ctkd(d, images, targets, logits):
    teacher = d.teacher.model(images)
    lowest = 2.5 if d.logit_standardization else 1.5      # base_temperature replaces t_start
    temperature = lowest + 12.0 * torch.sigmoid(d.global_temperature.theta)
    student_in, teacher_in = (zscore(logits), zscore(teacher)) if d.logit_standardization else (logits, teacher)
    return {"loss_ce": 0.3 * F.cross_entropy(logits, targets),
            "loss_kd": (6.0 if d.logit_standardization else 0.7) * kd_loss(student_in, teacher_in, temperature)}


def expected_mlkd(d, images, targets, logits):
    teacher = d.teacher.model(images)     # the test batch's strong view equals its weak one
    z = d.logit_standardization
    terms = mlkd_loss_terms(logits, logits, teacher, teacher, targets, 2.5 if z else 3.0, z)
    weight = 6.0 if z else 0.7
    return {"loss_ce": 0.3 * terms["ce"], "loss_kd": weight * terms["kd"],
            "loss_cc": weight * terms["cc"], "loss_bc": weight * terms["bc"]}


def expected_vanilla(d, images, targets, logits):
    return {"loss_ce": F.cross_entropy(logits, targets)}


# case: (method, constructor arguments, the losses they must give)
CASES = {
    "kd": ("kd", dict(ce_weight=0.3, kd_weight=0.7, temperature=4.0), expected_kd),
    "kd-zscore": ("kd", dict(ce_weight=0.3, kd_weight=0.7, temperature=4.0,
                             logit_standardization=True, zscore_kd_weight=5.0,
                             base_temperature=3.0), expected_kd_zscore),
    "dkd": ("dkd", dict(ce_weight=0.4, kd_weight=1.5, alpha=2.0, beta=5.0, temperature=3.0,
                        warmup=10), expected_dkd),
    "dkd-zscore": ("dkd", dict(ce_weight=0.4, kd_weight=1.5, alpha=2.0, beta=5.0, temperature=3.0,
                               warmup=10, logit_standardization=True, zscore_kd_weight=6.0,
                               base_temperature=2.5), expected_dkd_zscore),
    "dist": ("dist", dict(ce_weight=0.6, kd_weight=1.7, beta=0.5, gamma=2.5, tau=3.0),
             expected_dist),
    "dist-zscore": ("dist", dict(ce_weight=0.6, kd_weight=1.7, beta=0.5, gamma=2.5, tau=3.0,
                                 logit_standardization=True, zscore_kd_weight=4.5,
                                 base_temperature=1.5), expected_dist_zscore),
    "fitnet": ("fitnet", dict(ce_weight=0.5, feat_weight=3.0), expected_fitnet),
    "srrl": ("srrl", dict(ce_weight=0.5, feat_weight=2.0, sr_weight=3.0), expected_srrl),
    "vid": ("vid", dict(ce_weight=0.5, feat_weight=3.0, eps=1e-4, init_pred_var=4.0), expected_vid),
    "ofd": ("ofd", dict(ce_weight=0.5, feat_weight=0.01), expected_ofd),
    "reviewkd": ("reviewkd", dict(ce_weight=0.5, feat_weight=2.0, warmup_epochs=8), expected_reviewkd),
    "at": ("at", dict(ce_weight=0.5, feat_weight=7.0, p=3.0), expected_at),
    "nst": ("nst", dict(ce_weight=0.5, feat_weight=7.0), expected_nst),
    "sp": ("sp", dict(ce_weight=0.5, feat_weight=7.0), expected_sp),
    "pkt": ("pkt", dict(ce_weight=0.5, feat_weight=7.0), expected_pkt),
    "rkd": ("rkd", dict(ce_weight=0.5, feat_weight=7.0, distance_weight=2.0, angle_weight=3.0,
                        squared=True, eps=1e-10), expected_rkd),
    "kdsvd": ("kdsvd", dict(ce_weight=0.5, feat_weight=7.0, k=2), expected_kdsvd),
    "one": ("one", dict(ce_weight=0.5, temperature=2.0, rampup=10, epoch_offset=-2), expected_one),
    "crd": ("crd", dict(ce_weight=0.5, feat_weight=1.5), expected_crd),
    "vanilla": ("vanilla", {}, expected_vanilla),
    "ctkd": ("ctkd", dict(ce_weight=0.3, kd_weight=0.7, t_start=1.5, t_end=12.0), expected_ctkd),
    "ctkd-zscore": ("ctkd", dict(ce_weight=0.3, kd_weight=0.7, t_start=1.5, t_end=12.0,
                                 logit_standardization=True, zscore_kd_weight=6.0,
                                 base_temperature=2.5), expected_ctkd),
    "mlkd": ("mlkd", dict(ce_weight=0.3, kd_weight=0.7, temperature=3.0), expected_mlkd),
    "mlkd-zscore": ("mlkd", dict(ce_weight=0.3, kd_weight=0.7, temperature=3.0,
                                 logit_standardization=True, zscore_kd_weight=6.0,
                                 base_temperature=2.5), expected_mlkd),
}


def losses_at(method, **arguments):
    distiller = build(method, **arguments).train()
    with torch.no_grad():
        return {name: float(value) for name, value in distiller(batch(), EPOCH)[1].items()}


def assert_every_weight_is_read(method):
    """The default for a method without a formula case here: each weight, changed alone,
    changes the losses (an ignored weight shows; where it goes is the formula case's to say)."""
    defaults, base = distiller_defaults(method), losses_at(method)
    for key in weight_keys(method):
        changed = losses_at(method, **{key: 2 * defaults[key] + 0.5})
        assert changed != base, f"{method}: distiller.{key} changes no loss"


def test_every_weight_of_every_method_is_set_away_from_its_default_or_shown_to_be_read():
    """A method with formula cases sets each of its weights away from the default in one of
    them, so a weight that is ignored shows; a method registered tomorrow without one gets the
    derived check, which is itself checked here on KD."""
    assert_every_weight_is_read("kd")
    for method in list_distillers():
        cases = [arguments for case_method, arguments, _ in CASES.values() if case_method == method]
        if not cases:
            assert_every_weight_is_read(method)
            continue
        given = {key: value for arguments in cases for key, value in arguments.items()}
        defaults = distiller_defaults(method)
        keys = set(weight_keys(method)) | {k for k in ("zscore_kd_weight", "base_temperature")
                                           if k in defaults}
        assert keys <= set(given), f"{method}: no case sets {sorted(keys - set(given))}"
        assert all(given[k] != defaults[k] for k in keys), method


@pytest.mark.parametrize("case", sorted(CASES))
def test_constructor_weights_reach_their_own_loss_term(case):
    method, arguments, expected_losses = CASES[case]
    distiller = build(method, **arguments).double().train()
    data = batch()
    images, targets = data.images.double(), data.targets
    logits, losses = distiller(data.map_images(torch.Tensor.double), EPOCH)
    with torch.no_grad():
        expected = expected_losses(distiller, images, targets, logits)
    assert losses.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(losses[name].detach(), value, rtol=1e-10, atol=0,
                                   msg=lambda m, name=name: f"{case} {name}: {m}")
    torch.testing.assert_close(sum(losses.values()).detach(), sum(expected.values()),
                               rtol=1e-10, atol=0)
