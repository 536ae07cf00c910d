"""tests/reference/ls_tables.yaml, the logit-standardization paper's CIFAR-100 tables as parsed
from its README (transcribe_ls_tables.py): complete for the 14 pairs, each +Z-score row with the
base temperature and KD weight of its log, and equal to the independent transcription of the
KD/DKD half in paper_tables.yaml."""
from collections import Counter
from pathlib import Path

import yaml

REFERENCE = Path(__file__).parent / "reference"
LS = yaml.safe_load((REFERENCE / "ls_tables.yaml").read_text())
PAPER = [r for r in yaml.safe_load((REFERENCE / "paper_tables.yaml").read_text())["rows"]
         if r.get("paper") == "logit-standardization"]
METHODS = {f"{m}{z}" for m in ("kd", "ctkd", "dkd", "mlkd") for z in ("", "+zscore")}
TABLES = ("cifar100-same-architecture", "cifar100-different-architecture")
HYPER = ("base_temperature", "kd_weight", "beta")


def pair(row):
    return row["table"], row["teacher"], row["student"]


def test_every_pair_of_both_tables_has_each_method_plain_and_with_zscore_once():
    rows = LS["rows"]
    assert {pair(r) for r in rows} == {pair(r) for r in PAPER}     # the same 14 pairs
    assert Counter(r["table"] for r in rows) == {t: 7 * len(METHODS) for t in TABLES}
    assert Counter((pair(r), r["method"]) for r in rows) == {
        (p, m): 1 for p in {pair(r) for r in rows} for m in METHODS}
    assert all(isinstance(r["top1"], float) and 60 < r["top1"] < 90 and r["source"] for r in rows)


def test_zscore_rows_carry_their_logs_hyper_parameters_and_plain_rows_none():
    for row in LS["rows"]:
        if row["method"].endswith("+zscore") and "log" in row:
            method, teacher, student, *values = Path(row["log"]).stem.split(",")
            assert method == row["method"].split("+")[0]
            assert [row[k] for k in HYPER[:len(values)]] == [float(v) for v in values]
        else:
            assert not set(HYPER) & row.keys(), row
    unlinked = [(r["method"], r["teacher"], r["student"]) for r in LS["rows"]
                if r["method"].endswith("+zscore") and "log" not in r]
    # the README links no log for these two cells (the copy holds none either)
    assert unlinked == [("mlkd+zscore", "resnet56", "resnet20"),
                        ("mlkd+zscore", "wrn_40_2", "MobileNetV2")]


def test_kd_and_dkd_rows_equal_the_independent_transcription_in_paper_tables():
    def key(row):
        return (pair(row), row["method"], row["top1"], *(row.get(k) for k in HYPER))
    ours = {key(r) for r in LS["rows"] if r["method"].split("+")[0] in ("kd", "dkd")}
    assert ours == {key(r) for r in PAPER}
