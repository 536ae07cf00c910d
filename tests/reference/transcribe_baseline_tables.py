"""Transcribe the published baseline tables into tests/reference/baseline_tables.yaml by parsing the
Markdown tables of three public READMEs, so that no number is typed by hand:

    python tests/reference/transcribe_baseline_tables.py <RepDistiller> <mdistiller> <ReviewKD> \\
        > tests/reference/baseline_tables.yaml

each argument a checkout (or ``git archive``) of HobbitLong/RepDistiller b84f547, megvii-research/mdistiller
a08d46f and dvlab-research/ReviewKD cede6ea. The output records the git blob hash of each file read, so a
reader can check which file the numbers came from. What is read (BASELINE_TABLES.md): the CRD paper's Tables
1-2 (RepDistiller README), the DOT tables (mdistiller README, "DOT" section) and ReviewKD's ImageNet results.
"""
import argparse
import hashlib
import re
import sys
from pathlib import Path

import yaml

COMMITS = {"HobbitLong/RepDistiller": "b84f547", "megvii-research/mdistiller": "a08d46f",
           "dvlab-research/ReviewKD": "cede6ea"}
ARCH = {"wrn-40-2": "wrn_40_2", "wrn-16-2": "wrn_16_2", "wrn-40-1": "wrn_40_1", "resnet56": "resnet56",
        "resnet20": "resnet20", "resnet110": "resnet110", "resnet32": "resnet32", "resnet32x4": "resnet32x4",
        "resnet8x4": "resnet8x4", "vgg13": "vgg13", "vgg8": "vgg8", "MobileNetV2": "MobileNetV2",
        "ResNet50": "ResNet50", "ShuffleNetV1": "ShuffleV1", "ShuffleNetV2": "ShuffleV2",
        "ResNet32x4": "resnet32x4", "ResNet8x4": "resnet8x4", "VGG13": "vgg13", "VGG8": "vgg8",
        "ShuffleNet-V2": "ShuffleV2", "MobileNet-V2": "MobileNetV2", "ResNet34": "ResNet34",
        "ResNet18": "ResNet18", "MobileNet-V1": "MobileNetV1", "MobileNet": "MobileNetV1"}
CRD_TABLES = ("cifar100-same-architecture", "cifar100-different-architecture")


class Sources:
    """Reads files of the three checkouts and remembers each file's git blob hash."""

    def __init__(self, roots):
        self.roots, self.hashes = roots, {}

    def read(self, repo: str, path: str) -> str:
        data = (Path(self.roots[repo]) / path).read_bytes()
        self.hashes[f"{repo} {COMMITS[repo]} {path}"] = hashlib.sha1(
            b"blob %d\0" % len(data) + data).hexdigest()   # = git hash-object
        return data.decode()


def number(cell: str):
    found = re.search(r"\d+\.\d+", cell)
    return float(found.group()) if found else None


def markdown_tables(text: str):
    """Each Markdown table as a list of rows of stripped cells (header first, the :---: line dropped)."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        line = line.strip()
        if line.startswith("|"):
            if not re.fullmatch(r"\|?[\s:|-]+\|?", line):
                current.append([c.strip() for c in line.strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    return tables


def header_pairs(header):
    """``Teacher <br> Student`` column heads as (teacher, student) in the zoo's names."""
    return [tuple(ARCH[name.strip()] for name in head.split("<br>")) for head in header[1:]]


def crd_rows(sources: Sources):
    repo = "HobbitLong/RepDistiller"
    source = f"{repo} {COMMITS[repo]} README.md (CRD, ICLR 2020, Tables 1-2)"
    rows = []
    for table_name, table in zip(CRD_TABLES, markdown_tables(sources.read(repo, "README.md"))):
        pairs = header_pairs(table[0])
        for cells in table[1:]:
            method = cells[0].strip("* ").lower()
            for (teacher, student), cell in zip(pairs, cells[1:]):
                base = {"paper": "crd", "table": table_name, "dataset": "cifar100", "teacher": teacher,
                        "student": student}
                if method == "teacher <br> student":   # the networks' own accuracies
                    for role, arch, value in zip(("teacher", "student"), (teacher, student), cell.split("<br>")):
                        rows.append({**base, "method": f"vanilla {role}", "arch": arch, "top1": number(value),
                                     "source": source})
                else:
                    value = number(cell)
                    rows.append({**base, "method": method, "top1": value, "source": source,
                                 **({} if value is not None else {"published": cell})})
    return rows


def dot_rows(sources: Sources):
    repo = "megvii-research/mdistiller"
    text = sources.read(repo, "README.md")
    section = text[text.index("# DOT"):text.index("# Decoupled Knowledge Distillation")]
    rows = []
    for dataset, table in zip(("cifar100", "tiny_imagenet", "imagenet"), markdown_tables(section)):
        for cells in table[1:]:
            for (teacher, student), cell in zip(header_pairs(table[0]), cells[1:]):
                if number(cell) is not None:
                    rows.append({"paper": "dot", "table": dataset, "dataset": dataset, "teacher": teacher,
                                 "student": student, "method": cells[0].strip("* ").lower(),
                                 "top1": number(cell),
                                 "source": f"{repo} {COMMITS[repo]} README.md (DOT, ICCV 2023)"})
    return rows


def reviewkd_rows(sources: Sources):
    repo = "dvlab-research/ReviewKD"
    (table,) = markdown_tables(sources.read(repo, "ImageNet/README.md"))
    return [{"paper": "reviewkd", "table": "imagenet", "dataset": "imagenet", "teacher": ARCH[teacher],
             "student": ARCH[student], "method": "reviewkd", "top1": number(ours),
             "source": f"{repo} {COMMITS[repo]} ImageNet/README.md (ReviewKD, CVPR 2021)"}
            for student, teacher, _baseline, ours in table[1:]]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("repdistiller", "mdistiller", "reviewkd"):
        parser.add_argument(name, help="a checkout of the repository at the commit named above")
    opts = parser.parse_args(argv)
    sources = Sources({"HobbitLong/RepDistiller": opts.repdistiller,
                       "megvii-research/mdistiller": opts.mdistiller, "dvlab-research/ReviewKD": opts.reviewkd})
    rows = crd_rows(sources) + dot_rows(sources) + reviewkd_rows(sources)
    note = ("Published top-1 (%) of the baseline tables, parsed from the public READMEs named in each row by "
            "tests/reference/transcribe_baseline_tables.py (not typed by hand); see BASELINE_TABLES.md.")
    yaml.safe_dump({"note": note, "files": sources.hashes, "rows": rows}, sys.stdout, sort_keys=False, width=120)


if __name__ == "__main__":
    main()
