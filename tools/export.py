"""Export a training checkpoint as the student alone: the file a user ships or loads as a teacher.

    python tools/export.py --checkpoint checkpoints/<run>/best.pth --out resnet8x4_kd.pth

A training checkpoint also holds the optimizer, the scheduler, RNG states and the method's own
modules (FitNet's regressor, SRRL's connector); the export keeps ``{"model": student state_dict}``
(the released CIFAR teachers' format, so ``teacher.checkpoint`` and ``eval.py --arch`` take it),
plus the arch, epoch and the run record for provenance (and the checksum every checkpoint
carries). For ONE the whole multi-branch network is kept (branches and gate), so
``eval.py --output`` can still pick a branch or the ensemble.
Written atomically, and only over a regular file or a missing path (a device, a directory or a
link named by ``--out`` is refused in one line, as is a full disk or a read-only place); read
back with ``weights_only=True``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from utils.errors import UserError, exits_on_user_error  # noqa: E402


def export(path: str, out: str) -> dict:
    """The student-only checkpoint of ``path``, written to ``out``; returns what was written."""
    checkpoint = load_checkpoint(path)
    if "model" not in checkpoint:
        raise UserError(f"{path} holds no 'model' entry: not a checkpoint of this trainer")
    if os.path.abspath(out) == os.path.abspath(path):
        raise UserError("--out must differ from --checkpoint (the training checkpoint is kept)")
    config = checkpoint.get("config") or {}
    exported = {"model": checkpoint["model"], "arch": (config.get("student") or {}).get("arch"),
                "epoch": checkpoint.get("epoch"), "record": checkpoint.get("record")}
    save_checkpoint(exported, out)   # only over a regular file or a missing path (utils.atomic)
    return exported


@exits_on_user_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a training checkpoint (best.pth, last.pth)")
    parser.add_argument("--out", required=True, help="the exported file")
    args = parser.parse_args(argv)
    exported = export(args.checkpoint, args.out)
    size = os.path.getsize(args.out) / 2**20
    print(f"exported {exported['arch'] or 'the student'} (epoch {exported['epoch']}) -> {args.out} "
          f"({size:.1f} MB, {len(exported['model'])} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
