"""Every bad file is one line (exit 2), refused when it is read, never silently accepted:
checkpoints, config files, data."""
import pickle
import time
import zipfile

import numpy as np
import pytest
import torch

from engine.checkpoint import load_checkpoint, save_checkpoint
from tests.datagen import _write_python2_pickle, write_cifar100, write_image_folder
from tests.runs import load, one_line, read_metrics, train_here, write_config
from utils.config import load_config
from utils.errors import UserError

SMALL = {"data": {"train_size": 128, "val_size": 64}}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A real one-epoch run's last.pth (content)."""
    directory = tmp_path_factory.mktemp("good")
    assert train_here("--config", str(write_config(directory, "good", epochs=1, extra=SMALL))) == 0
    return load(directory / "runs/good/last.pth")


def _flip_a_weight_byte(path) -> None:
    """Change one byte in the middle of the largest tensor's stored data."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(f.read(4), dtype="<u2")
        position = info.header_offset + 30 + int(name_len) + int(extra_len) + info.file_size // 2
        f.seek(position)
        byte = f.read(1)[0]
        f.seek(position)
        f.write(bytes([byte ^ 0x10]))


def _wrong_momentum(state):
    optimizer = state["optimizer"]
    first = next(iter(optimizer["state"]))
    buffers = dict(optimizer["state"][first])
    buffers["momentum_buffer"] = torch.zeros(3, 3)
    return {**state, "optimizer": {**optimizer, "state": {**optimizer["state"], first: buffers}}}


BROKEN = {
    "missing scaler and rng": (lambda s: {k: v for k, v in s.items() if k not in ("scaler", "rng")},
                               "cannot be resumed from: it has no scaler, rng"),
    "non-integer epoch": (lambda s: {**s, "epoch": 1.5},
                          "cannot be resumed from: its epoch is 1.5, not a non-negative integer"),
    "epoch as text": (lambda s: {**s, "epoch": "1"}, "its epoch is '1', not a non-negative integer"),
    "optimizer state of the wrong shape": (
        _wrong_momentum, "its optimizer state does not fit the parameters (momentum_buffer of parameter"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_damaged_checkpoint_is_refused_on_resume_before_any_step(case, good, tmp_path, capsys):
    change, message = BROKEN[case]
    path = tmp_path / "bad.pth"
    save_checkpoint(change(dict(good)), str(path))   # a valid checksum: the content is what is wrong
    config = write_config(tmp_path, "resume", epochs=2, extra=SMALL)
    assert train_here("--config", str(config), "--resume", str(path)) == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith(f"error: {path}") and message in err
    assert not (tmp_path / "runs/resume/metrics.jsonl").exists() or \
        read_metrics(tmp_path / "runs/resume") == []


def test_checkpoint_of_another_architecture_is_refused_naming_it(good, tmp_path, capsys):
    path = tmp_path / "resnet8.pth"
    save_checkpoint(good, str(path))
    config = write_config(tmp_path, "other", student="resnet14", epochs=2, extra=SMALL)
    assert train_here("--config", str(config), "--resume", str(path)) == 2
    err = one_line(capsys.readouterr().err)
    assert f"{path} does not fit this run (it was written for student 'resnet8')" in err
    assert "missing keys" in err


def test_text_file_named_pth_is_one_line(tmp_path, capsys):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint\n")
    config = write_config(tmp_path, "text", epochs=1, extra=SMALL)
    assert train_here("--config", str(config), "--resume", str(path)) == 2
    assert one_line(capsys.readouterr().err).startswith(f"error: {path} is not a PyTorch checkpoint: neither a zip archive")


def test_flipped_byte_in_a_weight_is_reported_never_trained_on(good, tmp_path, capsys):
    path = tmp_path / "flipped.pth"
    save_checkpoint(good, str(path))
    _flip_a_weight_byte(path)
    raw = torch.load(path, map_location="cpu", weights_only=True)   # torch itself loads it
    assert any(not torch.equal(raw["model"][k], good["model"][k]) for k in good["model"])
    with pytest.raises(UserError, match="is damaged: its content no longer matches the checksum"):
        load_checkpoint(str(path))
    config = write_config(tmp_path, "flip", epochs=2, extra=SMALL)
    assert train_here("--config", str(config), "--resume", str(path)) == 2
    assert "is damaged" in one_line(capsys.readouterr().err)
    import eval as eval_cli
    assert eval_cli.main(["--checkpoint", str(path)]) == 2
    assert "is damaged" in one_line(capsys.readouterr().err)


# --- config files ---------------------------------------------------------------------------

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("content, message", [
    (b"_base_: 5\n", "'_base_' in {file} must be a path or a list of paths, got 5"),
    (b"_base_: [null]\n", "'_base_' in {file} must be a path or a list of paths, got [None]"),
    (b"1: {lr: 0.1}\n", "{file}:1: key 1 is not a name (a string)"),
    (b"solver: {3: 0.1}\n", "{file}:1: key 3 is not a name (a string)"),
    (b"experiment: {name: caf\xe9}\n", "{file} is not UTF-8 text (byte 0xe9 at offset 22)"),
    (b"", "config file {file} is empty: it holds no settings"),
    (b"# only a comment\n", "config file {file} is empty"),
    (b"solver:\n  lr: 0.1\n  epochs: 3\n  lr: 0.2\n", "{file}:4: duplicate key 'lr'"),
    (b"solver: {lr: 0.1}\nsolver: {epochs: 3}\n", "{file}:2: duplicate key 'solver'"),
])
def test_bad_config_file_is_one_line_naming_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        load_config(str(path))
    assert str(err.value).startswith(message.format(file=path)) and "\n" not in str(err.value)


def test_yaml_alias_bomb_is_refused_in_well_under_a_second(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    assert path.stat().st_size < 1024                      # 9^9 values once expanded
    start = time.perf_counter()
    with pytest.raises(UserError, match="expands to more than 100000 values"):
        load_config(str(path))
    with pytest.raises(UserError, match="expands to more than 100000 values"):
        load_config(str(write_config(tmp_path, "ok", epochs=1)),
                    ["data.mean=" + ALIAS_BOMB.replace("\n", ", ").join("{}")])
    assert time.perf_counter() - start < 0.5


def test_anchors_and_aliases_of_reasonable_size_still_work(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text("solver: {lr: &lr 0.1, milestones: &m [2, 3]}\nteacher: {min_top1: *lr}\n")
    cfg = load_config(str(path))
    assert cfg.solver.lr == 0.1 and cfg.teacher.min_top1 == 0.1


# --- data -----------------------------------------------------------------------------------

@pytest.fixture
def folder_with_a_bad_file(tmp_path):
    root = tmp_path / "folder"
    names = write_image_folder(root, classes=3, per_class=8, size=32)
    good_file = sorted((root / "train" / names[1]).iterdir())[2]
    good_file.write_bytes(good_file.read_bytes()[:200])      # truncated JPEG
    (root / "train" / names[2] / "zz_notes.JPEG").write_text("not an image")
    return root, good_file


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_image_is_one_line_naming_the_file(folder_with_a_bad_file, tmp_path, workers, capsys):
    root, truncated = folder_with_a_bad_file
    config = write_config(tmp_path, "folder", epochs=1, extra={"data": {
        "dataset": "imagefolder", "root": str(root), "image_size": 32, "num_classes": None,
        "num_workers": workers, "batch_size": 8}})
    assert train_here("--config", str(config)) == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith("error: cannot read image ") and err.endswith("; replace or remove the file")
    assert str(truncated) in err or str(root / "train") in err and "zz_notes.JPEG" in err


def test_device_decoder_names_the_file_it_cannot_decode(tmp_path):
    from datasets.jpeg_loader import decode_batch
    for data in (b"\xff\xd8 JPEG magic, then nothing of a JPEG", b"plain text"):
        with pytest.raises(UserError, match=r"^cannot read image /data/b\.JPEG: .*; replace or remove the file$"):
            decode_batch([data], torch.device("cpu"), ["/data/b.JPEG"])


def _rewrite_cifar_split(root, split, change):
    path = root / "cifar-100-python" / split
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="bytes")
    _write_python2_pickle(path, change(entry))


@pytest.mark.parametrize("change, message", [
    (lambda e: {**e, b"data": e[b"data"][:, :3000]}, "'data' must be uint8 rows of 3072 bytes"),
    (lambda e: {**e, b"fine_labels": [100] + e[b"fine_labels"][1:]},
     "label 100 of image 0 is outside the 100 classes"),
    (lambda e: {**e, b"fine_labels": e[b"fine_labels"][:-1]}, "'fine_labels' must hold one integer label per image"),
])
def test_damaged_cifar_files_are_refused_when_loaded(tmp_path, change, message):
    from datasets import cifar
    write_cifar100(tmp_path, n_train=20, n_test=10)
    _rewrite_cifar_split(tmp_path, "train", change)
    with pytest.raises(UserError, match=message):
        cifar.load(str(tmp_path))


def test_one_class_dataset_is_refused_for_distillation(tmp_path, capsys):
    config = write_config(tmp_path, "one_class", epochs=1, distiller={"name": "kd"},
                          teacher={"arch": "resnet8", "allow_random": True},
                          extra={"data": {"num_classes": 1, **SMALL["data"]}})
    assert train_here("--config", str(config)) == 2
    assert "has 1 class: distillation ('kd') needs at least 2" in one_line(capsys.readouterr().err)
