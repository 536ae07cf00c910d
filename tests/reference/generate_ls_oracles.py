"""Writes ``ls_oracles.pt``: float64 oracle cases of MLKD's loss and of CTKD's temperature,
curricula and KD losses, computed by the original code of the logit-standardization paper
(sunshangquan/logit-standardization-KD). See tests/reference/LS_ORACLES.md.

The original is not part of this repository: pass the root of a copy of it at ORIGINAL_COMMIT,

    git --git-dir=<mirror> archive f6e5aa5172bad618e801163c3385322eea673754 | tar -x -C /tmp/lskd
    python tests/reference/generate_ls_oracles.py /tmp/lskd

Every file used is checked against its git blob hash at that commit, so the numbers always come
from exactly that code. What is arranged around it, and why:
- MLKD (``mdistiller/distillers/MLKD.py``): its package is registered without running its
  ``__init__`` (which imports every distiller and the yacs config); the yacs config becomes a
  plain namespace; student and teacher are stubs returning fixed logits for the weak and the
  strong image; ``np.percentile`` is wrapped (same function, same arguments) only to record the
  thresholds the original computes.
- CTKD: ``models/temp_global.py`` and ``distiller_zoo/KD.py`` are imported as they are;
  ``Tensor.cuda`` is the identity while they run (they call ``temp.cuda()``); the curricula
  ``CosineDecay``/``LinearDecay`` are the class definitions of ``train_student.py``, executed
  alone (the module itself imports the CRD, dataset and model packages).
Inputs are drawn from seeded float64 generators; nothing is rounded to float32.
"""
import argparse
import ast
import contextlib
import datetime
import hashlib
import importlib
import importlib.util
import math
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

ORIGINAL_REPOSITORY = "sunshangquan/logit-standardization-KD"
ORIGINAL_COMMIT = "f6e5aa5172bad618e801163c3385322eea673754"
BLOBS = {   # path in the original -> git blob hash at ORIGINAL_COMMIT (git rev-parse COMMIT:PATH)
    "mdistiller/distillers/MLKD.py": "3eaf81965f89e764bb2ba2f7a1faca71646e7ca8",
    "mdistiller/distillers/_base.py": "901ddcf9002c725f946a8459dbecc9fe038efe2c",
    "mdistiller/distillers/loss.py": "fdd22af1aafa2dc560e8324c42d8c888da044ed8",
    "CTKD/models/temp_global.py": "1c1459144f01705e7115e17f2e65cfb53f327db5",
    "CTKD/distiller_zoo/KD.py": "bd2a0654cb39153f7d5cd1ed676693d21ca90a2a",
    "CTKD/train_student.py": "56625f710a8921908ef061fe4b026c4de037d1fd",
}
OUTPUT = Path(__file__).with_name("ls_oracles.pt")

# MLKD: (batch, classes, logit scale, base temperature, CE weight, KD weight, Z-score, ties).
# ties: "rows" makes the two middle per-sample confidences equal (the median is tied), "columns"
# the two middle per-class confidence sums, "both" both; odd batches have a middle element.
MLKD_CASES = [
    (8, 10, 2.0, 4.0, 1.0, 1.0, False, "none"),
    (8, 10, 2.0, 4.0, 0.1, 9.0, False, "rows"),
    (8, 10, 3.0, 2.0, 0.1, 9.0, True, "both"),
    (7, 12, 1.5, 3.0, 0.5, 6.0, False, "both"),
    (7, 12, 1.5, 2.0, 0.5, 6.0, True, "rows"),
    (64, 100, 3.0, 4.0, 0.1, 9.0, False, "columns"),
    (32, 100, 3.0, 2.0, 0.1, 9.0, True, "none"),
]
# CTKD's KD losses: (batch, classes, logit scale, temperature).
CTKD_KD_CASES = [(8, 10, 2.0, 1.0), (8, 100, 3.0, 2.0), (16, 100, 2.0, 4.0), (8, 10, 1.0, 17.3)]
# CTKD's global temperature: θ values, λ values (0, epoch 1 of the cosine curriculum, −0.5,
# full reversal, a positive λ that does not reverse), (t_start, t_end).
CTKD_THETAS = [1.0, -1.5, 3.0]
CTKD_LAMBDAS = [0.0, -0.02447174185242318, -0.5, -1.0, 0.7]
CTKD_T_RANGES = [(1.0, 20.0), (2.0, 28.0)]
# Curricula: (max, min, loops); each evaluated at epochs −2 … loops + 3.
CURRICULA = [(0.0, -1.0, 10), (0.5, -2.0, 7), (1.0, 0.0, 240)]


def git_blob_hash(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def check_copy(root: Path) -> dict:
    """The blob hash of every original file used; refuses a file that is not ORIGINAL_COMMIT's."""
    found = {}
    for path, expected in BLOBS.items():
        blob = git_blob_hash((root / path).read_bytes())
        if blob != expected:
            raise SystemExit(f"error: {root / path} is not {path} of {ORIGINAL_REPOSITORY} at "
                             f"{ORIGINAL_COMMIT} (blob {blob}, expected {expected})")
        found[path] = blob
    return found


def load_file(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def import_mlkd(root: Path):
    """The original ``MLKD.py`` module, its package registered without its ``__init__``."""
    for package, sub in (("mdistiller", ""), ("mdistiller.distillers", "distillers")):
        module = types.ModuleType(package)
        module.__path__ = [str(root / "mdistiller" / sub)]
        sys.modules[package] = module
    return importlib.import_module("mdistiller.distillers.MLKD")


def curricula_classes(root: Path) -> dict:
    """``CosineDecay`` and ``LinearDecay`` as ``train_student.py`` defines them, executed alone."""
    tree = ast.parse((root / "CTKD/train_student.py").read_text())
    wanted = [n for n in tree.body if isinstance(n, ast.ClassDef)
              and n.name in ("CosineDecay", "LinearDecay")]
    namespace = {"math": math}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), "CTKD/train_student.py", "exec"),
         namespace)
    return {name: namespace[name] for name in ("CosineDecay", "LinearDecay")}


@contextlib.contextmanager
def cuda_is_identity():
    """``Tensor.cuda()`` returns the tensor itself while active (CTKD's ``temp.cuda()``)."""
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = original


class TwoViewNetwork(nn.Module):
    """Stands in for a network: the fixed logits of the weak or the strong image."""

    def __init__(self, weak_image, weak_logits, strong_logits):
        super().__init__()
        self.weak_image, self.weak_logits, self.strong_logits = weak_image, weak_logits, strong_logits

    def forward(self, image):
        return (self.weak_logits if image is self.weak_image else self.strong_logits), {}


def namespace(tree):
    if isinstance(tree, dict):
        return types.SimpleNamespace(**{k: namespace(v) for k, v in tree.items()})
    return tree


def median_position_pair(values: torch.Tensor):
    """Indices of the two middle values (sorted order) of a 1-D tensor."""
    order = torch.argsort(values)
    low = (len(values) - 1) // 2
    return order[low], order[low + 1]


def tied_at_median(values: torch.Tensor) -> bool:
    """Whether the median of ``values`` is a value that at least two of them have."""
    ordered = torch.sort(values).values
    low, high = (len(values) - 1) // 2, len(values) // 2
    return bool(ordered[low] == ordered[high] and (ordered == ordered[low]).sum() >= 2)


def tie_middle(teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """The teacher's weak logits with the two middle per-sample confidences made equal (a row
    copied onto another) and/or the two middle per-class sums (a column copied onto another),
    repeated while a copy moves the other statistic's tie away from its median."""
    teacher = teacher.clone()
    for _ in range(20):
        p = torch.softmax(teacher, dim=1)
        columns_ok = kind not in ("columns", "both") or tied_at_median(p.sum(dim=0))
        rows_ok = kind not in ("rows", "both") or tied_at_median(p.max(dim=1).values)
        if columns_ok and rows_ok:
            break
        if not columns_ok:
            a, b = median_position_pair(p.sum(dim=0))
            teacher[:, b] = teacher[:, a]
        else:
            a, b = median_position_pair(p.max(dim=1).values)
            teacher[b] = teacher[a]
    return teacher


def draw_mlkd_inputs(seed: int, batch: int, classes: int, scale: float, ties: str):
    """Weak/strong logits of student and teacher (the strong view's are different draws), the
    teacher's weak logits tied at the medians as asked; retries with the next draw until the
    ties really sit at the median."""
    for attempt in range(100):
        g = torch.Generator().manual_seed(seed * 1000 + attempt)
        draw = lambda: scale * torch.randn(batch, classes, generator=g, dtype=torch.float64)  # noqa: E731
        student_weak, student_strong, teacher_strong = draw(), draw(), draw()
        teacher_weak = tie_middle(student_weak + draw(), ties)
        p = torch.softmax(teacher_weak, dim=1)
        rows_tied = tied_at_median(p.max(dim=1).values)
        columns_tied = tied_at_median(p.sum(dim=0))
        if rows_tied == (ties in ("rows", "both")) and columns_tied == (ties in ("columns", "both")):
            target = torch.randint(classes, (batch,), generator=g)
            return student_weak, student_strong, teacher_weak, teacher_strong, target
    raise SystemExit(f"error: no draw of seed {seed} puts the {ties} ties at the median")


def gradients(term: torch.Tensor, leaves):
    grads = torch.autograd.grad(term, leaves, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)]


def mlkd_case(module, seed, batch, classes, scale, temperature, ce_weight, kd_weight, zscore, ties):
    """One run of the original ``MLKD.forward_train`` on fixed logits: each term and its
    gradients with respect to the student's weak and strong logits, and the two thresholds."""
    s_weak, s_strong, t_weak, t_strong, target = draw_mlkd_inputs(seed, batch, classes, scale, ties)
    leaves = [s_weak.clone().requires_grad_(True), s_strong.clone().requires_grad_(True)]
    weak_image, strong_image = torch.zeros(batch, 3, 2, 2), torch.zeros(batch, 3, 2, 2)
    cfg = namespace({"KD": {"TEMPERATURE": temperature,
                            "LOSS": {"CE_WEIGHT": ce_weight, "KD_WEIGHT": kd_weight}},
                     "EXPERIMENT": {"LOGIT_STAND": zscore}})
    distiller = module.MLKD(TwoViewNetwork(weak_image, *leaves),
                            TwoViewNetwork(weak_image, t_weak, t_strong), cfg)
    thresholds = []
    original_percentile = np.percentile

    def recording_percentile(*args, **kwargs):
        value = original_percentile(*args, **kwargs)
        thresholds.append(float(value))
        return value

    module.np.percentile = recording_percentile
    try:
        _, terms = distiller.forward_train(image_weak=weak_image, image_strong=strong_image,
                                           target=target)
    finally:
        module.np.percentile = original_percentile
    case = {"method": "mlkd", "seed": seed, "ties": ties,
            "hp": {"temperature": temperature, "ce_weight": ce_weight, "kd_weight": kd_weight,
                   "logit_standardization": zscore},
            "student_weak": s_weak, "student_strong": s_strong, "teacher_weak": t_weak,
            "teacher_strong": t_strong, "target": target,
            "sample_threshold": torch.tensor(thresholds[0], dtype=torch.float64),
            "class_threshold": torch.tensor(thresholds[1], dtype=torch.float64)}
    for name, term in terms.items():
        case[name] = term.detach()
        case[f"grad_{name}_weak"], case[f"grad_{name}_strong"] = gradients(term, leaves)
    return case


def ctkd_kd_case(kd_module, seed, batch, classes, scale, temperature, zscore):
    """CTKD's ``DistillKL`` (plain) or ``DistillKL_logit_stand`` at a temperature tensor: the loss
    and its gradients with respect to the student's logits and the temperature."""
    g = torch.Generator().manual_seed(seed)
    student = (scale * torch.randn(batch, classes, generator=g, dtype=torch.float64)).requires_grad_(True)
    teacher = student.detach() + scale * torch.randn(batch, classes, generator=g, dtype=torch.float64)
    temp = torch.tensor([temperature], dtype=torch.float64, requires_grad=True)
    criterion = kd_module.DistillKL_logit_stand() if zscore else kd_module.DistillKL()
    with cuda_is_identity():
        loss = criterion(student, teacher, temp)
    grad_student, grad_temp = torch.autograd.grad(loss, [student, temp])
    return {"method": "ctkd_kd", "seed": seed, "original_class": type(criterion).__name__,
            "hp": {"temperature": temperature, "logit_standardization": zscore},
            "student_logits": student.detach(), "teacher_logits": teacher,
            "loss": loss.detach(), "grad_student_logits": grad_student,
            "grad_temperature": grad_temp}


def ctkd_temperature_case(temp_module, kd_module, seed, theta, lambda_, t_start, t_end, zscore):
    """The original global temperature (``Global_T``, its parameter set to θ) through the gradient
    reversal at λ, mapped as ``helper/loops.py`` does, ``t_start + t_end·sigmoid(·)``, into
    CTKD's KD loss: temperature, loss, and the gradients of θ and of the student's logits."""
    g = torch.Generator().manual_seed(seed)
    student = (2.0 * torch.randn(8, 10, generator=g, dtype=torch.float64)).requires_grad_(True)
    teacher = student.detach() + 2.0 * torch.randn(8, 10, generator=g, dtype=torch.float64)
    global_t = temp_module.Global_T().double()
    with torch.no_grad():
        global_t.global_T.fill_(theta)
    criterion = kd_module.DistillKL_logit_stand() if zscore else kd_module.DistillKL()
    with cuda_is_identity():
        reversed_theta = global_t(teacher, student.detach(), lambda_)
        temp = t_start + t_end * torch.sigmoid(reversed_theta)
        loss = criterion(student, teacher, temp)
    loss.backward()
    return {"method": "ctkd_temperature", "seed": seed,
            "hp": {"theta": theta, "lambda": lambda_, "t_start": t_start, "t_end": t_end,
                   "logit_standardization": zscore},
            "student_logits": student.detach(), "teacher_logits": teacher,
            "reversed_theta": reversed_theta.detach(), "temperature": temp.detach(),
            "loss": loss.detach(), "grad_theta": global_t.global_T.grad.clone(),
            "grad_student_logits": student.grad.clone()}


def curriculum_cases(classes: dict):
    out = []
    for max_value, min_value, loops in CURRICULA:
        epochs = list(range(-2, loops + 4))
        for kind in ("CosineDecay", "LinearDecay"):
            decay = classes[kind](max_value=max_value, min_value=min_value, num_loops=loops)
            out.append({"kind": kind, "max_value": max_value, "min_value": min_value,
                        "num_loops": loops, "epochs": torch.tensor(epochs),
                        "values": torch.tensor([decay.get_value(e) for e in epochs],
                                               dtype=torch.float64)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("original", type=Path, help=f"root of a copy of {ORIGINAL_REPOSITORY}")
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args()
    blobs = check_copy(args.original)
    mlkd_module = import_mlkd(args.original)
    kd_module = load_file("original_ctkd_kd", args.original / "CTKD/distiller_zoo/KD.py")
    temp_module = load_file("original_temp_global", args.original / "CTKD/models/temp_global.py")
    mlkd = [mlkd_case(mlkd_module, 2500 + i, *spec) for i, spec in enumerate(MLKD_CASES)]
    ctkd_kd = [ctkd_kd_case(kd_module, 2600 + i, *spec, zscore)
               for i, spec in enumerate(CTKD_KD_CASES) for zscore in (False, True)]
    ctkd_temperature = [
        ctkd_temperature_case(temp_module, kd_module, 2700 + i, theta, lam, t_start, t_end, zscore)
        for i, (theta, lam, (t_start, t_end), zscore) in enumerate(
            (theta, lam, t_range, zscore) for theta in CTKD_THETAS for lam in CTKD_LAMBDAS
            for t_range in CTKD_T_RANGES for zscore in (False, True))]
    torch.save({"version": 1, "dtype": "float64",
                "source": {"repository": ORIGINAL_REPOSITORY, "commit": ORIGINAL_COMMIT,
                           "blobs": blobs, "torch": str(torch.__version__), "numpy": np.__version__,
                           "date": datetime.date.today().isoformat()},
                "mlkd": mlkd, "ctkd_kd": ctkd_kd, "ctkd_temperature": ctkd_temperature,
                "ctkd_curricula": curriculum_cases(curricula_classes(args.original))}, args.out)
    print(f"wrote {len(mlkd)} MLKD, {len(ctkd_kd)} CTKD KD, {len(ctkd_temperature)} CTKD "
          f"temperature cases and {len(CURRICULA) * 2} curricula to {args.out}")


if __name__ == "__main__":
    main()
