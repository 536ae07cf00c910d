"""Train several configs one after another in one process: the launches of tests/test_distributed.py.

    python tests/ddp_methods.py CONFIG...                                       (1 process)
    torchrun --standalone --nproc_per_node 2 tests/ddp_methods.py CONFIG...     (2 processes)

Why it exists: a launch of ``train.py`` per config pays its start-up every time (importing torch,
torchrun's rendezvous, setting up the gloo group): seconds, more than the few steps each of the
test's runs trains. Here a launch pays it once for all its configs. Each config is run as
``train.py`` runs it (``load_run_config`` + ``run_training``); under torchrun the process group is
set up once, here, and every run reuses it (``run_training`` destroys only a group it set up
itself). Each run seeds itself (``seed_everything`` in launch/run.py), so it does not depend on
the runs before it.

Before each run rank 0 prints ``=== run <experiment name>``, by which the caller splits the output
per run. The first run that fails ends the launch with its traceback and exit code 1 (under
torchrun the agent then stops the other process).
"""
import sys
from pathlib import Path

MARKER = "=== run "


def split_output(text: str) -> dict:
    """The output of a launch, per run: {experiment name: its lines after its marker}."""
    runs, name = {}, None
    for line in text.splitlines(keepends=True):
        if line.startswith(MARKER):
            name = line[len(MARKER):].strip()
            runs[name] = ""
        elif name is not None:
            runs[name] += line
    return runs


def main(paths) -> int:
    from engine.distributed import cleanup, init_distributed
    from launch.build import load_run_config, resolve_device
    from launch.run import run_training
    configs = [load_run_config(path) for path in paths]
    dist_info = init_distributed(resolve_device(configs[0]).type)   # a no-op in one process
    failed = True
    try:
        for path, cfg in zip(paths, configs):
            if dist_info.is_main:
                print(f"{MARKER}{cfg.experiment.name}", flush=True)
            run_training(cfg, argv=["tests/ddp_methods.py", path])
        failed = False
    finally:
        cleanup(failed=failed)
    return 0


if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parents[1])   # the repository, not tests/
    sys.exit(main(sys.argv[1:]))
