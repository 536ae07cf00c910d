"""The run record: what exactly ran, so a run directory answers that without the code.

Saved as ``run.json`` in the run directory and inside every checkpoint.
"""
import hashlib
import json
import os
import platform
import subprocess
import sys
from typing import Any, Dict, List, Optional

import torch
import torchvision


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sha256_of_file(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def config_hash(config: Dict[str, Any]) -> str:
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


MAX_DIFF_CHARS = 1 << 20   # a larger diff is cut there, and says so


def git_state(repo_root: str = REPO_ROOT) -> Dict[str, Any]:
    """The commit the code came from; when tracked files differ from it, also the diff against
    it, so a result can be traced to the exact code that made it (untracked files not included)."""
    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(["git", *args], cwd=repo_root, capture_output=True, text=True,
                                 timeout=10, errors="replace")
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    state: Dict[str, Any] = {"commit": commit, "dirty": bool(status) if status is not None else None}
    if status:
        diff = git("diff", "HEAD", "--no-color", "--no-ext-diff") or ""
        state["diff"] = diff if len(diff) <= MAX_DIFF_CHARS else (
            diff[:MAX_DIFF_CHARS] + f"\n[diff cut at {MAX_DIFF_CHARS} of {len(diff)} characters]")
    return state


def environment(device: torch.device) -> Dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None, "device": str(device),
        "device_names": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if device.type == "cuda" else [platform.processor() or platform.machine()],
        "device_count": torch.cuda.device_count() if device.type == "cuda" else 1,
        "hostname": platform.node(),
    }


def build_record(cfg, device: torch.device, world_size: int, argv: List[str],
                 dataset_fingerprint: Dict[str, Any], effective_loss: List[str]) -> Dict[str, Any]:
    config = cfg.to_dict()
    teacher_ckpt = cfg.teacher.checkpoint
    record = {
        "config": config, "config_hash": config_hash(config), "seed": cfg.experiment.seed,
        "command": " ".join([os.path.basename(sys.executable), *argv]), "git": git_state(),
        "environment": environment(device), "world_size": world_size,
        "batch_size": {"global": cfg.data.batch_size, "per_process": cfg.data.batch_size // world_size},
        "teacher": {"arch": cfg.teacher.arch, "checkpoint": teacher_ckpt,
                    "sha256": sha256_of_file(teacher_ckpt) if teacher_ckpt and os.path.isfile(teacher_ckpt) else None},
        "dataset": dataset_fingerprint, "effective_loss": effective_loss,
    }
    # plain JSON types only: the record goes into checkpoints read with weights_only=True
    return json.loads(json.dumps(record, default=str))


def read_record(path: str) -> Optional[Dict[str, Any]]:
    """A JSON file's mapping (``run.json``, the teacher-check cache), or None when the file is
    missing, unreadable or holds no mapping."""
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def summary_from_files(state: Dict[str, Any], metrics: List[Dict[str, Any]], epochs: int) -> Dict[str, Any]:
    """The summary of a run whose last epoch was saved but whose summary was not (killed in
    between): the best and last results from the checkpoint, time and speed from metrics.jsonl."""
    def numbers(key: str) -> List[float]:   # a hand-edited line may hold anything
        return [m[key] for m in metrics if type(m.get(key)) in (int, float)]
    speeds = numbers("train/images_per_s")
    return {"best_top1": state["best_top1"], "best_epoch": state["best_epoch"],
            "last_top1": (state.get("metrics") or {}).get("top1"), "epochs": epochs,
            "time_s": sum(numbers("epoch_time_s")),
            "images_per_s": sum(speeds) / len(speeds) if speeds else None}


def done_line(summary: Dict[str, Any], run_dir: str) -> str:
    def number(key: str, spec: str) -> str:
        value = summary.get(key)
        return "?" if value is None else format(value, spec)
    return (f"done: best top-1 {number('best_top1', '.2f')} (epoch {summary.get('best_epoch')}), "
            f"last top-1 {number('last_top1', '.2f')}, {number('time_s', '.0f')} s, "
            f"{number('images_per_s', '.0f')} images/s -> {run_dir}")
