"""MLKD's loss terms and CTKD's temperature, gradient reversal and curricula against the float64
oracle computed by the logit-standardization paper's own code (reference/LS_ORACLES.md)."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from distillers.ctkd_losses import (GlobalTemperature, cosine_curriculum, linear_curriculum,
                                    reverse_gradient)
from distillers.losses import kd_loss, zscore
from distillers.mlkd_losses import confidence_masks, median_threshold, mlkd_loss_terms

ORACLE = torch.load(Path(__file__).parent / "reference" / "ls_oracles.pt", weights_only=True)
MLKD_CASES = ORACLE["mlkd"]
TERM_WEIGHTS = {"loss_ce": ("ce", "ce_weight"), "loss_kd": ("kd", "kd_weight"),
                "loss_cc": ("cc", "kd_weight"), "loss_bc": ("bc", "kd_weight")}


def assert_matches_oracle(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-10)


def mlkd_id(case):
    n, c = case["student_weak"].shape
    return f"N{n}-C{c}-T{case['hp']['temperature']:g}-ties_{case['ties']}-" \
           f"{'zscore' if case['hp']['logit_standardization'] else 'plain'}"


@pytest.mark.parametrize("case", MLKD_CASES, ids=[mlkd_id(c) for c in MLKD_CASES])
def test_mlkd_terms_match_the_original_in_value_and_gradient(case):
    hp = case["hp"]
    weak = case["student_weak"].clone().requires_grad_(True)
    strong = case["student_strong"].clone().requires_grad_(True)
    terms = mlkd_loss_terms(weak, strong, case["teacher_weak"], case["teacher_strong"],
                            case["target"], hp["temperature"], hp["logit_standardization"])
    for original_name, (ours, weight) in TERM_WEIGHTS.items():
        term = hp[weight] * terms[ours]
        grad_weak, grad_strong = torch.autograd.grad(term, [weak, strong], retain_graph=True,
                                                     allow_unused=True)
        assert_matches_oracle(term.detach(), case[original_name])
        for grad, view in ((grad_weak, "weak"), (grad_strong, "strong")):
            grad = torch.zeros_like(weak) if grad is None else grad
            assert_matches_oracle(grad, case[f"grad_{original_name}_{view}"])


@pytest.mark.parametrize("case", MLKD_CASES, ids=[mlkd_id(c) for c in MLKD_CASES])
def test_mlkd_median_thresholds_equal_the_originals_percentiles_exactly(case):
    p = F.softmax(case["teacher_weak"], dim=1)
    assert median_threshold(p.max(dim=1).values) == case["sample_threshold"]
    assert median_threshold(p.sum(dim=0)) == case["class_threshold"]


def test_mlkd_masks_keep_every_value_tied_at_the_median():
    """Ties at the median are inside the masks (the original's ``le``): with the two middle
    confidences equal, one more than half the samples (classes) of an even batch count."""
    tied = [c for c in MLKD_CASES if c["ties"] == "both" and len(c["target"]) % 2 == 0]
    assert tied
    for case in tied:
        sample_mask, class_mask = confidence_masks(case["teacher_weak"])
        assert sample_mask.sum() == len(sample_mask) // 2 + 1
        assert class_mask.sum() >= len(class_mask) // 2 + 1


def test_mlkd_terms_read_nothing_back_to_the_host():
    """The medians and masks stay on the device: on meta tensors (shapes, no values) any read
    of a value (``.item()``, ``bool()``, ``np.percentile``) raises."""
    with torch.device("meta"):
        views = [torch.randn(8, 10) for _ in range(4)]
        terms = mlkd_loss_terms(*views, torch.zeros(8, dtype=torch.long), 4.0, True)
    assert all(t.device.type == "meta" and t.shape == () for t in terms.values())


def test_mlkd_terms_are_float32_under_bf16_autocast():
    case = MLKD_CASES[0]
    views = [case[k].float().bfloat16() for k in
             ("student_weak", "student_strong", "teacher_weak", "teacher_strong")]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = mlkd_loss_terms(*views, case["target"], 4.0)
    assert {t.dtype for t in terms.values()} == {torch.float32}


def standardized(student, teacher, flag):
    return (zscore(student), zscore(teacher)) if flag else (student, teacher)


def ctkd_kd_id(case):
    return f"{case['original_class']}-T{case['hp']['temperature']:g}"


def temperature_id(case):
    zscore_tag = "-zscore" if case["hp"]["logit_standardization"] else ""
    return "theta{theta:g}-lambda{lambda:.3g}-t{t_start:g}_{t_end:g}".format(**case["hp"]) + zscore_tag


@pytest.mark.parametrize("case", ORACLE["ctkd_kd"], ids=ctkd_kd_id)
def test_kd_at_a_learnable_temperature_matches_ctkds_distillkl_and_its_logit_stand_twin(case):
    student = case["student_logits"].clone().requires_grad_(True)
    temperature = torch.tensor(case["hp"]["temperature"], dtype=torch.float64, requires_grad=True)
    loss = kd_loss(*standardized(student, case["teacher_logits"],
                                 case["hp"]["logit_standardization"]), temperature)
    grad_student, grad_temperature = torch.autograd.grad(loss, [student, temperature])
    assert_matches_oracle(loss.detach().reshape(1), case["loss"])   # the original's T is [1]
    assert_matches_oracle(grad_student, case["grad_student_logits"])
    assert_matches_oracle(grad_temperature.reshape(1), case["grad_temperature"])


def test_ctkd_oracle_holds_both_original_losses():
    assert {c["original_class"] for c in ORACLE["ctkd_kd"]} == {"DistillKL", "DistillKL_logit_stand"}
    assert all(c["hp"]["logit_standardization"] == (c["original_class"] == "DistillKL_logit_stand")
               for c in ORACLE["ctkd_kd"])


@pytest.mark.parametrize("case", ORACLE["ctkd_temperature"], ids=temperature_id)
def test_global_temperature_matches_the_original_value_and_reversed_gradient(case):
    """The original multiplies θ's gradient by its curriculum value λ; our strength is −λ."""
    hp = case["hp"]
    module = GlobalTemperature(hp["t_start"], hp["t_end"], initial_theta=hp["theta"]).double()
    student = case["student_logits"].clone().requires_grad_(True)
    temperature = module(strength=-hp["lambda"])
    loss = kd_loss(*standardized(student, case["teacher_logits"], hp["logit_standardization"]),
                   temperature)
    loss.backward()
    assert_matches_oracle(temperature.detach().reshape(1), case["temperature"])
    assert_matches_oracle(loss.detach().reshape(1), case["loss"])
    assert_matches_oracle(module.theta.grad.reshape(1), case["grad_theta"])
    assert_matches_oracle(student.grad, case["grad_student_logits"])


def test_reverse_gradient_is_the_identity_forward_and_scales_the_gradient_by_minus_strength():
    x = torch.tensor([0.5, -2.0], dtype=torch.float64, requires_grad=True)
    y = reverse_gradient(x, 0.3)
    assert torch.equal(y, x)
    (y * torch.tensor([1.0, 4.0], dtype=torch.float64)).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-0.3, -1.2], dtype=torch.float64))


def curricula(kind):
    return [c for c in ORACLE["ctkd_curricula"] if c["kind"] == kind]


@pytest.mark.parametrize("case", curricula("CosineDecay"), ids=lambda c: f"loops{c['num_loops']}")
def test_cosine_curriculum_is_the_originals_cosine_decay_negated_at_every_epoch(case):
    ours = torch.tensor([cosine_curriculum(e, case["num_loops"], start=-case["max_value"],
                                           end=-case["min_value"]) for e in case["epochs"].tolist()],
                        dtype=torch.float64)
    assert torch.equal(ours, -case["values"])


@pytest.mark.parametrize("case", [c for c in curricula("LinearDecay") if c["max_value"] == 0.0],
                         ids=lambda c: f"loops{c['num_loops']}")
def test_linear_curriculum_is_the_originals_linear_decay_negated_before_its_last_step(case):
    loops = case["num_loops"]
    epochs = case["epochs"].tolist()
    ours = torch.tensor([linear_curriculum(e, loops, start=0.0, end=-case["min_value"])
                         for e in epochs], dtype=torch.float64)
    before_last = torch.tensor([e < loops for e in epochs])
    torch.testing.assert_close(ours[before_last], -case["values"][before_last], rtol=1e-12, atol=0)
    assert ours[-1] == -case["min_value"]                    # ours reaches the end value
    assert case["values"][-1] == case["min_value"] * (loops - 1) / loops   # the original stops short


def test_curricula_refuse_a_non_positive_length():
    with pytest.raises(ValueError, match="positive number of epochs"):
        cosine_curriculum(3, 0)
