"""The inputs of the baseline-loss oracle (tests/reference/BASELINES.md), shared by its generator
(tests/reference/generate_baselines.py) and the tests, so neither stores what both can draw.

Everything is float64 and drawn from seeded CPU generators (``tests.deterministic``): feature
maps, weights of the learnable parts (the weight recipe, keyed by the reference's state-dict
names) and the toy problem of the DOT trajectory test. Large gradients are compared through
exact summaries (marginal sums along every dimension and a dot product with a seeded probe)
rather than stored whole; small ones are stored whole.
"""
from typing import Dict, List, Sequence

import torch
from torch import nn

from tests.deterministic import make_input, recipe_value

# Feature shapes (C, H, W) of feats[1:] (post-activation stage maps after the stem), the
# pre-activation maps of the same stages, and the pooled feature width. "res32x4_res8x4" is the
# benchmark's CIFAR pair at its real shapes; "small" mixes sizes so that both pooling
# directions of the size-matching rule run, and is small enough to store gradients whole.
CASES = {
    "res32x4_res8x4": dict(
        batch=2, pooled_batch=8,
        student=[(64, 32, 32), (128, 16, 16), (256, 8, 8)], student_dim=256,
        teacher=[(64, 32, 32), (128, 16, 16), (256, 8, 8)], teacher_dim=256),
    "small": dict(
        batch=3, pooled_batch=5,
        student=[(4, 8, 8), (6, 4, 4), (5, 4, 4)], student_dim=6,
        teacher=[(5, 4, 4), (7, 8, 8), (3, 4, 4)], teacher_dim=9),
}
# KDSVD needs equal widths stage by stage (no pooling); non-square maps are allowed.
KDSVD_SMALL = dict(batch=3, student=[(4, 5, 8), (6, 4, 6), (3, 3, 4)],
                   teacher=[(5, 4, 8), (7, 5, 6), (4, 2, 4)])

FULL_LIMIT = 4096   # tensors with at most this many elements are stored whole
PROBE_SEED = 987654


def _seed(case: str, role: str, index: int) -> int:
    return sum(map(ord, f"{case}/{role}")) * 1000 + index


def maps(case: str, role: str, batch: int, shapes: Sequence, nonnegative: bool) -> List[torch.Tensor]:
    """Float64 maps ``[batch, C, H, W]``; ``nonnegative`` (ReLU'd) for post-activation maps."""
    out = []
    for i, shape in enumerate(shapes):
        x = make_input((batch,) + tuple(shape), seed=_seed(case, role, i))
        out.append(x.clamp(min=0) if nonnegative else x)
    return out


def vectors(case: str, role: str, batch: int, dim: int) -> torch.Tensor:
    """Float64 feature vectors ``[batch, dim]``, nonnegative (pooled post-activation features)
    and never an all-zero row (PKT's gradient is NaN there, in the reference as in ours)."""
    return make_input((batch, dim), seed=_seed(case, role, 0)).abs()


def case_inputs(case: str) -> Dict[str, object]:
    """The student's and teacher's feats, preact_feats and pooled_feat of ``case``."""
    spec = CASES[case]
    n, m = spec["batch"], spec["pooled_batch"]
    return {
        "student_feats": maps(case, "student_feats", n, spec["student"], True),
        "teacher_feats": maps(case, "teacher_feats", n, spec["teacher"], True),
        "student_preacts": maps(case, "student_preacts", n, spec["student"], False),
        "teacher_preacts": maps(case, "teacher_preacts", n, spec["teacher"], False),
        "student_pooled": vectors(case, "student_pooled", m, spec["student_dim"]),
        "teacher_pooled": vectors(case, "teacher_pooled", m, spec["teacher_dim"]),
        # ReviewKD's pooled features come with the maps' batch
        "student_pooled_maps_batch": vectors(case, "student_pooled_n", n, spec["student_dim"]),
        "teacher_pooled_maps_batch": vectors(case, "teacher_pooled_n", n, spec["teacher_dim"]),
    }


def kdsvd_inputs():
    spec = KDSVD_SMALL
    return (maps("kdsvd_small", "student", spec["batch"], spec["student"], True),
            maps("kdsvd_small", "teacher", spec["batch"], spec["teacher"], True))


@torch.no_grad()
def fill_prefixed_(module: nn.Module, prefix: str) -> nn.Module:
    """The weight recipe on ``module`` as if its keys were ``prefix + key`` (so two modules with
    the reference's key layout get the same values whatever their classes)."""
    for key, tensor in module.state_dict().items():
        if tensor.is_floating_point():
            tensor.copy_(recipe_value(prefix + key, tensor.shape))
    return module


def summarize(t: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Exact summaries of a large tensor: the sum along all dimensions but one, for each
    dimension, a dot product with a seeded probe, and the largest magnitude (for the scale)."""
    t = t.detach().double()
    out = {f"marginal{d}": t.sum(dim=[e for e in range(t.dim()) if e != d]) for d in range(t.dim())}
    out["probe"] = (t * make_input(t.shape, seed=PROBE_SEED)).sum()
    out["absmax"] = t.abs().max()
    out["numel"] = torch.tensor(t.numel())
    return out


def record(t: torch.Tensor):
    """What the oracle stores for ``t``: the tensor itself when small, else ``summarize(t)``."""
    t = t.detach().double()
    return t.clone() if t.numel() <= FULL_LIMIT else summarize(t)


def assert_matches(actual: torch.Tensor, expected, rtol: float = 1e-6, atol: float = 1e-10) -> None:
    """``actual`` against a stored record: elementwise (rtol 1e-6), or summary by summary, where a
    sum of m terms of magnitude ≤ A gets an absolute slack of 1e-11·m·A (float64 summation
    noise is ~1e-16·sqrt(m)·A; a wrong element of relative size 1e-6 exceeds it)."""
    actual = actual.detach().double()
    if torch.is_tensor(expected):
        torch.testing.assert_close(actual.reshape(expected.shape), expected, rtol=rtol, atol=atol)
        return
    mine = summarize(actual)
    scale = float(expected["absmax"])
    torch.testing.assert_close(mine["absmax"], expected["absmax"], rtol=rtol, atol=atol)
    numel = int(expected["numel"])
    for key, value in expected.items():
        if key in ("absmax", "numel"):
            continue
        terms = numel // max(1, value.numel())
        torch.testing.assert_close(mine[key], value, rtol=rtol, atol=max(atol, 1e-11 * terms * scale),
                                   msg=lambda m, key=key: f"summary {key}: {m}")


# ---- CRD: a small memory bank, two steps with fixed indices
CRD_DIM, CRD_NUM_DATA, CRD_K, CRD_STEPS = 16, 40, 12, 2


def crd_indices(step: int, batch: int):
    """Fixed sample indices and contrast sets (own index first, then K others) of a step."""
    g = torch.Generator().manual_seed(500 + step)
    index = torch.randperm(CRD_NUM_DATA, generator=g)[:batch]
    negatives = torch.randint(0, CRD_NUM_DATA, (batch, CRD_K), generator=g)
    return index, torch.cat([index.unsqueeze(1), negatives], dim=1)


# ---- DOT: a toy problem with parameters that see both losses, only the task loss, only the
# distillation loss, and none, so every branch of the optimizer's step runs.
DOT_STEPS = 6
DOT_HP = dict(lr=0.1, momentum=0.9 - 0.075, momentum_kd=0.9 + 0.075, weight_decay=5e-4)
DOT_LR_AFTER = {3: 0.01}   # step index → new lr (a schedule's decay mid-run)


def dot_parameters() -> Dict[str, torch.Tensor]:
    """Initial values of the toy parameters (float64, leaves requiring grad)."""
    shapes = {"shared": (4, 3), "task_only": (4,), "kd_only": (3, 3), "unused": (2,)}
    return {name: recipe_value(f"dot.{name}", shape).clone().requires_grad_(True)
            for name, shape in shapes.items()}


def dot_losses(params: Dict[str, torch.Tensor], step: int):
    """``(loss_kd, loss_task)`` of step ``step``: squared errors on seeded data."""
    x = make_input((5, 3), seed=1000 + step)
    y = make_input((5, 4), seed=2000 + step)
    y_kd = make_input((5, 4), seed=3000 + step)
    h = x @ params["shared"].t()
    loss_task = (h + params["task_only"] - y).pow(2).mean()
    loss_kd = ((x @ params["kd_only"]) @ params["shared"].t() - y_kd).pow(2).mean()
    return loss_kd, loss_task


def dot_step(optimizer, params: Dict[str, torch.Tensor], step: int, fixed=None, schedule=None) -> None:
    """One step as the DOT trainer makes it: the schedule's lr, then the distillation loss's
    backward and ``step_kd``, the task loss's backward and ``step``. ``fixed``: parameters of the
    toy problem held constant (not optimised)."""
    schedule = DOT_LR_AFTER if schedule is None else schedule
    if step in schedule:
        for group in optimizer.param_groups:
            group["lr"] = schedule[step]
    loss_kd, loss_task = dot_losses({**(fixed or {}), **params}, step)
    optimizer.zero_grad(set_to_none=True)
    loss_kd.backward(retain_graph=True)
    optimizer.step_kd()
    optimizer.zero_grad(set_to_none=True)
    loss_task.backward()
    optimizer.step()
