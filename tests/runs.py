"""Helpers for tests that run ``train.py`` / ``eval.py`` for real on tiny generated data."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import torch

REPO = Path(__file__).resolve().parents[1]

TINY_DATA = {"dataset": "synthetic", "num_classes": 10, "image_size": 32, "train_size": 512,
             "val_size": 200, "batch_size": 32, "val_batch_size": 50, "num_workers": 0}


def write_config(directory: Path, name: str, student: str = "resnet8", epochs: int = 2,
                 distiller: Dict = None, teacher: Dict = None, extra: Dict = None) -> Path:
    """A small, fast config for a real run on CPU (synthetic, learnable data)."""
    config = {
        "experiment": {"name": name, "output_dir": str(directory / "runs"), "seed": 0},
        "data": dict(TINY_DATA),
        "student": {"arch": student},
        "distiller": distiller or {"name": "vanilla"},
        "solver": {"epochs": epochs, "lr": 0.05, "milestones": [epochs], "weight_decay": 5e-4},
        "runtime": {"device": "cpu"},
        "log": {"print_freq": 4},
    }
    if teacher:
        config["teacher"] = teacher
    for section, values in (extra or {}).items():
        config.setdefault(section, {}).update(values)
    path = directory / f"{name}.yaml"
    import yaml
    path.write_text(yaml.safe_dump(config))
    return path


def write_teacher_and_kd_table(directory: Path, extra: Dict, more_rows: List[Dict] = ()) -> Path:
    """A two-row table (a resnet8 teacher row, a KD row whose released teacher is absent, so
    reproduce.py trains the teacher row first) of 2-epoch configs, written as tiny.yaml."""
    import yaml
    teacher_cfg = write_config(directory, "teacher", epochs=2, extra=extra)
    kd_cfg = write_config(directory, "kd", epochs=2, distiller={"name": "kd"}, extra=extra,
                          teacher={"arch": "resnet8", "checkpoint": str(directory / "absent/last.pth")})
    table = directory / "tiny.yaml"
    table.write_text(yaml.safe_dump({"paper": "tiny", "source": "test", "reports": "best", "runs": 2, "rows": [
        {"name": "teacher_resnet8", "role": "teacher", "arch": "resnet8", "config": str(teacher_cfg), "top1": 50.0},
        {"name": "kd_r8_r8", "config": str(kd_cfg), "top1": 40.0}, *more_rows]}))
    return table


def run_script(script: str, *args: str, timeout: int = 300, env: Dict = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "2", **(env or {})}
    return subprocess.run([sys.executable, script, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=environment)


def run_until_killed(config: Path, line_prefix: str, *args: str, timeout: int = 300) -> int:
    """Start ``train.py --config config`` and SIGKILL it as soon as it prints a line starting
    with ``line_prefix`` (e.g. ``"epoch 2 [2/"``: in the middle of epoch 2), as a crash would
    stop it; returns its exit code. The test fails if no such line comes."""
    proc = subprocess.Popen([sys.executable, "train.py", "--config", str(config), *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "2"})
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith(line_prefix):
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert seen and seen[-1].startswith(line_prefix), f"no line {line_prefix!r}:\n{''.join(seen)[-3000:]}"
    return proc.returncode


def read_metrics(run_dir: Path) -> List[Dict]:
    with open(run_dir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def load(path: Path) -> Dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def train_here(*args: str) -> int:
    """``train.py`` in this process (so a test can interrupt a writer at a chosen moment with
    monkeypatch); its signal handlers are restored afterwards. Returns the exit code."""
    import signal
    import train
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return train.main(list(args))
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def run_here(script: str, *args: str) -> subprocess.CompletedProcess:
    """``run_script`` without a new process: the script's ``main`` in this one, its output
    captured, its signal handlers restored. A subprocess costs seconds of imports (torch,
    torchvision, dynamo); one real subprocess per command line (``run_script``) proves its
    wiring, the other runs of a test that needs no process of its own come here. Not for runs
    that change process-wide settings (``runtime.deterministic``) or compare bits with a
    subprocess's run (its thread count differs)."""
    import contextlib
    import importlib
    import io
    import signal
    module = importlib.import_module(script[:-3].replace("/", "."))
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = module.main(list(args))
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    return subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())


def one_line(text: str) -> str:
    """The single line of ``text``; fails when there are several."""
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]
