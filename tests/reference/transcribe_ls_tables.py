"""Transcribe the logit-standardization paper's two CIFAR-100 tables (KD, CTKD, DKD, MLKD, each
plain and + Z-score) into tests/reference/ls_tables.yaml by parsing the README of the original
repository, so that no number is typed by hand:

    git --git-dir=<mirror> archive f6e5aa5172bad618e801163c3385322eea673754 | tar -x -C /tmp/lskd
    python tests/reference/transcribe_ls_tables.py /tmp/lskd > tests/reference/ls_tables.yaml

The argument is a copy of sunshangquan/logit-standardization-KD at that commit. Each "+Ours" cell
links a training log named ``<method>,<teacher>,<student>,<base temperature>,<KD weight>[,<DKD
beta>].txt``; those values are the row's hyper-parameters. The log's own best top-1 (which may
differ from the README's: "due to average operation and randomness") is read too when the log
is in the copy. The output records the git blob hash of each file read. See LS_TABLES.md.
"""
import argparse
import hashlib
import re
import sys
from pathlib import Path

import yaml

from transcribe_baseline_tables import markdown_tables, number

REPOSITORY = "sunshangquan/logit-standardization-KD"
COMMIT = "f6e5aa5"
SOURCE = "logit-standardization-KD README (CVPR 2024)"   # as tests/reference/paper_tables.yaml
ARCH = {"resnet32x4": "resnet32x4", "resnet8x4": "resnet8x4", "vgg13": "vgg13", "vgg8": "vgg8",
        "wrn_40_2": "wrn_40_2", "wrn_40_1": "wrn_40_1", "wrn_16_2": "wrn_16_2",
        "resnet56": "resnet56", "resnet20": "resnet20", "resnet110": "resnet110",
        "resnet32": "resnet32", "shn-v2": "ShuffleV2", "mn-v2": "MobileNetV2",
        "resnet50": "ResNet50", "shufflev2": "ShuffleV2", "mobilenetv2": "MobileNetV2",
        "res110": "resnet110", "res32": "resnet32", "res20": "resnet20", "res50": "ResNet50",
        "mv2": "MobileNetV2"}
TABLES = (("cifar100-same-architecture", "**identical**", "**distinct**"),
          ("cifar100-different-architecture", "**distinct**", "### Training on ImageNet"))
LINK = re.compile(r"\]\(<?([^)>]*)>?\)")


class Copy:
    """Reads files of the copy and remembers each one's git blob hash."""

    def __init__(self, root: Path):
        self.root, self.hashes = root, {}

    def read(self, path: str) -> str:
        data = (self.root / path).read_bytes()
        self.hashes[f"{REPOSITORY} {COMMIT} {path}"] = hashlib.sha1(
            b"blob %d\0" % len(data) + data).hexdigest()   # = git hash-object
        return data.decode()


def plain_number(text: str):
    return int(text) if text.isdigit() else float(text)


def log_hyper_parameters(log_name: str, teacher: str, student: str) -> dict:
    """The values a log's file name carries, after checking it names the column's pair."""
    method, log_teacher, log_student, *values = Path(log_name).stem.split(",")
    if (ARCH[log_teacher.lower()], ARCH[log_student.lower()]) != (teacher, student):
        raise SystemExit(f"error: log {log_name} is not of the column's pair {teacher}, {student}")
    return dict(zip(("base_temperature", "kd_weight", "beta"), map(plain_number, values)))


def log_best_top1(copy: Copy, path: str):
    """The best top-1 a log reports: mdistiller's last line ``best_acc <value>``, or CTKD's
    per-epoch JSON records' ``best_acc`` (the last one)."""
    text = copy.read(path)
    found = re.findall(r"best_acc\"?:?\s+([\d.]+)", text)
    return float(found[-1]) if found else None


def cell_row(copy: Copy, table: str, method: str, teacher: str, student: str, cell: str) -> dict:
    row = {"paper": "logit-standardization", "table": table, "dataset": "cifar100",
           "teacher": teacher, "student": student, "method": method, "top1": number(cell),
           "source": SOURCE}
    link = LINK.search(cell)
    if link and link.group(1):
        log_name = Path(link.group(1)).name
        row.update(log_hyper_parameters(log_name, teacher, student))
        row["log"] = log_name
        folder = Path(link.group(1)).parent.name          # the README has one "ogs/" typo
        if (copy.root / "logs" / folder / log_name).is_file():
            row["log_best_top1"] = log_best_top1(copy, f"logs/{folder}/{log_name}")
    return row


def table_rows(copy: Copy, readme: str):
    rows = []
    for table, start, end in TABLES:
        section = readme[readme.index(start):readme.index(end, readme.index(start) + 1)]
        (cells_table,) = [t for t in markdown_tables(section) if t[0][0].startswith("Teacher")]
        pairs = [tuple(ARCH[name.strip().lower()] for name in head.split("<br>"))
                 for head in cells_table[0][1:]]
        for cells in cells_table[1:]:
            method = cells[0].replace("*", "").strip().lower().replace("+ours", "+zscore")
            rows += [cell_row(copy, table, method, teacher, student, cell)
                     for (teacher, student), cell in zip(pairs, cells[1:])]
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("copy", type=Path, help=f"a copy of {REPOSITORY} at {COMMIT}")
    opts = parser.parse_args(argv)
    copy = Copy(opts.copy)
    rows = table_rows(copy, copy.read("README.md"))
    note = ("Published top-1 (%) of the logit-standardization paper's CIFAR-100 tables and each "
            "+Z-score row's base temperature and KD weight (from its log's name), parsed from the "
            "README by tests/reference/transcribe_ls_tables.py (not typed by hand); see LS_TABLES.md.")
    yaml.safe_dump({"note": note, "files": copy.hashes, "rows": rows}, sys.stdout,
                   sort_keys=False, width=120)


if __name__ == "__main__":
    main()
