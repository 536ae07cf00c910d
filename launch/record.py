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

from utils.atomic import atomic_write_bytes

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sha256_of_file(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def config_hash(config: Dict[str, Any]) -> str:
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def git_state() -> Dict[str, Any]:
    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


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


def write_json(path: str, data: Dict[str, Any]) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=2, default=str).encode())
