"""CRD as a method: its full training forward equals the original's (float64 oracle), its own
sampler draws contrast sets as the original's datasets do, reproducibly and resumably, and its
memory bank travels with the method, not with the student."""
from pathlib import Path

import pytest
import torch
from torch import nn

import models
from distillers import build_distiller
from tests import baseline_inputs as bi
from tests.test_baseline_losses import assert_param_grads
from utils.batch import Batch
from utils.errors import UserError

ORACLE = torch.load(Path(__file__).parent / "reference" / "baseline_losses.pt", weights_only=True)


class FixedFeatures(nn.Module):
    """Stands in for a network: ``forward_features`` returns the pooled feature it is given."""

    def __init__(self, pooled: torch.Tensor):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1, dtype=torch.float64))  # dtype/device probes
        self.pooled = pooled

    def forward_features(self, images):
        logits = torch.zeros(len(self.pooled), 3, dtype=torch.float64)
        return {"logits": logits, "feats": [], "preact_feats": [], "pooled_feat": self.pooled}

    def forward(self, images):
        return self.forward_features(images)["logits"]


class FixedContrast(nn.Module):
    """The test seam: hands the method the oracle's contrast sets instead of drawing them."""

    def __init__(self):
        super().__init__()
        self.index = self.contrast = None

    def forward(self, indices):
        assert torch.equal(indices, self.index)
        return self.contrast


def oracle_distiller(case, expected):
    spec = bi.CASES[case]
    student = FixedFeatures(torch.zeros(1, spec["student_dim"], dtype=torch.float64))
    teacher = FixedFeatures(torch.zeros(1, spec["teacher_dim"], dtype=torch.float64))
    num_data = expected["num_data"]
    d = build_distiller({"name": "crd", "feat_weight": 1.0, "embed_dim": expected["dim"],
                         "nce_k": expected["k"], "nce_momentum": expected["momentum"],
                         "nce_temperature": expected["temperature"]}, student, teacher,
                        train_size=num_data, train_targets=torch.arange(num_data) % 4, seed=0)
    bi.fill_prefixed_(d.embed_s, "embed_s.")
    bi.fill_prefixed_(d.embed_t, "embed_t.")
    with torch.no_grad():
        for name in ("memory_v1", "memory_v2"):
            getattr(d.memory, name).copy_(bi.recipe_value(f"contrast.{name}", (num_data, expected["dim"])))
    d.sampler = FixedContrast()
    return d.train()


@pytest.mark.parametrize("case", list(bi.CASES))
def test_method_forward_matches_the_original_two_steps(case):
    """The original's ``CRD.forward_train`` (pooled features, its fixed contrast indices) step by
    step: loss, the student feature's and the embeddings' gradients, NCE constants, bank rows."""
    spec, expected = bi.CASES[case], ORACLE["cases"][case]["crd"]
    d = oracle_distiller(case, expected)
    assert list(d.embed_s.state_dict()) == expected["embed_keys"]
    for step, want in enumerate(expected["steps"]):
        pooled = bi.vectors(case, f"crd_student{step}", spec["pooled_batch"], spec["student_dim"])
        d.student.pooled = pooled.clone().requires_grad_(True)
        d.teacher.model.pooled = bi.vectors(case, f"crd_teacher{step}", spec["pooled_batch"], spec["teacher_dim"])
        index, d.sampler.contrast = bi.crd_indices(step, spec["pooled_batch"])
        d.sampler.index = index
        d.zero_grad(set_to_none=True)
        images = torch.zeros(len(index), 3, 2, 2, dtype=torch.float64)
        _, losses = d(Batch(images, torch.zeros(len(index), dtype=torch.long), index), 1)
        losses["loss_feat"].backward()
        bi.assert_matches(losses["loss_feat"], want["loss"])
        bi.assert_matches(d.student.pooled.grad, want["grad_student"][0])
        assert_param_grads(d.embed_s, want["grad_embed_s"])
        assert_param_grads(d.embed_t, want["grad_embed_t"])
        bi.assert_matches(d.memory.normalizers, want["normalizers"])
        bi.assert_matches(d.memory.memory_v1[index], want["memory_v1_rows"])
        bi.assert_matches(d.memory.memory_v2[index], want["memory_v2_rows"])
    bi.assert_matches(d.memory.memory_v1, expected["memory_v1"])
    bi.assert_matches(d.memory.memory_v2, expected["memory_v2"])


TRAIN_SIZE, CLASSES = 60, 6
TARGETS = torch.randperm(TRAIN_SIZE, generator=torch.Generator().manual_seed(3)) % CLASSES


def crd(seed=0, **section):
    torch.manual_seed(0)
    student, teacher = models.build_model("resnet8", CLASSES), models.build_model("resnet8", CLASSES)
    return build_distiller({"name": "crd", "nce_k": 40, "embed_dim": 8, **section}, student, teacher,
                           train_size=TRAIN_SIZE, train_targets=TARGETS, seed=seed)


@pytest.mark.parametrize("mode", ["exact", "relax"])
def test_negatives_come_from_other_classes_and_the_positive_as_the_mode_says(mode):
    sampler = crd(mode=mode).sampler
    indices = torch.arange(TRAIN_SIZE)
    for _ in range(3):
        drawn = sampler(indices)
        assert drawn.shape == (TRAIN_SIZE, 41)
        classes = TARGETS[drawn]
        assert (classes[:, 1:] != TARGETS[:, None]).all()       # never the positive's class
        assert (classes[:, 0] == TARGETS).all()
        if mode == "exact":
            assert torch.equal(drawn[:, 0], indices)
    # every sample of the other classes is reachable (uniform over them, not a subset)
    others = sampler(torch.zeros(2000, dtype=torch.long))[:, 1:]
    assert set(others.unique().tolist()) == set((TARGETS != TARGETS[0]).nonzero().flatten().tolist())


def test_same_seed_same_draws_and_a_sample_draws_the_same_wherever_it_sits():
    indices = torch.tensor([7, 3, 50, 21])
    a, b, c = crd(seed=5).sampler, crd(seed=5).sampler, crd(seed=6).sampler
    first = a(indices)
    assert torch.equal(first, b(indices)) and not torch.equal(first, c(indices))
    assert not torch.equal(a(indices), first)              # the stream moves on each draw
    shuffled = crd(seed=5).sampler(indices[[2, 0, 3, 1]])  # the order of the global batch
    assert torch.equal(shuffled, first[[2, 0, 3, 1]])


def test_bank_and_draw_count_are_checkpointed_with_the_method_not_the_student():
    d = crd(seed=1).train()
    batch = Batch(torch.randn(4, 3, 32, 32), TARGETS[:4].clone(), torch.arange(4))
    sum(d(batch, 1)[1].values()).backward()
    state = d.checkpoint_state()
    assert not any("memory" in k or "sampler" in k or "embed" in k for k in state["model"])
    assert {"memory.memory_v1", "memory.memory_v2", "memory.normalizers", "sampler.draws"} <= set(state["distiller"])
    assert int(state["distiller"]["sampler.draws"]) == 1 and (state["distiller"]["memory.normalizers"] > 0).all()
    restored = crd(seed=1)
    restored.load_checkpoint_state(state)
    assert torch.equal(restored.sampler(batch.indices), d.sampler(batch.indices))   # the stream resumes


def test_user_errors_name_the_key():
    for section, message in (({"nce_k": TRAIN_SIZE}, "distiller.nce_k=60"),
                             ({"mode": "approximate"}, "distiller.mode='approximate'")):
        with pytest.raises(UserError, match=message):
            crd(**section)
    with pytest.raises(UserError, match="dataset indices"):
        crd().train()(Batch(torch.randn(2, 3, 32, 32), torch.zeros(2, dtype=torch.long)), 1)


def test_a_smoke_run_keeps_the_recipe_but_fits_the_negatives_to_its_few_images():
    from launch.build import load_run_config
    from tests.runs import REPO
    path = str(REPO / "configs/cifar100/crd/res32x4_res8x4.yaml")
    assert load_run_config(path).distiller["nce_k"] == 16384
    smoke = load_run_config(path, ["data.train_size=48"], smoke=True)
    assert smoke.distiller["nce_k"] == 47 and smoke.distiller["feat_weight"] == 0.8
