"""Train a student (or a teacher) from a YAML config.

    python train.py --config configs/cifar100/kd/res32x4_res8x4.yaml [key.sub=value ...] [--resume auto]
    (overrides may stand before or after the flags; `key=null` removes a key, e.g. data.num_classes=null)
    torchrun --nproc_per_node 4 train.py --config ...        # several GPUs / machines
    srun --ntasks-per-node 4 --gpus-per-task 1 python train.py --config ...   # SLURM, no torchrun
"""
import argparse
import os
import sys

from utils.cli import parse_with_overrides
from utils.errors import EXIT_USER_ERROR, UserError
from utils.stopping import Stopped, stop_on_signals


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="config overrides, values parsed as YAML")
    parser.add_argument("--resume", metavar="PATH|auto",
                        help="continue a run from its checkpoint ('auto': the run's last.pth if present)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved, validated config as YAML and exit")
    parser.add_argument("--smoke", action="store_true",
                        help="a few steps on synthetic data (random teacher if its checkpoint is "
                             "absent): checks the pipeline in seconds; its numbers mean nothing")
    return parse_with_overrides(parser, argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from engine.distributed import adopt_slurm_environment
    adopt_slurm_environment()   # srun without torchrun: rank, world size, master from SLURM
    stop_on_signals()
    main_process = os.environ.get("LOCAL_RANK", "0") == "0"  # print once per machine under torchrun
    try:
        from launch.build import load_run_config
        # --print-config shows a config for any machine (a GPU recipe read on a login node):
        # only the options' conflicts with each other are judged, not this machine's device
        cfg = load_run_config(args.config, args.overrides, smoke=args.smoke,
                              here=not args.print_config)
        if args.print_config:
            print(cfg.to_yaml(), end="")
            return 0
        if args.smoke:   # afresh each time, the earlier smoke output removed
            from launch.run_dir import start_smoke_run
            start_smoke_run(cfg, args.resume, is_first=os.environ.get("RANK", "0") == "0")
        from launch.run import run_training
        run_training(cfg, resume=args.resume, argv=sys.argv, guard_validation=not args.smoke)
    except UserError as err:
        if main_process:
            print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as stop:   # SIGINT / SIGTERM (utils/stopping.py)
        stop = stop if isinstance(stop, Stopped) else Stopped()
        if main_process:
            print(stop.message(), file=sys.stderr)
        return stop.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
