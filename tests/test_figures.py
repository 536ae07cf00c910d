"""tools/figures.py and ``summarize.py --plot``: the numbers each figure draws against an
independent count on fixed logits, and the commands end to end on tiny checkpoints and runs."""
import json
import math
import shutil
import statistics
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import models
from engine.checkpoint import save_checkpoint
from launch.build import load_run_config
from tests.runs import one_line, write_config
from tools import figures, summarize
from tools.checkpoint_figures import COLOUR_BAR_INCHES, PANEL_INCHES, difference_figure
from tools.checkpoint_outputs import CheckpointOutputs
from tools.figure_data import (class_mean_difference, class_mean_logits, colour_limit,
                               difference_summary, embedding_2d, histogram_2d, logit_statistics,
                               pca_2d, shared_edges, subset_indices)
from tools.plotting import DPI, save_figure

CLASSES = 4
LOGITS = torch.tensor([[2.0, 0.5, -1.0, 0.0], [1.0, 1.0, 3.0, -2.0], [0.0, -1.0, 0.5, 4.0],
                       [3.0, 2.0, 1.0, 0.0], [-1.0, 0.0, 2.5, 1.5], [0.5, 0.5, 0.5, 1.0]])
TEACHER = torch.tensor([[4.0, 1.0, -2.0, 0.0], [0.0, 2.0, 5.0, -1.0], [1.0, 0.0, 0.0, 6.0],
                        [5.0, 1.0, 0.0, -1.0], [0.0, 1.0, 4.0, 0.0], [1.0, 0.0, 0.0, 2.0]])
TARGETS = torch.tensor([0, 2, 3, 0, 2, 3])   # class 1 has no sample


def mean_rows(rows):
    return [sum(column) / len(rows) for column in zip(*rows)]


def standardized(row):
    mean, std = statistics.mean(row), statistics.stdev(row)
    return [(v - mean) / (std + 1e-7) for v in row]


def independent_difference(student, teacher, targets, standardize):
    """|class means of the teacher − of the student| by plain Python, diagonal 0, None for a class
    without samples."""
    result = []
    for k in range(CLASSES):
        picked = [i for i, t in enumerate(targets.tolist()) if t == k]
        if not picked:
            result.append(None)
            continue
        prepare = standardized if standardize else list
        s = mean_rows([prepare(student[i].tolist()) for i in picked])
        t = mean_rows([prepare(teacher[i].tolist()) for i in picked])
        result.append([0.0 if j == k else abs(t[j] - s[j]) for j in range(CLASSES)])
    return result


def test_class_mean_logits_average_each_class_rows_and_leave_an_empty_class_nan():
    means = class_mean_logits(LOGITS, TARGETS, CLASSES)
    assert means.shape == (CLASSES, CLASSES) and means.dtype == torch.float64
    assert means[0].tolist() == pytest.approx(mean_rows([LOGITS[0].tolist(), LOGITS[3].tolist()]))
    assert means[3].tolist() == pytest.approx(mean_rows([LOGITS[2].tolist(), LOGITS[5].tolist()]))
    assert torch.isnan(means[1]).all()


@pytest.mark.parametrize("standardize", [False, True])
def test_class_mean_difference_equals_an_independent_count(standardize):
    got = class_mean_difference(LOGITS, TEACHER, TARGETS, CLASSES, standardize)
    expected = independent_difference(LOGITS, TEACHER, TARGETS, standardize)
    for k, row in enumerate(expected):
        if row is None:   # no sample: NaN, except the diagonal the papers set to 0
            assert torch.isnan(got[k][[j for j in range(CLASSES) if j != k]]).all()
        else:
            assert got[k].tolist() == pytest.approx(row, abs=1e-9)
    finite = [v for row in expected if row for j, v in enumerate(row) if j != expected.index(row)]
    mean, largest = difference_summary(got)
    assert largest == pytest.approx(max(finite)) and mean == pytest.approx(sum(finite) / len(finite))


def test_colour_limit_is_the_largest_value_of_all_compared_panels():
    a, b = torch.tensor([[0.0, 1.5], [float("nan"), 0.0]]), torch.tensor([[0.0, 2.5], [0.2, 0.0]])
    assert colour_limit([a, b]) == 2.5
    assert colour_limit([torch.zeros(2, 2)]) == 1.0   # nothing differs: a valid scale still


def test_logit_statistics_are_each_rows_mean_std_and_range():
    got = logit_statistics(LOGITS)
    for i, row in enumerate(LOGITS.tolist()):
        assert got["mean"][i] == pytest.approx(statistics.mean(row))
        assert got["std"][i] == pytest.approx(statistics.stdev(row))
        assert got["range"][i] == pytest.approx(max(row) - min(row))


def test_histogram_counts_each_pair_in_the_bin_by_its_edges_the_last_bin_closed():
    x = torch.tensor([0.0, 0.5, 1.0, 1.0, 2.0, 3.0, -1.0, 2.99])
    y = torch.tensor([0.0, 2.9, 1.0, 3.0, 2.0, 3.0, 1.0, 0.1])
    edges = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    counts = histogram_2d(x, y, edges, edges)

    def bin_of(v):
        return None if not 0 <= v <= 3 else min(int(v), 2)   # [0,1) [1,2) [2,3]
    expected = [[0] * 3 for _ in range(3)]
    for xv, yv in zip(x.tolist(), y.tolist()):
        if bin_of(xv) is not None and bin_of(yv) is not None:
            expected[bin_of(xv)][bin_of(yv)] += 1
    assert counts.tolist() == expected and int(counts.sum()) == 7   # (-1, 1) is outside


def test_shared_edges_span_every_panel_and_stay_valid_for_equal_values():
    edges = shared_edges([torch.tensor([1.0, 2.0]), torch.tensor([0.5, 4.0])], bins=7)
    assert len(edges) == 8 and edges[0] == 0.5 and edges[-1] == 4.0
    assert shared_edges([torch.tensor([2.0, 2.0])], bins=2).tolist() == [1.5, 2.0, 2.5]


def test_pca_projects_on_the_two_directions_of_largest_variance_with_a_fixed_sign():
    generator = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(6, 6, generator=generator, dtype=torch.float64))[0]
    scales = torch.tensor([5.0, 2.0, 0.3, 0.2, 0.1, 0.05], dtype=torch.float64)
    features = (torch.randn(200, 6, generator=generator, dtype=torch.float64) * scales) @ basis.T + 3.0
    got = pca_2d(features).numpy()
    centred = features.numpy() - features.numpy().mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred)   # independent: the covariance's eigenvectors
    top = vectors[:, np.argsort(values)[::-1][:2]]
    top *= np.sign(top[np.abs(top).argmax(axis=0), [0, 1]])  # largest loading positive
    np.testing.assert_allclose(got, centred @ top, atol=1e-8)
    assert torch.equal(pca_2d(features), pca_2d(features.clone()))


def test_embedding_without_scikit_learn_is_pca_and_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)   # import fails as if not installed
    features = torch.randn(30, 5, generator=torch.Generator().manual_seed(1))
    coordinates, method = embedding_2d(features)
    assert method.startswith("PCA") and "t-SNE" in method
    assert torch.equal(coordinates, pca_2d(features))


def test_embedding_subset_is_sorted_unique_and_the_same_every_call():
    chosen = subset_indices(1000, 50)
    assert torch.equal(chosen, subset_indices(1000, 50)) and len(set(chosen.tolist())) == 50
    assert torch.equal(chosen, chosen.sort().values)
    assert torch.equal(subset_indices(30, 50), torch.arange(30))


def test_mean_and_std_of_a_table_row_are_the_mean_and_the_sample_std():
    values = [70.0, 71.0, 73.0]
    mean, std = summarize.mean_and_std(values)
    assert mean == pytest.approx(214 / 3)
    assert std == pytest.approx(math.sqrt(sum((v - 214 / 3) ** 2 for v in values) / 2))
    assert summarize.mean_and_std([70.0]) == (70.0, None)


# --- end to end ---------------------------------------------------------------------------------

TINY = {"data": {"num_classes": CLASSES, "train_size": 16, "val_size": 40, "val_batch_size": 20,
                 "batch_size": 8}}


def png_size(path: Path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def write_run(directory: Path, name: str, distiller: dict, teacher: dict = None, seed: int = 0) -> Path:
    """A checkpoint as train.py writes it (student weights, the resolved config, the epoch),
    without training: the figures only read the weights."""
    config = write_config(directory, name, distiller=distiller, teacher=teacher, extra=TINY)
    cfg = load_run_config(str(config))
    torch.manual_seed(seed)
    path = directory / name / "best.pth"
    path.parent.mkdir()
    save_checkpoint({"model": models.build_model("resnet8", CLASSES).state_dict(),
                     "config": cfg.to_dict(), "epoch": 2}, str(path))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("figures")
    torch.manual_seed(1)
    teacher = directory / "teacher.pth"
    save_checkpoint({"model": models.build_model("resnet8", CLASSES).state_dict()}, str(teacher))
    other = directory / "teacher_10_classes.pth"
    save_checkpoint({"model": models.build_model("resnet8", 10).state_dict()}, str(other))
    spec = {"arch": "resnet8", "checkpoint": str(teacher)}
    return {"kd": write_run(directory, "kd", {"name": "kd"}, spec, seed=2),
            "kdz": write_run(directory, "kdz", {"name": "kd", "logit_standardization": True}, spec, seed=3),
            "vanilla": write_run(directory, "vanilla", {"name": "vanilla"}),
            "other_teacher": other, "dir": directory}


def test_figures_of_two_checkpoints_are_written_side_by_side_and_into_tensorboard(runs, tmp_path, capsys):
    out = tmp_path / "figs"
    assert figures.main(["--checkpoint", str(runs["kd"]), str(runs["kdz"]), "--out", str(out),
                         "--formats", "png", "--tensorboard", "runtime.device=cpu"]) == 0
    printed = capsys.readouterr().out
    assert "kd: resnet8 → resnet8" in printed and "kd + z-score: resnet8 → resnet8" in printed
    two_panels = round((2 * PANEL_INCHES[0] + COLOUR_BAR_INCHES) * DPI)
    assert png_size(out / "logit_difference.png") == (two_panels, round((PANEL_INCHES[1] + 0.4) * DPI))
    assert png_size(out / "logit_difference_zscore.png")[0] == two_panels
    assert png_size(out / "embedding.png")[0] == two_panels
    assert png_size(out / "logit_statistics.png") == (round((3 * PANEL_INCHES[0] + COLOUR_BAR_INCHES) * DPI),
                                                      round((2 * (PANEL_INCHES[1] + 0.4) + 0.4) * DPI))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    for run in ("kd", "kdz"):
        events = EventAccumulator(str(runs[run].parent / "tb"), size_guidance={"images": 0}).Reload()
        image = events.Images("figures/logit_difference")[0]
        assert (image.width, image.height, image.step) == (*png_size(out / "logit_difference.png"), 2)


def test_tensorboard_figures_for_a_run_whose_tb_is_not_its_directory_are_one_line(runs, tmp_path, capsys):
    run = tmp_path / "kd"
    shutil.copytree(runs["kd"].parent, run, ignore=shutil.ignore_patterns("tb"))
    (run / "tb").write_text("not a directory")
    assert figures.main(["--checkpoint", str(run / "best.pth"), "--out", str(tmp_path / "figs"),
                         "--formats", "png", "--tensorboard", "runtime.device=cpu"]) == 2
    assert one_line(capsys.readouterr().err) == (
        f"error: refusing to write {run / 'tb'}: it is a file, not the run's TensorBoard directory "
        "(move it away, or set another experiment.name)")
    assert (run / "tb").read_text() == "not a directory"


def test_the_same_outputs_give_byte_identical_files(tmp_path):
    generator = torch.Generator().manual_seed(0)
    run = CheckpointOutputs("kd: a → b", "run, epoch 1", torch.randn(12, CLASSES, generator=generator),
                            torch.randn(12, CLASSES, generator=generator), torch.randn(12, 8, generator=generator),
                            torch.arange(12) % CLASSES, CLASSES, str(tmp_path), 1)
    first = save_figure(difference_figure([run], True), str(tmp_path / "a"), ("png", "pdf", "svg"))
    second = save_figure(difference_figure([run], True), str(tmp_path / "b"), ("png", "pdf", "svg"))
    for a, b in zip(first, second):
        assert Path(a).read_bytes() == Path(b).read_bytes(), a
    assert Path(first[1]).read_bytes()[:5] == b"%PDF-" and b"<svg" in Path(first[2]).read_bytes()


@pytest.mark.parametrize("case", ["missing", "no_teacher", "other_classes", "bad_max_diff"])
def test_mistakes_are_one_line_and_exit_2(case, runs, tmp_path, capsys):
    argv, message = {
        "missing": (["--checkpoint", str(tmp_path / "nope.pth")], "checkpoint not found"),
        "no_teacher": (["--checkpoint", str(runs["vanilla"])], "was trained without a teacher (distiller 'vanilla')"),
        "other_classes": (["--checkpoint", str(runs["kd"]), "--teacher", str(runs["other_teacher"]),
                           "--teacher-arch", "resnet8"], "was trained for 10 classes"),
        "bad_max_diff": (["--checkpoint", str(runs["kd"]), "--max-diff", "0"], "--max-diff takes"),
    }[case]
    assert figures.main([*argv, "--out", str(tmp_path / "figs"), "runtime.device=cpu"]) == 2
    assert message in one_line(capsys.readouterr().err)
    assert not list((tmp_path / "figs").glob("*.png"))


def write_table_runs(directory: Path) -> Path:
    """A table of a finished row (2 seeds), a row with one seed still running, and a row we
    cannot reproduce, as the run directories of train.py record them."""
    import yaml
    table = directory / "tiny.yaml"
    table.write_text(yaml.safe_dump({"paper": "tiny", "reports": "best", "rows": [
        {"name": "kd_a", "config": "a.yaml", "top1": 70.0}, {"name": "kd_b", "config": "b.yaml", "top1": 72.0},
        {"name": "simkd", "top1": 75.0, "reproducible": False, "why": "no code"}]}))
    for row, seed, curve, finished in (("kd_a", 0, [60, 69, 68], True), ("kd_a", 1, [61, 71, 70], True),
                                       ("kd_b", 0, [65, 72, 71], True), ("kd_b", 1, [64], False)):
        run = directory / "out/tiny" / row / f"seed{seed}"
        run.mkdir(parents=True)
        run.joinpath("metrics.jsonl").write_text("".join(
            json.dumps({"epoch": e, "val/top1": v}) + "\n" for e, v in enumerate(curve, 1)))
        if finished:
            run.joinpath("run.json").write_text(json.dumps({"summary": {}}))
        else:
            run.joinpath("config.yaml").write_text(yaml.safe_dump({"solver": {"epochs": 3}}))
    return table


def test_summarize_plot_draws_rows_and_every_runs_curve(tmp_path, capsys):
    table = write_table_runs(tmp_path)
    loaded = summarize.load_table(str(table))
    runs = summarize.row_runs(loaded["rows"][1], str(tmp_path / "out"), "tiny", None)
    assert runs["best"] == [72] and runs["last"] == [71] and runs["states"] == ["seed1 running: epoch 1/3"]
    assert runs["curves"] == {0: [(1, 65), (2, 72), (3, 71)], 1: [(1, 64)]}   # the running one too
    assert summarize.main([str(table), "--output-dir", str(tmp_path / "out"), "--plot"]) == 0
    printed = capsys.readouterr().out
    assert "| kd_a | 70.00 | 70.00 ± 1.41 (2) | 69.00 ± 1.41 (2) |" in printed
    for name in ("summary", "curves"):
        assert f"figure: {tmp_path / 'out/tiny' / name}.png" in printed
        assert png_size(tmp_path / "out/tiny" / f"{name}.png")[0] == 9 * DPI
        assert (tmp_path / "out/tiny" / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"


def test_the_curves_of_a_large_table_tell_its_first_80_rows_apart():
    from tools.table_figures import row_style
    styles = [row_style(i) for i in range(80)]
    assert len({(tuple(colour), str(style)) for colour, style in styles}) == 80
