"""The papers' figures for your own checkpoints, as PNG (+ PDF/SVG) files and in TensorBoard.

    python tools/figures.py --checkpoint checkpoints/<run>/best.pth [--out DIR]
    python tools/figures.py --checkpoint kd/best.pth kd_zscore/best.pth --max-diff 3   # side by side
    python tools/figures.py --checkpoint <run>/best.pth --tensorboard    # also into <run>/tb (IMAGES)

A checkpoint records its config, so the student, its teacher (``teacher.checkpoint``) and the
val data are rebuilt from it (``key=value`` overrides change it, e.g. ``data.root=...``;
``--teacher`` compares with another teacher). Written into ``--out`` (default: ``figures/``
beside the first checkpoint): ``logit_difference`` and ``logit_difference_zscore`` (|teacher −
student| class-mean logits, raw and Z-scored, as the DKD and Z-score papers draw them),
``logit_statistics`` (per-image logit mean, std and range, teacher vs student) and
``embedding`` (the student's pooled features: t-SNE with scikit-learn installed, else PCA).
The same inputs give byte-identical files.
"""
import argparse
import os
import sys
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.cli import parse_with_overrides  # noqa: E402
from utils.errors import UserError, exits_on_user_error  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, nargs="+", help="one or more checkpoints of "
                        "train.py (best.pth, last.pth) or tools/export.py, drawn side by side")
    parser.add_argument("--teacher", help="the teacher's weights (default: each run's teacher.checkpoint)")
    parser.add_argument("--teacher-arch", help="the teacher's architecture, for files that record none")
    parser.add_argument("--out", help="output directory (default: figures/ beside the first checkpoint)")
    parser.add_argument("--max-diff", type=float, nargs="+", metavar="X",
                        help="top of the heatmaps' colour scale: one value for both, or two (raw, "
                             "Z-scored); the papers use 3 (default: the largest value drawn)")
    parser.add_argument("--formats", nargs="+", default=["png", "pdf"], choices=["png", "pdf", "svg"],
                        help="file formats (default: png pdf)")
    parser.add_argument("--embedding-samples", type=int, default=2000,
                        help="val images in the embedding, a fixed random subset (default 2000)")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also write the figures into each run's tb/ (TensorBoard's IMAGES tab)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    return parse_with_overrides(parser, argv)


def check_options(args: argparse.Namespace) -> None:
    if args.max_diff is not None and (len(args.max_diff) > 2 or min(args.max_diff) <= 0):
        raise UserError(f"--max-diff takes one or two values > 0 (raw, Z-scored), got "
                        f"{' '.join(f'{v:g}' for v in args.max_diff)}")
    if args.embedding_samples < 2:
        raise UserError(f"--embedding-samples must be at least 2, got {args.embedding_samples}")


def write_tensorboard(images: Dict[str, object], runs) -> List[str]:
    """Each figure's pixels as an image of every run's TensorBoard (tag ``figures/<name>``, at
    the checkpoint's epoch); returns the tb directories written. The writer is the run's own
    (``utils.logger.tensorboard_writer``): no link followed, a full disk or read-only run one line."""
    from utils.logger import tensorboard_writer
    epochs: Dict[str, int] = {}   # each run's tb/ once, at the epoch of its first checkpoint given
    for run in runs:
        epochs.setdefault(os.path.join(run.run_dir, "tb"), run.epoch or 0)
    for directory, epoch in epochs.items():
        with tensorboard_writer(directory) as writer:
            for name, image in images.items():
                writer.add_image(f"figures/{name}", image, global_step=epoch, dataformats="HWC")
    return list(epochs)


def make_figures(args: argparse.Namespace) -> List[str]:
    """Everything the command writes; returns the lines it prints."""
    from tools.checkpoint_figures import checkpoint_figures
    from tools.checkpoint_outputs import checkpoint_outputs
    from tools.plotting import check_output_dir, rgb_image, save_figure
    check_options(args)
    runs = [checkpoint_outputs(path, args.teacher, args.teacher_arch, args.overrides)
            for path in args.checkpoint]
    if len({run.num_classes for run in runs}) > 1:
        raise UserError(f"the checkpoints classify different numbers of classes "
                        f"({', '.join(str(r.num_classes) for r in runs)}): compare runs on the same data")
    out = check_output_dir(args.out or os.path.join(os.path.dirname(args.checkpoint[0]), "figures"))
    figures = checkpoint_figures(runs, args.max_diff, args.embedding_samples)
    lines = [f"{run.label} ({run.run}): {len(run.targets)} val images" for run in runs]
    raster = "png" in args.formats or args.tensorboard
    images = {name: rgb_image(figure) for name, figure in figures.items()} if raster else {}
    for name, figure in figures.items():
        paths = save_figure(figure, os.path.join(out, name), args.formats, images.get(name))
        lines.append(f"{name}: {', '.join(paths)}")
    if args.tensorboard:
        lines += [f"tensorboard images: {directory}" for directory in write_tensorboard(images, runs)]
    return lines


@exits_on_user_error
def main(argv=None) -> int:
    print("\n".join(make_figures(parse_args(argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
