"""Every published table: its rows load, build and follow the transcribed recipes; reproduce.py
plans them; and a tiny table really runs end to end, with a killed run resumed."""
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import models
from launch.build import load_run_config, model_dataset
from tests.runs import REPO, read_metrics, write_config, write_teacher_and_kd_table
from tools.tables import TABLES_DIR, config_path, load_table

TABLES = sorted(p.stem for p in Path(TABLES_DIR).glob("*.yaml"))
RECIPES = yaml.safe_load((REPO / "tests/reference/recipes.yaml").read_text())
PAPER = yaml.safe_load((REPO / "tests/reference/paper_tables.yaml").read_text())["rows"]
# the logit-standardization paper's tables parsed with each row's values (its CTKD and MLKD rows)
LS_PAPER = yaml.safe_load((REPO / "tests/reference/ls_tables.yaml").read_text())["rows"]
CONFIG_ROWS = [(t, r) for t in TABLES for r in load_table(t)["rows"] if r.get("config")]


def paper_row(row):
    matches = [p for p in PAPER + LS_PAPER if (p["method"], p["teacher"], p["student"], p["top1"]) ==
               (row["method"], row["teacher"], row["student"], row["top1"])]
    assert matches, row["name"]
    return matches[0]


@functools.lru_cache(maxsize=None)
def built(arch, family):
    return models.build_model(arch, num_classes=1000 if family == "imagenet" else 100, dataset=family)


def expected_distiller(method, family, cfg, row):
    recipe = RECIPES[family]
    pair = f"{cfg.teacher.arch}/{cfg.student.arch}"
    entry = recipe.get(method, {})
    if "distiller" in entry:        # a method with its own solver or batch (ONE, DOT, ImageNet CRD...)
        expected = dict(entry["distiller"])
        expected.update(recipe.get(f"{method}_pair", {}).get(pair, {}))
        if not method.endswith("zscore"):
            return expected
    else:
        expected = dict(entry)
    if method.startswith("dkd"):
        expected.pop("default_beta", None)
        expected["beta"] = recipe["dkd_beta"].get(pair, recipe["dkd"].get("default_beta"))
    if method.endswith("zscore"):   # a row without them (no log) keeps the method's defaults
        published = paper_row(row)
        expected.update(base_temperature=published.get("base_temperature"),
                        zscore_kd_weight=published.get("kd_weight"))
        expected["beta"] = published.get("beta", expected["beta"]) if method == "dkd_zscore" else None
        expected = {k: v for k, v in expected.items() if v is not None}
    if row["name"].startswith("kd_t4"):
        expected["temperature"] = 4.0          # DIST's ImageNet KD row: KD with T = 4
    return expected


def test_every_table_loads_with_a_header_and_unique_rows():
    for name in TABLES:
        table = load_table(name)
        assert table["paper"] and table["source"] and table["reports"] and table["rows"], name
        for row in table["rows"]:
            assert row.get("config") or row.get("why"), (name, row["name"])
            assert row.get("reproducible", True) or row.get("why"), (name, row["name"])


@pytest.mark.parametrize("table,row", CONFIG_ROWS, ids=[f"{t}:{r['name']}" for t, r in CONFIG_ROWS])
def test_row_config_validates_builds_and_matches_recipe(table, row):
    path = config_path(row)
    cfg = load_run_config(path)
    family = model_dataset(cfg)
    built(cfg.student.arch, family)
    if cfg.teacher.arch and cfg.distiller["name"] != "vanilla":
        built(cfg.teacher.arch, family)
    parts = Path(row["config"]).parts             # configs/<dataset>/<method>/<pair>.yaml
    method = parts[2]
    recipe = RECIPES[family]
    if method in ("vanilla", "srrl") and "teachers" in parts:
        method = "vanilla"
    entry = recipe.get(method, {})
    if "distiller" in entry:
        recipe = {**recipe, **entry, "solver": {**recipe["solver"], **entry.get("solver", {})}}
        if method == "one" and row.get("role") == "baseline":
            method = "vanilla"
    solver = dict(recipe["solver"])
    if family == "cifar100" and method != "one" and cfg.student.arch in recipe["small_students"] \
            and "one" not in parts:
        solver["lr"] = recipe["small_student_lr"]
    solver.update(entry.get("solver_pair", {}).get(f"{cfg.teacher.arch}/{cfg.student.arch}", {}))
    for key, value in solver.items():
        assert getattr(cfg.solver, key) == value, (row["name"], key)
    assert cfg.data.batch_size == recipe["batch_size"]
    for key in ("val_batch_size", "mean", "std"):
        if key in recipe:
            assert getattr(cfg.data, key) == pytest.approx(recipe[key]), key
    if method != "vanilla":
        for key, value in expected_distiller(method, family, cfg, row).items():
            assert cfg.distiller[key] == value, (row["name"], key)


BASELINES = yaml.safe_load((REPO / "tests/reference/baseline_tables.yaml").read_text())["rows"]
TRANSCRIBED_TABLES = [t for t in TABLES if "baseline_tables.yaml" in Path(TABLES_DIR, f"{t}.yaml").read_text()]


def table_row_key(row):
    """What identifies a published number: who was trained (and from whom), the number, its source."""
    if row.get("role") in ("teacher", "baseline"):
        role = "teacher" if row["role"] == "teacher" else "student"
        return f"vanilla {role}", row["arch"], row["top1"], row["source"]
    return row["method"], row["teacher"], row["student"], row["top1"], row["source"]


def published_key(transcribed):
    if transcribed["method"].startswith("vanilla"):
        return transcribed["method"], transcribed["arch"], transcribed["top1"], transcribed["source"]
    return (transcribed["method"], transcribed["teacher"], transcribed["student"], transcribed["top1"],
            transcribed["source"])


@pytest.mark.parametrize("table", TRANSCRIBED_TABLES)
def test_baseline_table_rows_are_the_transcribed_published_numbers(table):
    """Every row of a baseline table carries a number of tests/reference/baseline_tables.yaml (parsed
    from the public READMEs, not typed), with its source."""
    published = {published_key(b) for b in BASELINES}
    for row in load_table(table)["rows"]:
        assert table_row_key(row) in published, (table, row["name"])


def test_every_transcribed_number_is_in_a_table():
    """No published number was left out (Tiny-ImageNet rows aside: no Tiny-ImageNet data source here)."""
    in_tables = {table_row_key(r) for t in TRANSCRIBED_TABLES for r in load_table(t)["rows"]}
    left_out = [b for b in BASELINES if b["top1"] is not None and b["dataset"] != "tiny_imagenet"
                and published_key(b) not in in_tables]
    assert not left_out, left_out[:3]


def test_logit_standardization_tables_hold_every_parsed_number_and_no_other():
    """The two logit-standardization tables' method rows are exactly the rows parsed from that
    paper's README (paper_tables.yaml for KD and DKD, ls_tables.yaml for all four methods)."""
    def key(r):
        return r["method"], r["teacher"], r["student"], r["top1"]
    for name, table in (("ls_cifar100_same", "cifar100-same-architecture"),
                        ("ls_cifar100_diff", "cifar100-different-architecture")):
        rows = [key(r) for r in load_table(name)["rows"] if "method" in r]
        parsed = {key(p) for p in LS_PAPER if p["table"] == table}
        assert set(rows) == parsed and len(rows) == len(parsed) == 56, name
    parsed = {key(p) for p in LS_PAPER}
    assert {key(p) for p in PAPER if p["paper"] == "logit-standardization"
            and p["dataset"] == "cifar100"} <= parsed


def _dry_run(table, *extra):
    return subprocess.run([sys.executable, "tools/reproduce.py", table, "--dry-run", *extra], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_dry_run_lists_every_reproducible_row_of_every_table(tmp_path, capsys):
    from tools.reproduce import main
    for name in TABLES:
        assert main([name, "--dry-run", "--seeds", "0", "1", "--output-dir", str(tmp_path)]) == 0
        commands = capsys.readouterr().out.splitlines()
        for row in load_table(name)["rows"]:
            if row.get("config") and row.get("reproducible", True):
                for seed in (0, 1):
                    run = f"/{name}/{row['name']} experiment.name=seed{seed} "
                    assert sum(run in c for c in commands) == 1, row["name"]


def test_dry_run_of_the_zscore_table_names_its_56_method_rows_with_their_published_numbers(capsys):
    """Issue 25: KD, CTKD, DKD and MLKD, each plain and + Z-score, on the 7 same-architecture pairs."""
    from tools.reproduce import main
    assert main(["ls_cifar100_same", "--dry-run"]) == 0
    said = capsys.readouterr().err.splitlines()
    students = [r for r in load_table("ls_cifar100_same")["rows"] if r.get("role") != "teacher"]
    assert len(students) == 56
    for row in students:
        assert f"# {row['name']}: published top-1 {row['top1']}" in said, row["name"]


TINY = {"dataset": "synthetic", "num_classes": 10, "image_size": 32, "train_size": 256, "val_size": 128,
        "batch_size": 64, "val_batch_size": 64, "num_workers": 0}


def _run_tool(*args):
    return subprocess.run([sys.executable, "tools/reproduce.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_reproduce_trains_teacher_first_resumes_killed_run_and_summarises(tmp_path):
    extra = {"data": TINY, "solver": {"milestones": [2]}, "log": {"print_freq": 1, "tensorboard": False}}
    table = write_teacher_and_kd_table(tmp_path, extra, [
        {"name": "kd_other", "top1": 1.0, "reproducible": False, "why": "no such model"}])
    out_dir = tmp_path / "out"
    common = [str(table), "--seeds", "0", "1", "--output-dir", str(out_dir), "--jobs-per-gpu", "2"]
    first = _run_tool(*common, "--only", "teacher*")
    assert first.returncode == 0, first.stderr
    command = _dry_run(*common, "--only", "kd_r8_r8").stdout.splitlines()[-1]   # kd seed1
    assert "seed1" in command and "teacher.checkpoint=" in command
    proc = subprocess.Popen([sys.executable, *command.split()[1:]], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    for line in proc.stdout:
        if line.startswith("epoch 2 ["):
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    killed = out_dir / "tiny/kd_r8_r8/seed1"
    interim = _run_tool(*common, "--summary")
    assert "seed1 running: epoch 1/2" in interim.stdout and "seed0 missing" in interim.stdout
    second = _run_tool(*common)
    assert second.returncode == 0, second.stderr
    assert "[skip] teacher_resnet8/seed0: finished" in second.stdout
    assert "resumed from" in (killed / "train.log").read_text()
    assert [m["epoch"] for m in read_metrics(killed)] == [1, 2]
    summary = (out_dir / "tiny/summary.md").read_text()
    for row in ("teacher_resnet8", "kd_r8_r8"):
        runs = [read_metrics(out_dir / f"tiny/{row}/seed{s}") for s in (0, 1)]
        best = [max(m["val/top1"] for m in r) for r in runs]
        last = [r[-1]["val/top1"] for r in runs]
        line = next(l for l in summary.splitlines() if l.startswith(f"| {row} "))
        assert f"{statistics.mean(best):.2f} ± {statistics.stdev(best):.2f} (2)" in line
        assert f"{statistics.mean(last):.2f} ± {statistics.stdev(last):.2f} (2)" in line
    assert "not reproducible" in summary and "no such model" in summary
    assert (out_dir / "tiny/summary.csv").read_text().count("\n") == 4
    record = json.loads((killed / "run.json").read_text())
    assert record["summary"]["best_top1"] == max(m["val/top1"] for m in read_metrics(killed))


def test_failed_run_is_listed_and_exit_code_is_nonzero(tmp_path):
    bad = write_config(tmp_path, "bad", epochs=1, extra={"data": TINY, "solver": {"milestones": [1]}},
                       distiller={"name": "kd"}, teacher={"arch": "resnet8", "checkpoint": "torchvision"})
    table = tmp_path / "bad_table.yaml"
    table.write_text(yaml.safe_dump({"paper": "p", "source": "s", "reports": "r", "runs": 1,
                                     "rows": [{"name": "bad_row", "config": str(bad), "top1": 1.0}]}))
    out = _run_tool(str(table), "--output-dir", str(tmp_path / "out"))
    assert out.returncode == 1
    assert "bad_row/seed0: exit code" in out.stderr
    assert "seed0 failed" in (tmp_path / "out/bad_table/summary.md").read_text()
