"""Evaluate a checkpoint on the validation set: ours (best.pth / last.pth) or a released teacher.

    python eval.py --checkpoint checkpoints/<run>/best.pth [key=value ...] [--json]
    python eval.py --checkpoint cifar_teachers/resnet32x4_vanilla/ckpt_epoch_240.pth --arch resnet32x4
"""
import argparse
import json
import sys

from utils.cli import parse_with_overrides
from utils.errors import exits_on_user_error


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a .pth file (ours or released format)")
    parser.add_argument("--config", help="config for data and model (default: the one stored in the checkpoint)")
    parser.add_argument("--arch", help="model name, for checkpoints that carry no config (files "
                                       "written by tools/export.py record theirs)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--output", help="multi-output models (ONE): the headline output, e.g. "
                                         "ensemble or branch2 (default branch1); all are reported")
    return parse_with_overrides(parser, argv)


@exits_on_user_error
def main(argv=None) -> int:
    args = parse_args(argv)
    from launch.evaluation import evaluate_checkpoint
    result = evaluate_checkpoint(args.checkpoint, args.config, args.arch, args.overrides, output=args.output)
    if args.json:
        print(json.dumps(result, default=str))
    else:
        m = result["metrics"]
        print(f"top1={m['top1']:.2f} top5={m['top5']:.2f} loss={m['loss']:.4f} ({m['samples']} images)")
        for name in sorted({key.split("/")[0] for key in m if "/" in key}):
            print(f"  {name}: top1={m[name + '/top1']:.2f} top5={m[name + '/top5']:.2f} "
                  f"loss={m[name + '/loss']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
