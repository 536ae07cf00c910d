"""tools/gpu_check.py in its CPU mode: every path that can run without a GPU (the CUDA tests'
CPU cases, the KD variants incl. the peer loop and the teacher cache, every other method, the
ImageNet loaders) runs end to end and lands in the Markdown table and its JSON twin."""
import json
import math

import pytest

from tests.runs import run_script


@pytest.mark.slow
def test_cpu_mode_runs_every_section_and_writes_the_table(tmp_path):
    out = run_script("tools/gpu_check.py", "--device", "cpu", "--quick", "--out", str(tmp_path),
                     timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    table = (tmp_path / "gpu_check.md").read_text()
    assert report["errors"] == {}
    tests = report["tests"]
    assert tests["exit_code"] == 0 and tests["passed"] >= 5 and tests["failed"] == 0
    kd = report["kd"]["rows"]
    assert list(kd) == ["(a) common trainers' loop", "(b) ours, defaults",
                        "(c) + bf16 + channels_last", "(e) + teacher cache"]
    for label, row in kd.items():
        assert row["images_per_s"] > 0 and math.isfinite(row["projected_240_epochs_min"]), label
        assert label in table
    assert kd["(e) + teacher cache"]["cache_build_s_projected"] > 0
    assert kd["(a) common trainers' loop"]["x_common_loop"] == 1
    assert set(report["methods"]) == {"DKD", "DIST", "FitNet", "SRRL", "ONE", "KD+DOT"}
    assert all("error" not in row and row["images_per_s"] > 0 for row in report["methods"].values())
    assert len(report["imagenet"]["rows"]) == 4
    assert "device decode" in table and "PIL workers" in table
    split = report["imagenet"]["device_decode_split"]
    assert 0 < split["decode_ms_per_batch"] <= split["batch_ms"] and 0 < split["decode_share"] <= 1
    assert "in the batched JPEG decode" in table


def test_without_a_gpu_the_default_mode_is_one_line():
    out = run_script("tools/gpu_check.py", "--skip-tests", timeout=120)
    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the default mode would measure")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "--device cpu" in out.stderr
