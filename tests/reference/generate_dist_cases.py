"""Writes ``dist_beta_gamma.pt``: DIST oracle cases with β ≠ γ, computed by the original code.

The cases of ``logit_losses.pt`` all have β = γ, so a loss that swapped the inter- and the
intra-class weights would match them. These cases weigh the two relations differently (and
one of them zero), so each term is pinned to its own weight.

The original is the ``DIST`` module of hunto/image_classification_sota
(``lib/models/losses/dist_kd.py``, the code DIST_KD uses), the implementation the DIST cases of
``logit_losses.pt`` came from. It is not part of this repository: pass the file of a checkout
of that repository at ORIGINAL_COMMIT on the command line; its git blob hash is checked, so the
data always comes from that exact file.

    git -C image_classification_sota checkout 6f7a70a1dd57fd88413d83909d3d53243068f701
    python tests/reference/generate_dist_cases.py \
        image_classification_sota/lib/models/losses/dist_kd.py

Every case is drawn from a seeded float64 generator and computed in float64; the file has the
container and case format of ``logit_losses.pt`` (LOSSES.md), plus a ``source`` entry.
"""
import argparse
import hashlib
import importlib.util
from pathlib import Path

import torch

ORIGINAL_REPOSITORY = "hunto/image_classification_sota"
ORIGINAL_COMMIT = "6f7a70a1dd57fd88413d83909d3d53243068f701"
ORIGINAL_PATH = "lib/models/losses/dist_kd.py"
ORIGINAL_BLOB = "4ae9aa002e5cd3c1c2f5548205d10d647cde617c"   # git rev-parse COMMIT:PATH
OUTPUT = Path(__file__).with_name("dist_beta_gamma.pt")

# (N, C, logit scale, tau, beta, gamma): both relations weighted apart, each one alone, τ = 1
# and the recipe's τ = 4, a 1000-class case as ImageNet's.
CASES = [
    (8, 100, 1.0, 4.0, 1.0, 2.0),
    (16, 100, 3.0, 4.0, 2.0, 0.5),
    (64, 100, 2.0, 1.0, 0.5, 3.0),
    (8, 100, 2.0, 4.0, 0.0, 1.0),
    (8, 100, 2.0, 4.0, 1.0, 0.0),
    (8, 1000, 3.0, 2.0, 3.0, 1.0),
]


def git_blob_hash(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def load_original(path: Path):
    """The original's ``DIST`` class, imported from ``path`` after checking it is the file of
    ORIGINAL_COMMIT."""
    blob = git_blob_hash(path.read_bytes())
    if blob != ORIGINAL_BLOB:
        raise SystemExit(f"error: {path} is not {ORIGINAL_PATH} of {ORIGINAL_REPOSITORY} at "
                         f"{ORIGINAL_COMMIT} (blob {blob}, expected {ORIGINAL_BLOB})")
    spec = importlib.util.spec_from_file_location("original_dist_kd", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DIST


def make_case(original_dist, seed: int, n: int, c: int, scale: float, tau: float, beta: float,
              gamma: float) -> dict:
    generator = torch.Generator().manual_seed(seed)
    student = (scale * torch.randn(n, c, generator=generator, dtype=torch.float64)).requires_grad_()
    # a teacher that agrees with the student up to a per-class offset and noise: its inter-
    # and intra-class relations differ (about 3 : 1), so exchanging β and γ changes the loss
    class_offset = torch.randn(c, generator=generator, dtype=torch.float64)
    noise = torch.randn(n, c, generator=generator, dtype=torch.float64)
    teacher = student.detach() + scale * class_offset + 0.5 * scale * noise
    target = torch.randint(c, (n,), generator=generator)
    loss = original_dist(beta=beta, gamma=gamma, tau=tau)(student, teacher)
    loss.backward()
    return {"method": "dist", "seed": seed,
            "hp": {"beta": beta, "gamma": gamma, "tau": tau, "logit_standardization": False},
            "student_logits": student.detach(), "teacher_logits": teacher, "target": target,
            "loss": loss.detach(), "grad_student_logits": student.grad}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("original", type=Path, help=f"{ORIGINAL_PATH} of {ORIGINAL_REPOSITORY}")
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args()
    original_dist = load_original(args.original)
    cases = [make_case(original_dist, 1900 + i, *spec) for i, spec in enumerate(CASES)]
    torch.save({"version": 1, "dtype": "float64",
                "source": {"repository": ORIGINAL_REPOSITORY, "commit": ORIGINAL_COMMIT,
                           "path": ORIGINAL_PATH, "blob": ORIGINAL_BLOB},
                "cases": cases}, args.out)
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
