"""Generate tests/reference/baseline_losses.pt: the float64 oracle of the benchmark's baseline
losses (AT, NST, PKT, KDSVD, OFD, RKD, VID, SP, CRD, ReviewKD) and of the DOT optimizer, by
running the original implementation (megvii-research/mdistiller) on the inputs of
tests/baseline_inputs.py.

    git --git-dir=<mirror> archive <commit> | tar -x -C /tmp/mdistiller
    python tests/reference/generate_baselines.py /tmp/mdistiller [--commit <sha>]

The original code is imported from the given path, never copied here. Only what it needs to be
imported and built on a CPU is arranged: its packages are registered without running their
``__init__`` (which would import yacs/tensorboardX for the trainer), distillers get a namespace
in place of the yacs config and stub networks that return the fixed feature maps, CRD's alias
sampler (unused: the contrast indices are passed in) is kept off CUDA, and KDSVD's cast of the
maps to float32 before the SVD is made a no-op for float64 tensors so that the oracle is float64
(everything else runs exactly as written). See tests/reference/BASELINES.md.
"""
import argparse
import contextlib
import importlib
import subprocess
import sys
import types
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests import baseline_inputs as bi  # noqa: E402

OUT = Path(__file__).resolve().parent / "baseline_losses.pt"


def import_original(root: Path):
    """The original's modules by dotted name, from ``root`` (a checkout of mdistiller)."""
    for package, sub in (("mdistiller", ""), ("mdistiller.distillers", "distillers"),
                         ("mdistiller.engine", "engine")):
        module = types.ModuleType(package)
        module.__path__ = [str(root / "mdistiller" / sub)]
        sys.modules[package] = module
    names = ["AT", "NST", "PKT", "KDSVD", "OFD", "RKD", "VID", "SP", "CRD", "ReviewKD"]
    mods = {n: importlib.import_module(f"mdistiller.distillers.{n}") for n in names}
    mods["dot"] = importlib.import_module("mdistiller.engine.dot")
    return mods


def namespace(tree):
    """A nested attribute namespace standing in for the original's yacs config."""
    if isinstance(tree, dict):
        return types.SimpleNamespace(**{k: namespace(v) for k, v in tree.items()})
    return tree


class FixedNetwork(nn.Module):
    """Stands in for a network: returns fixed logits and feature dict, whatever the image."""

    def __init__(self, feats, preacts, pooled, stage_channels=None, bn_before_relu=None):
        super().__init__()
        stem = torch.zeros(feats[0].shape[0], 1, 2, 2, dtype=torch.float64)
        self.out = {"feats": [stem] + list(feats), "preact_feats": [stem] + list(preacts),
                    "pooled_feat": pooled}
        self.stage_channels = stage_channels
        self.bns = bn_before_relu

    def forward(self, image):
        logits = torch.zeros(self.out["pooled_feat"].shape[0], 3, dtype=torch.float64)
        return logits, self.out

    def get_stage_channels(self):
        return self.stage_channels

    def get_bn_before_relu(self):
        return self.bns


@contextlib.contextmanager
def float64_kept():
    """``Tensor.float()`` returns float64 tensors unchanged while active (KDSVD's SVD cast)."""
    original = torch.Tensor.float

    def keep(self, *args, **kwargs):
        return self if self.dtype == torch.float64 else original(self, *args, **kwargs)

    torch.Tensor.float = keep
    try:
        yield
    finally:
        torch.Tensor.float = original


def leaves(tensors):
    return [t.clone().requires_grad_(True) for t in tensors]


def run(distiller, student_leaves, **kwargs):
    """The original's distillation loss (FEAT weight 1) and the gradients of its inputs. (Modules
    are made float64 *before* the weight recipe fills them, so no value is rounded to float32.)"""
    distiller.double().train()
    image = torch.zeros(student_leaves[0].shape[0], 3, 2, 2, dtype=torch.float64)
    target = torch.zeros(student_leaves[0].shape[0], dtype=torch.long)
    _, losses = distiller.forward_train(image=image, target=target, **kwargs)
    loss = losses["loss_kd"].reshape(())
    loss.backward()
    return loss.detach(), [bi.record(t.grad if t.grad is not None else torch.zeros_like(t))
                           for t in student_leaves]


def param_grads(module: nn.Module):
    return {k: bi.record(p.grad) for k, p in module.named_parameters() if p.grad is not None}


def loss_cfg(name, **extra):
    return namespace({name: dict(LOSS=dict(CE_WEIGHT=1.0, FEAT_WEIGHT=1.0), **extra)})


def simple_methods(orig, case):
    """AT, NST, SP (stage maps), PKT, RKD (pooled features): no learnable part."""
    x = bi.case_inputs(case)
    out = {}
    specs = {
        "at": (orig["AT"].AT, loss_cfg("AT", P=2), "feats"),
        "nst": (orig["NST"].NST, loss_cfg("NST"), "feats"),
        "sp": (orig["SP"].SP, loss_cfg("SP"), "feats"),
        "pkt": (orig["PKT"].PKT, loss_cfg("PKT"), "pooled"),
        "rkd": (orig["RKD"].RKD, loss_cfg("RKD", DISTANCE_WEIGHT=25, ANGLE_WEIGHT=50,
                                           PDIST=dict(EPSILON=1e-12, SQUARED=False)), "pooled"),
    }
    for method, (cls, cfg, kind) in specs.items():
        if kind == "feats":
            s = leaves(x["student_feats"])
            student = FixedNetwork(s, s, x["student_pooled_maps_batch"])
            teacher = FixedNetwork(x["teacher_feats"], x["teacher_feats"], x["teacher_pooled_maps_batch"])
        else:
            s = leaves([x["student_pooled"]])
            dummy_s = [torch.zeros(len(s[0]), 1, 1, 1, dtype=torch.float64)]
            dummy_t = [torch.zeros(len(s[0]), 1, 1, 1, dtype=torch.float64)]
            student = FixedNetwork(dummy_s, dummy_s, s[0])
            teacher = FixedNetwork(dummy_t, dummy_t, x["teacher_pooled"])
        loss, grads = run(cls(student, teacher, cfg), s)
        out[method] = {"loss": loss, "grad_student": grads}
    return out


def kdsvd_case(orig, s_maps, t_maps):
    """KDSVD on the student's and teacher's ``feats[1:]`` (equal widths stage by stage)."""
    s = leaves(s_maps)
    pooled = torch.zeros(len(s[0]), 2, dtype=torch.float64)
    student, teacher = FixedNetwork(s, s, pooled), FixedNetwork(t_maps, t_maps, pooled)
    with float64_kept():
        loss, grads = run(orig["KDSVD"].KDSVD(student, teacher, loss_cfg("KDSVD", K=1)), s)
    return {"loss": loss, "grad_student": grads}


def vid_case(orig, case):
    x = bi.case_inputs(case)
    s = leaves(x["student_feats"])
    student = FixedNetwork(s, s, x["student_pooled_maps_batch"])
    teacher = FixedNetwork(x["teacher_feats"], x["teacher_feats"], x["teacher_pooled_maps_batch"])
    cfg = loss_cfg("VID", EPS=1e-5, INIT_PRED_VAR=5.0, INPUT_SIZE=(32, 32))
    distiller = orig["VID"].VID(student, teacher, cfg).double()
    for i, regressor in enumerate(distiller.regressors):
        bi.fill_prefixed_(regressor, f"regressors.{i}.")
    # the reference keeps the log-scales in a plain list; make them leaves to read their gradients
    distiller.log_scales = [torch.nn.Parameter(ls.detach().double()) for ls in distiller.log_scales]
    initial_log_scales = [ls.detach().clone() for ls in distiller.log_scales]
    loss, grads = run(distiller, s)
    return {"loss": loss, "grad_student": grads,
            "regressor_keys": [list(r.state_dict()) for r in distiller.regressors],
            "grad_regressors": [param_grads(r) for r in distiller.regressors],
            "initial_log_scales": initial_log_scales,
            "grad_log_scales": [ls.grad.clone() for ls in distiller.log_scales]}


def ofd_case(orig, case):
    x = bi.case_inputs(case)
    spec = bi.CASES[case]
    s = leaves(x["student_preacts"])
    bns = []
    for i, (c, _, _) in enumerate(spec["teacher"]):
        bn = nn.BatchNorm2d(c)
        with torch.no_grad():
            sign = torch.tensor([(-1.0) ** j for j in range(c)])
            bn.weight.copy_(bi.recipe_value(f"ofd.bn{i}.weight", (c,)) * sign)
            bn.bias.copy_(3.0 * bi.recipe_value(f"ofd.bn{i}.bias", (c,)) / 0.1)  # wide: both margin branches
        bns.append(bn)
    student = FixedNetwork(s, s, x["student_pooled_maps_batch"],
                           stage_channels=[1] + [c for c, _, _ in spec["student"]])
    teacher = FixedNetwork(x["teacher_preacts"], x["teacher_preacts"], x["teacher_pooled_maps_batch"],
                           stage_channels=[1] + [c for c, _, _ in spec["teacher"]], bn_before_relu=bns)
    cfg = namespace({"OFD": dict(LOSS=dict(CE_WEIGHT=1.0, FEAT_WEIGHT=1.0), CONNECTOR=dict(KERNEL_SIZE=1))})
    distiller = orig["OFD"].OFD(student, teacher, cfg).double()
    for i, connector in enumerate(distiller.connectors.connectors):
        bi.fill_prefixed_(connector, f"connectors.connectors.{i}.")
    margins = [m.reshape(-1).double().clone() for m in distiller.margins]
    loss, grads = run(distiller, s)
    return {"loss": loss, "grad_student": grads,
            "bn_weight": [bn.weight.detach().double() for bn in bns],
            "bn_bias": [bn.bias.detach().double() for bn in bns],
            "margins": margins,
            "connector_keys": [list(c.state_dict()) for c in distiller.connectors.connectors],
            "grad_connectors": [param_grads(c) for c in distiller.connectors.connectors]}


CRD_DIM, CRD_NUM_DATA, CRD_K, CRD_STEPS = bi.CRD_DIM, bi.CRD_NUM_DATA, bi.CRD_K, bi.CRD_STEPS
crd_indices = bi.crd_indices


def crd_case(orig, case):
    """Two consecutive steps: the first fixes the NCE constants, the second sees the memory the
    first updated."""
    spec = bi.CASES[case]
    crd = orig["CRD"]
    crd.AliasMethod.cuda = lambda self: None  # the sampler is never used: indices are passed in
    cfg = namespace({"CRD": dict(LOSS=dict(CE_WEIGHT=1.0, FEAT_WEIGHT=1.0),
                                 FEAT=dict(STUDENT_DIM=spec["student_dim"], TEACHER_DIM=spec["teacher_dim"],
                                           DIM=CRD_DIM),
                                 NCE=dict(K=CRD_K, MOMENTUM=0.5, TEMPERATURE=0.07))})
    steps = []
    distiller = None
    for step in range(CRD_STEPS):
        s_pooled = bi.vectors(case, f"crd_student{step}", spec["pooled_batch"], spec["student_dim"])
        t_pooled = bi.vectors(case, f"crd_teacher{step}", spec["pooled_batch"], spec["teacher_dim"])
        s = leaves([s_pooled])
        dummy = [torch.zeros(len(s_pooled), 1, 1, 1, dtype=torch.float64)]
        student = FixedNetwork(dummy, dummy, s[0])
        teacher = FixedNetwork(dummy, dummy, t_pooled)
        if distiller is None:
            distiller = crd.CRD(student, teacher, cfg, CRD_NUM_DATA).double()
            bi.fill_prefixed_(distiller.embed_s, "embed_s.")
            bi.fill_prefixed_(distiller.embed_t, "embed_t.")
            with torch.no_grad():
                for name in ("memory_v1", "memory_v2"):
                    getattr(distiller.contrast, name).copy_(
                        bi.recipe_value(f"contrast.{name}", (CRD_NUM_DATA, CRD_DIM)))
        else:
            distiller.student, distiller.teacher = student, teacher
        index, contrast_index = crd_indices(step, spec["pooled_batch"])
        for p in distiller.parameters():
            p.grad = None
        loss, grads = run(distiller, s, index=index, contrastive_index=contrast_index)
        steps.append({"loss": loss, "grad_student": grads,
                      "grad_embed_s": param_grads(distiller.embed_s),
                      "grad_embed_t": param_grads(distiller.embed_t),
                      "normalizers": distiller.contrast.params[2:4].clone(),
                      "memory_v1_rows": distiller.contrast.memory_v1[index].clone(),
                      "memory_v2_rows": distiller.contrast.memory_v2[index].clone()})
    # the reference keeps T (and K, momentum) in a float32 buffer: its T is float32(0.07)
    return {"dim": CRD_DIM, "num_data": CRD_NUM_DATA, "k": CRD_K, "steps": steps,
            "temperature": distiller.contrast.params[1].item(),
            "momentum": distiller.contrast.params[4].item(),
            "embed_keys": list(distiller.embed_s.state_dict()),
            "memory_v1": bi.record(distiller.contrast.memory_v1),
            "memory_v2": bi.record(distiller.contrast.memory_v2)}


def reviewkd_case(orig, case):
    x = bi.case_inputs(case)
    spec = bi.CASES[case]
    s_maps = leaves(x["student_feats"])
    s_pooled = leaves([x["student_pooled_maps_batch"]])[0]
    student = FixedNetwork(s_maps, s_maps, s_pooled)
    teacher = FixedNetwork(x["teacher_feats"], x["teacher_preacts"], x["teacher_pooled_maps_batch"])
    # the reference's channel/shape lists: shallowest first, the pooled feature last (its
    # SHAPES / OUT_SHAPES deepest first)
    in_channels = [c for c, _, _ in spec["student"]] + [spec["student_dim"]]
    out_channels = [c for c, _, _ in spec["teacher"]] + [spec["teacher_dim"]]
    shapes = [1] + [h for _, h, _ in spec["student"]][::-1]
    out_shapes = [1] + [h for _, h, _ in spec["teacher"]][::-1]
    cfg = namespace({"REVIEWKD": dict(SHAPES=shapes, OUT_SHAPES=out_shapes, IN_CHANNELS=in_channels,
                                      OUT_CHANNELS=out_channels, CE_WEIGHT=1.0, REVIEWKD_WEIGHT=1.0,
                                      WARMUP_EPOCHS=1, STU_PREACT=False, MAX_MID_CHANNEL=512)})
    distiller = orig["ReviewKD"].ReviewKD(student, teacher, cfg).double()
    bi.fill_prefixed_(distiller.abfs, "abfs.")
    loss, grads = run(distiller, s_maps + [s_pooled], epoch=1)
    return {"loss": loss, "grad_student": grads,
            "abfs_keys": list(distiller.abfs.state_dict()),
            "grad_abfs": param_grads(distiller.abfs)}


def dot_trajectory(orig):
    params = bi.dot_parameters()
    optimizer = orig["dot"].DistillationOrientedTrainer(list(params.values()), **bi.DOT_HP)
    trajectory = []
    for step in range(bi.DOT_STEPS):
        bi.dot_step(optimizer, params, step)
        trajectory.append({k: v.detach().clone() for k, v in params.items()})
    state = optimizer.state_dict()["state"]
    return {"trajectory": trajectory,
            "final_state": {i: {k: v.clone() for k, v in s.items()} for i, s in state.items()}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mdistiller", type=Path, help="a checkout (or archive export) of mdistiller")
    parser.add_argument("--commit", help="the commit of that checkout (read from git when omitted)")
    args = parser.parse_args(argv)
    commit = args.commit
    if commit is None:
        commit = subprocess.run(["git", "-C", str(args.mdistiller), "rev-parse", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
    if not commit:
        parser.error(f"{args.mdistiller} is not a git checkout: name its commit with --commit")
    if not (args.mdistiller / "mdistiller" / "distillers" / "CRD.py").is_file():
        parser.error(f"{args.mdistiller} holds no mdistiller/distillers/: pass the checkout's root")
    orig = import_original(args.mdistiller.resolve())
    torch.manual_seed(0)
    data = {"version": 1, "dtype": "float64", "source": "megvii-research/mdistiller",
            "commit": commit, "torch": str(torch.__version__), "cases": {}}
    for case in bi.CASES:
        c = simple_methods(orig, case)
        c["vid"] = vid_case(orig, case)
        c["ofd"] = ofd_case(orig, case)
        c["crd"] = crd_case(orig, case)
        c["reviewkd"] = reviewkd_case(orig, case)
        if case == "res32x4_res8x4":
            x = bi.case_inputs(case)
            c["kdsvd"] = kdsvd_case(orig, x["student_feats"], x["teacher_feats"])
        data["cases"][case] = c
    data["cases"]["kdsvd_small"] = {"kdsvd": kdsvd_case(orig, *bi.kdsvd_inputs())}
    data["dot"] = dot_trajectory(orig)
    torch.save(data, OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB) from mdistiller {commit}")


if __name__ == "__main__":
    main()
