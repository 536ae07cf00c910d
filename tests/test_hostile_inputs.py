"""What a determined user still tries (issue 26): planted links and FIFOs in an image folder, values
that pass a type check but cannot run, YAML merge keys, paths that are not what a tool expects.
Each ends in one line and exit 2, or works, never in a traceback, a hang or a wrong count."""
import os
import sys
import re
import threading
import time

import pytest

from datasets import imagenet
from tests.datagen import write_image_folder
from utils.errors import UserError


def _load_within(root, seconds=20):
    """``imagenet.load`` of ``root`` in a thread: what it returned or raised, and whether it
    finished within ``seconds`` (a FIFO opened for reading would block forever)."""
    outcome = {}

    def load():
        try:
            outcome["folders"] = imagenet.load("imagefolder", str(root), None, None)
        except UserError as err:
            outcome["error"] = str(err)
    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"loading {root} hangs"
    return outcome


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "folder"
    names = write_image_folder(root, classes=3, per_class=2, size=8)
    return root, names


def test_link_looping_back_into_the_image_folder_is_refused_never_counted_twice(folder):
    root, names = folder
    loop = root / "train" / names[0] / "again"
    loop.symlink_to(root / "train", target_is_directory=True)
    error = _load_within(root)["error"]
    assert error.startswith(f"{loop} is a link to a folder inside a class folder: it is not followed")


def test_class_folder_linked_from_outside_is_read_but_one_linked_back_into_the_split_is_refused(folder, tmp_path):
    root, names = folder
    subset = tmp_path / "subset"
    for split in ("train", "val"):      # an ImageNet subset made of links to the full set's classes
        (subset / split).mkdir(parents=True)
        for name in names[:2]:
            (subset / split / name).symlink_to(root / split / name, target_is_directory=True)
    train, val = _load_within(subset)["folders"]
    assert train.classes == names[:2] and len(train.samples) == 4 and len(val.samples) == 4
    assert [target for _, target in train.samples] == [0, 0, 1, 1]
    back = root / "train" / "zz_all"
    back.symlink_to(root / "train", target_is_directory=True)
    assert _load_within(root)["error"].startswith(f"{back} is a link to {root / 'train'}, inside or above")


@pytest.mark.parametrize("make, kind", [(os.mkfifo, "a FIFO"),
                                        (lambda path: os.symlink("/nonexistent", path), "a broken link")])
def test_a_fifo_or_broken_link_named_like_an_image_is_refused_without_blocking(folder, make, kind):
    root, names = folder
    odd = root / "val" / names[1] / "photo.png"
    make(odd)
    assert _load_within(root)["error"] == f"{odd} is {kind}, not an image file: remove it"


def test_image_folder_samples_keep_torchvision_order_and_links_to_files_are_read(folder):
    from torchvision.datasets import ImageFolder
    root, names = folder
    nested = root / "train" / names[2] / "more"
    nested.mkdir()
    (nested / "x.JPEG").symlink_to(next((root / "val" / names[2]).iterdir()))
    (root / "train" / names[2] / "readme.txt").write_text("not an image name: ignored")
    train, _ = _load_within(root)["folders"]
    assert train.samples == ImageFolder(str(root / "train")).samples and len(train.samples) == 7


def test_class_folder_without_images_is_one_line_naming_it(folder):
    root, names = folder
    (root / "val" / "empty").mkdir()
    assert _load_within(root)["error"].startswith(f"{root / 'val'}: no image files in the class folders empty")


# --- values that pass a type check but cannot run ---------------------------------------------

CLI = "the command-line overrides"


@pytest.mark.parametrize("override, message", [
    ("experiment.seed=18446744073709551616",
     f"'experiment.seed' in {CLI} must be at most 2**63 - 1 (9223372036854775807), got 18446744073709551616"),
    ("experiment.seed=1" + "0" * 400,   # beyond any float: no OverflowError on the way to the limit
     f"'experiment.seed' in {CLI} must be at most 2**63 - 1 (9223372036854775807), got 1{'0' * 400}"),
    ("experiment.name=" + "n" * 300,
     f"'experiment.name' in {CLI} is 300 bytes in one folder name, more than a file system takes (255)"),
    ("solver.milestones=[1.5]", f"'solver.milestones' in {CLI} must be a list of int, got [1.5]"),
    ("experiment." + ".".join(["deeper"] * 5000) + "=1",
     "the override of 'experiment.deeper.deeper...' nests more than 32 levels deep: refused"),
], ids=["seed-beyond-64-bits", "seed-beyond-floats", "300-character-name", "fractional-milestone",
        "5000-level-override"])
def test_value_the_platform_cannot_take_is_one_line_exit_2_naming_the_key(tmp_path, override, message, capsys):
    from tests.runs import one_line, train_here, write_config
    config = write_config(tmp_path, "limits", epochs=1)
    assert train_here("--config", str(config), override) == 2
    assert one_line(capsys.readouterr().err).startswith(f"error: {message}")
    assert not (tmp_path / "runs").exists()


def test_config_nested_past_pythons_recursion_limit_is_one_line_not_a_recursion_error(tmp_path):
    """600 levels already exhaust PyYAML's recursion (the issue's 5,000 cost seconds to scan);
    the block-style file is within it, refused by the depth check that guards the merges."""
    from utils.config import load_config
    for name, text in (("flow", "distiller: {name: kd, x: " + "[" * 600 + "]" * 600 + "}\n"),
                       ("block", "experiment:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(100)))):
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        with pytest.raises(UserError, match=f"^{path} nests more than 32 levels deep: refused"):
            load_config(str(path))


def test_mps_on_a_build_without_it_is_one_line_naming_the_key(monkeypatch):
    import torch
    from launch.build import resolve_device
    from types import SimpleNamespace
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(UserError, match=r"^runtime.device is 'mps' but this PyTorch build "):
        resolve_device(SimpleNamespace(runtime=SimpleNamespace(device="mps")))


# --- YAML merge keys ------------------------------------------------------------------------

MERGED = """\
x-recipe: &recipe {lr: 0.1, epochs: 3, milestones: [2]}
x-fast: &fast {lr: 0.5, warmup_epochs: 1}
teacher: {arch: resnet20}
distiller: {name: kd}
solver:
  <<: [*fast, *recipe]
  epochs: 4
"""


def test_yaml_merge_keys_fill_a_section_its_own_keys_and_earlier_merges_winning(tmp_path):
    from utils.config import load_config
    path = tmp_path / "merged.yaml"
    path.write_text(MERGED)
    solver = load_config(str(path)).solver
    assert (solver.lr, solver.epochs, solver.milestones, solver.warmup_epochs) == (0.5, 4, [2], 1)
    path.write_text(MERGED.replace("lr: 0.1,", "lr: -0.1,").replace("lr: 0.5, ", ""))
    with pytest.raises(UserError, match=f"^'solver.lr' in {path} must be > 0"):   # blamed on the file
        load_config(str(path))


@pytest.mark.parametrize("text, message", [
    ("x-a: &a {lr: 0.1}\nsolver: {<<: *a, epochs: 3, epochs: 4}\n", ":2: duplicate key 'epochs'"),
    ("x-a: &a {lr: 0.1}\nsolver:\n  <<: *a\n  <<: *a\n", ":4: duplicate key '<<'"),
    ("x-a: &a [1, 2]\nsolver: {<<: *a}\n", ":2: a merge key ('<<') takes a mapping or a list of mappings"),
    ("x-a: &a {<<: *a}\n", ":1: a merge key ('<<') merges the mapping into itself"),
    ("solver: {<<: {lr: 0.1, lr: 0.2}}\n", ":1: duplicate key 'lr'"),
])
def test_merge_keys_keep_the_duplicate_key_check(tmp_path, text, message):
    from utils.config import load_config
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match="^" + re.escape(f"{path}{message}")):
        load_config(str(path))


def test_merges_of_merges_cannot_multiply_a_mapping_and_an_alias_bomb_through_a_merge_is_refused(tmp_path):
    from utils.config import parse_yaml
    levels = "l0: &l0 {k: 1}\n" + "".join(
        f"l{i + 1}: &l{i + 1} {{<<: [{', '.join([f'*l{i}'] * 9)}]}}\n" for i in range(9))
    start = time.perf_counter()
    assert parse_yaml(levels, "levels")["l9"] == {"k": 1}        # 9^9 copies of one pair, merged once
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{b}: &{b} {{<<: {{v: [{', '.join([f'*{a}'] * 9)}]}}}}\n" if b != "b" else
        f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))
    with pytest.raises(UserError, match="expands to more than 100000 values"):
        parse_yaml(bomb, "bomb")
    assert time.perf_counter() - start < 20   # not 9^9 copies: those take hours (0.1 s measured; a wide bound, not a timing)


# --- paths that are not what a tool expects -------------------------------------------------

@pytest.fixture
def odd_paths(tmp_path):
    """A folder, a FIFO, and files that are not checkpoints or tables."""
    (tmp_path / "folder.pth").mkdir()
    os.mkfifo(tmp_path / "fifo.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "text.pth").write_text("hello\n")
    (tmp_path / "list.yaml").write_text("[1, 2]\n")
    (tmp_path / "no_rows.yaml").write_text("paper: x\n")
    (tmp_path / "bad_row.yaml").write_text("rows: [{name: ../up, config: c.yaml}]\n")
    return tmp_path


@pytest.mark.parametrize("tool", ["eval", "export"])
@pytest.mark.parametrize("name, message", [
    ("folder.pth", "checkpoint {path} is a directory, not a file"),
    ("fifo.pth", "checkpoint {path} is a FIFO, not a file"),
    ("empty.pth", "{path} is empty (0 bytes): not a checkpoint"),
    ("text.pth", "{path} is not a PyTorch checkpoint: neither a zip archive (torch.save) nor a "
                 "pickle; it starts with b'hello\\n'"),
], ids=["folder", "fifo", "empty", "text"])
def test_checkpoint_path_that_is_no_checkpoint_is_one_true_line(odd_paths, tool, name, message, capsys):
    import eval as eval_cli
    from tests.runs import one_line
    from tools import export
    path = odd_paths / name
    args = {"eval": (eval_cli.main, ["--checkpoint", str(path)]),
            "export": (export.main, ["--checkpoint", str(path), "--out", str(odd_paths / "out.pth")])}
    main, argv = args[tool]
    assert main(argv) == 2
    assert one_line(capsys.readouterr().err).startswith("error: " + message.format(path=path))


@pytest.mark.parametrize("name, kind", [("folder.pth", "a directory"), ("fifo.pth", "a FIFO")])
def test_teacher_checkpoint_that_is_no_file_is_said_so_not_called_missing(odd_paths, name, kind):
    """Not 'not found' (nor, under teacher.allow_random, replaced by random weights): the path
    holds something, and the user should know what."""
    from launch.build import build_teacher
    from utils.config import load_config
    path = odd_paths / name
    cfg = load_config("configs/cifar100/kd/res32x4_res8x4.yaml",
                      [f"teacher.checkpoint={path}", "teacher.allow_random=true"])
    with pytest.raises(UserError, match=f"teacher checkpoint {path} is {kind}, not a file"):
        build_teacher(cfg, num_classes=100)


@pytest.mark.parametrize("args, message", [
    (["{dir}/list.yaml"], "{dir}/list.yaml is not a table: a table is a mapping with 'rows'"),
    (["{dir}/no_rows.yaml"], "{dir}/no_rows.yaml is not a table"),
    (["{dir}/bad_row.yaml"], "{dir}/bad_row.yaml: row 1 needs a 'name' of letters, digits and _.+-"),
    (["{dir}/fifo.pth"], "table {dir}/fifo.pth is a FIFO, not a file"),
    (["{dir}"], "table {dir} is a directory, not a file"),
    (["dkd_cifar100_diff", "--jobs-per-gpu", "0"], "--jobs-per-gpu must be at least 1, got 0"),
    (["dkd_cifar100_diff", "--seeds", "0", "-1"], "--seeds must be in [0, 2**63 - 1] (experiment.seed), got -1"),
    (["dkd_cifar100_diff", "--gpus", "x"], "--gpus takes comma-separated GPU indices or UUIDs (e.g. 0,1), got 'x'"),
], ids=["list", "no-rows", "bad-row-name", "fifo", "folder", "jobs-0", "seed-negative", "gpus-x"])
def test_reproduce_refuses_what_is_no_table_or_no_schedule_in_one_line(odd_paths, args, message, capsys):
    from tests.runs import one_line
    from tools import reproduce
    assert reproduce.main([a.format(dir=odd_paths) for a in args] + ["--dry-run"]) == 2
    assert one_line(capsys.readouterr().err).startswith("error: " + message.format(dir=odd_paths))


# --- progress in a log file ------------------------------------------------------------------

def test_teacher_cache_progress_is_plain_lines_in_a_log_and_a_bar_only_on_a_terminal(monkeypatch, capsys):
    import torch

    import models
    from datasets.gpu_loader import augment_batch
    from distillers import teacher_cache
    torch.manual_seed(0)
    teacher = models.build_model("resnet8", num_classes=3, dataset="cifar100")
    images = torch.randint(0, 256, (30, 3, 8, 8), dtype=torch.uint8)
    mean, std = torch.tensor([0.5] * 3), torch.tensor([0.25] * 3)

    def build():   # 2 views per image (padding 0), 2 images per batch: 15 batches
        return teacher_cache.compute_view_logits(teacher, images, mean, std, 0, augment_batch,
                                                 torch.float32, batch_size=4)
    logits = build()
    out, err = capsys.readouterr()
    assert logits.shape == (30, 2, 3) and "\r" not in out + err
    done = [int(line.split("[")[1].split("/")[0]) for line in out.splitlines()]
    assert out.startswith("teacher cache [2/15]\n") and done == sorted(set(done)) and done[-1] == 15
    assert len(done) == 10
    monkeypatch.setattr("utils.logger.console_is_terminal", lambda: True)
    build()
    out, err = capsys.readouterr()
    assert out == "" and "\r" in err and "teacher cache" in err


def test_reproduce_writes_no_run_log_through_a_link_planted_in_the_run_directory(tmp_path, capsys):
    from tools.reproduce import PlannedRun, run_all
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me\n")
    run_directory = tmp_path / "row" / "seed0"
    run_directory.mkdir(parents=True)
    (run_directory / "train.log").symlink_to(outside)
    run = PlannedRun("row", 0, str(run_directory), [sys.executable, "-c", "print('run output')"], 1)
    failures = run_all([run], [{}])
    assert len(failures) == 1 and "train.log" in failures[0] and "link" in failures[0]
    assert outside.read_text() == "keep me\n"


def test_a_quoted_merge_key_is_a_plain_key_not_a_silently_dropped_one():
    from utils.config import parse_yaml
    assert parse_yaml("a: {'<<': 1, y: 2}\n", "quoted") == {"a": {"<<": 1, "y": 2}}
