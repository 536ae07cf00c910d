"""bench.py: one JSON object with every field for several methods, --compare prints a ratio,
--loader times the input pipeline, and compilation does not change the loss."""
import json
from pathlib import Path

import pytest
import torch

import bench

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "cifar100"
FAST = ["--steps", "2", "--warmup", "1", "--repeats", "1", "--json"]
STEP_FIELDS = ("images_per_s", "ms_per_step_median", "ms_per_step_min", "ms_per_step_max",
               "device", "batch_size", "flops_per_step", "achieved_flops_per_s",
               "share_of_peak", "peak_memory_mb", "distiller", "teacher_cache")


def first_config(*patterns: str):
    """The first config matching a pattern, or None: the method folders grow over time."""
    for pattern in patterns:
        found = sorted(CONFIGS.glob(pattern))
        if found:
            return found[0]
    return None


def method_cases():
    kd = CONFIGS / "kd" / "res32x4_res8x4.yaml"
    dkd_or_dist = first_config("dkd/*.yaml", "dist/*.yaml")
    fitnet = first_config("fitnet/*.yaml")
    return [
        (kd, []),
        (dkd_or_dist, []) if dkd_or_dist else (CONFIGS / "kd" / "res56_res20.yaml", ["distiller.name=dkd"]),
        (fitnet, []) if fitnet else (CONFIGS / "vanilla" / "resnet8x4.yaml", []),
    ]


def run_bench(capsys, *argv: str) -> dict:
    assert bench.main([*argv, "runtime.device=cpu", "data.batch_size=4", *FAST]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("config, overrides", method_cases(),
                         ids=lambda c: f"{c.parent.name}/{c.stem}" if isinstance(c, Path) else "")
def test_json_reports_every_field_of_a_step(capsys, config, overrides):
    result = run_bench(capsys, "--config", str(config), *overrides)
    for field in STEP_FIELDS:
        assert field in result, field
    assert result["batch_size"] == 4 and result["images_per_s"] > 0
    assert result["flops_per_step"] > 0 and result["share_of_peak"] == "n/a"


def test_compare_prints_both_variants_and_the_ratio(capsys):
    result = run_bench(capsys, "--config", str(CONFIGS / "vanilla" / "resnet8x4.yaml"),
                       "--compare", "runtime.channels_last=false", "runtime.channels_last=true")
    assert result["a"]["channels_last"] is False and result["b"]["channels_last"] is True
    expected = result["b"]["images_per_s"] / result["a"]["images_per_s"]
    assert result["ratio_b_over_a"]["images_per_s"] == pytest.approx(expected)


def test_loader_times_the_torch_and_the_gpu_loader(capsys):
    result = run_bench(capsys, "--config", str(CONFIGS / "vanilla" / "resnet8x4.yaml"), "--loader",
                       "data.num_workers=0", "--compare", "data.loader=torch", "data.loader=gpu")
    assert (result["a"]["loader"], result["b"]["loader"]) == ("EpochDataLoader", "GpuCifarLoader")
    assert result["a"]["images_per_s"] > 0 and result["ratio_b_over_a"]["images_per_s"] > 0


def test_pipeline_against_the_peer_loop_reports_both_and_the_ratio(capsys):
    """--peer: ours (loader + step) and a common trainer's loop (PIL DataLoader, eager, a host
    read every step) on the same KD pair, with the ratio ours/peer."""
    result = run_bench(capsys, "--config", str(CONFIGS / "kd" / "res32x4_res8x4.yaml"), "--peer",
                       "student.arch=resnet8", "teacher.arch=resnet8", "data.num_workers=0")
    ours, peer = result["a"], result["b"]
    assert ours["loader"] == "EpochDataLoader" and "peer" in peer["loader"]
    assert ours["teacher"] == peer["teacher"] == "resnet8" and ours["batch_size"] == peer["batch_size"] == 4
    expected = ours["images_per_s"] / peer["images_per_s"]
    assert result["ratio_ours_over_peer"]["images_per_s"] == pytest.approx(expected)


def test_peer_refuses_compare(capsys):
    assert bench.main(["--config", str(CONFIGS / "kd" / "res32x4_res8x4.yaml"), "--peer",
                       "--compare", "", ""]) == 2
    assert "--peer" in capsys.readouterr().err


def test_text_output_names_throughput_and_memory(capsys):
    argv = ["--config", str(CONFIGS / "vanilla" / "resnet8x4.yaml"), "runtime.device=cpu",
            "data.batch_size=4", "--steps", "1", "--warmup", "0", "--repeats", "1"]
    assert bench.main(argv) == 0
    text = capsys.readouterr().out
    assert "images/s" in text and "ms/step" in text and "peak memory" in text and "n/a" in text


def test_compiled_distillation_step_gives_the_eager_loss(tmp_path):
    """The whole KD step (teacher resnet20 + student resnet8, loss, backward, SGD) compiled in
    ``reduce-overhead`` mode (CUDA graphs on a GPU; plain inductor here) logs the same training
    loss and validation loss as the eager step on the same batch. ~35 s of compilation cold."""
    from launch.build import load_run_config
    from launch.run import run_training
    from tests.runs import read_metrics
    losses = {}
    for mode in ("false", "reduce-overhead"):
        cfg = load_run_config(str(REPO / "configs" / "demo.yaml"), [
            "teacher.train_epochs=0", "data.train_size=32", "data.val_size=16", "data.batch_size=32",
            "runtime.device=cpu", "log.tensorboard=false", f"runtime.compile={mode}",
            f"experiment.output_dir={tmp_path / mode}"], smoke=True)
        run_training(cfg)
        losses[mode] = read_metrics(Path(cfg.run_dir))[-1]
    eager, compiled = losses["false"], losses["reduce-overhead"]
    assert compiled["train/loss"] == pytest.approx(eager["train/loss"], rel=1e-4)
    assert compiled["val/loss"] == pytest.approx(eager["val/loss"], rel=1e-4)
