"""Published tables (``configs/tables/<name>.yaml``) and the run directories that reproduce them.

A table file lists rows ``{name, config, top1, source, reproducible, why?}``; teacher rows carry
``role: teacher`` and ``arch``. One run of a row with seed k lives in
``<output_dir>/<table>/<row>/seed<k>``; its state is read from what ``train.py`` writes there.
"""
import os
import re
from typing import Any, Dict, List, Optional

import yaml

from launch.record import read_record
from utils.config import read_yaml_file
from utils.errors import UserError
from utils.input_files import require_file
from utils.logger import read_metrics_lines

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLES_DIR = os.path.join(REPO, "configs", "tables")
FAILED_MARKER = "reproduce_failed.txt"


def find_table(table: str) -> str:
    """A table file from a path or a name of ``configs/tables/``; something there that is not a
    file (a folder, a FIFO) is said to be so, not "not found"."""
    candidates = (table, os.path.join(TABLES_DIR, f"{table}.yaml"), os.path.join(TABLES_DIR, table))
    for path in candidates:
        if os.path.isfile(path):
            return path
    for path in candidates:
        if os.path.lexists(path):
            require_file(path, "table")
    names = sorted(f[:-5] for f in os.listdir(TABLES_DIR) if f.endswith(".yaml"))
    raise UserError(f"table not found: {table}; known tables: {', '.join(names)}")


def load_table(table: str) -> Dict[str, Any]:
    """The table's mapping plus ``name`` (file stem) and ``path``; row names must be unique."""
    path = find_table(table)
    doc = read_yaml_file(path)
    _check_rows(doc, path)
    names = [row["name"] for row in doc["rows"]]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise UserError(f"{path}: duplicate row names {', '.join(duplicated)}")
    return {**doc, "name": os.path.splitext(os.path.basename(path))[0], "path": path}


ROW_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")   # a folder name of the run directories


def _check_rows(doc: Any, path: str) -> None:
    """A table is a mapping whose ``rows`` list mappings, each with a ``name`` that can name a
    folder and, where given, a ``config`` path and an ``arch`` that are strings."""
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list) or not doc["rows"]:
        raise UserError(f"{path} is not a table: a table is a mapping with 'rows', a list of "
                        "{name, config, top1, ...} (see configs/tables/)")
    for number, row in enumerate(doc["rows"], 1):
        if not isinstance(row, dict):
            raise UserError(f"{path}: row {number} must be a mapping, got {row!r}")
        name = row.get("name")
        if not isinstance(name, str) or not ROW_NAME.fullmatch(name):
            raise UserError(f"{path}: row {number} needs a 'name' of letters, digits and _.+- "
                            f"(it names the run's folder), got {name!r}")
        for key in ("config", "arch", "role"):
            if row.get(key) is not None and not isinstance(row[key], str):
                raise UserError(f"{path}: row {name}: '{key}' must be a string, got {row[key]!r}")


def reproducible(row: Dict[str, Any]) -> bool:
    """Whether a row can be run: it has a config and is not marked ``reproducible: false``."""
    return bool(row.get("reproducible", True) and row.get("config"))


def config_path(row: Dict[str, Any]) -> Optional[str]:
    """The row's config as a path usable from the current directory (table paths are repo-relative)."""
    config = row.get("config")
    if not config or os.path.isabs(config) or os.path.exists(config):
        return config
    return os.path.join(REPO, config)


def run_dir(output_dir: str, table_name: str, row_name: str, seed: int) -> str:
    return os.path.join(output_dir, table_name, row_name, f"seed{seed}")


def read_metrics(directory: str) -> List[Dict[str, Any]]:
    """The epochs of a run's metrics.jsonl (a partial line of a running or killed run skipped)."""
    return read_metrics_lines(os.path.join(directory, "metrics.jsonl"))[0]


def _configured_epochs(directory: str) -> Optional[int]:
    try:
        with open(os.path.join(directory, "config.yaml")) as f:
            return int(yaml.safe_load(f)["solver"]["epochs"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return None


def _saved_epoch(directory: str) -> Optional[int]:
    """The epoch in ``last.pth``, read lazily (memory-mapped: the weights are not read)."""
    path = os.path.join(directory, "last.pth")
    if not os.path.isfile(path):
        return None
    import torch
    try:
        epoch = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("epoch")
    except Exception:  # noqa: BLE001 - any unreadable file just means "not finished"
        return None
    return epoch if isinstance(epoch, int) else None


def is_finished(directory: str) -> bool:
    """run.json has a summary, or last.pth holds the last epoch (a run killed after its final
    save but before its summary: ``train.py --resume auto`` only writes that summary)."""
    if "summary" in (read_record(os.path.join(directory, "run.json")) or {}):
        return True
    epochs, saved = _configured_epochs(directory), _saved_epoch(directory)
    return epochs is not None and saved is not None and saved >= epochs


def run_status(directory: str) -> str:
    """``finished``, ``failed``, ``running: epoch k/N`` or ``missing``."""
    if is_finished(directory):
        return "finished"
    if os.path.isfile(os.path.join(directory, FAILED_MARKER)):
        return "failed"
    if os.path.isfile(os.path.join(directory, "config.yaml")):
        metrics = read_metrics(directory)
        return f"running: epoch {metrics[-1]['epoch'] if metrics else 0}/{_configured_epochs(directory) or '?'}"
    return "missing"
