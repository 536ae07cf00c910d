"""What a run writes and reads on disk cannot be turned against it or against the machine.

Writes never go through a planted link nor over anything but a regular file; a full disk or a
read-only place anywhere (the lock, TensorBoard, torch's zip writer) is one line, exit 2, with
the intact checkpoint named; crafted checkpoints cannot make a load allocate more than the file
holds (tested under an address-space limit, so a regression fails instead of eating the
machine); weights that are not finite and teacher caches that fail their checksum are never used.
A full disk or a read-only directory is simulated by injecting the error where the write is made.
"""
import contextlib
import errno
import io
import os
import resource
import stat
import threading
import zipfile

import pytest
import torch

import models
import tools.export
import utils.atomic
import utils.run_lock
from engine.checkpoint import save_checkpoint
from tests.runs import load, one_line, train_here, write_config
from utils.atomic import TEMP_PREFIX, WriteFailed, append_text, write_text
from utils.errors import UserError
from utils.run_lock import RunLock
from utils.safe_load import read_checkpoint

SMALL = {"data": {"train_size": 128, "val_size": 64}, "log": {"print_freq": 4, "tensorboard": False}}
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
EROFS = OSError(errno.EROFS, os.strerror(errno.EROFS))


def plant(path, kind: str, outside) -> None:
    """Put a ``kind`` where a run file goes: a link to a file outside, a FIFO, a directory."""
    if kind == "symlink":
        outside.write_bytes(b"precious")
        os.symlink(outside, path)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        os.mkdir(path)


def student_state(nan: bool = False) -> dict:
    torch.manual_seed(0)
    state = models.build_model("resnet8", num_classes=10, dataset="cifar100").state_dict()
    if nan:
        state["fc.weight"][0, 0] = float("nan")
    return {"model": state, "epoch": 1}


class _OsWith:
    """The ``os`` module of one module under test, with some calls failing as a disk would."""

    def __init__(self, **failing):
        self.failing = failing

    def __getattr__(self, name):
        if name in self.failing:
            def fail(*args, **kwargs):
                raise self.failing[name]
            return fail
        return getattr(os, name)


# --- writes never escape (links, devices, FIFOs, directories) ----------------------------------

@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
@pytest.mark.parametrize("writer", ["replace", "append", "lock"])
def test_a_planted_link_fifo_or_directory_is_refused_never_written_through(tmp_path, kind, writer):
    run_dir, outside = tmp_path / "run", tmp_path / "outside.txt"
    run_dir.mkdir()
    target = run_dir / (".lock" if writer == "lock" else "config.yaml")
    plant(target, kind, outside)
    write = {"replace": lambda: write_text(str(target), "new"),
             "append": lambda: append_text(str(target), "new"),
             "lock": lambda: RunLock(str(run_dir)).acquire()}[writer]
    with pytest.raises(WriteFailed, match=f"refusing to write {target}: it is a"):
        write()
    assert os.path.lexists(target) and not stat.S_ISREG(os.lstat(target).st_mode)
    if kind == "symlink":
        assert outside.read_bytes() == b"precious"
    assert [name for name in os.listdir(run_dir) if name.startswith(TEMP_PREFIX)] == []


def test_a_lock_file_hard_linked_to_a_file_elsewhere_is_not_truncated(tmp_path):
    run_dir, outside = tmp_path / "run", tmp_path / "outside.txt"
    run_dir.mkdir()
    outside.write_bytes(b"precious")
    os.link(outside, run_dir / ".lock")
    with pytest.raises(WriteFailed, match="has 2 names"):
        RunLock(str(run_dir)).acquire()
    assert outside.read_bytes() == b"precious"


def test_a_run_refuses_a_config_yaml_planted_as_a_link_and_writes_nothing_outside(tmp_path, capsys):
    config, outside = write_config(tmp_path, "linked", epochs=1, extra=SMALL), tmp_path / "outside.txt"
    run_dir = tmp_path / "runs/linked"
    run_dir.mkdir(parents=True)
    plant(run_dir / "config.yaml", "symlink", outside)
    assert train_here("--config", str(config)) == 2
    assert one_line(capsys.readouterr().err) == (
        f"error: refusing to write {run_dir / 'config.yaml'}: it is a symbolic link, not a regular "
        "file (remove it, or choose another path)")
    assert outside.read_bytes() == b"precious"


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_export_refuses_an_out_that_is_not_a_regular_file(tmp_path, kind, capsys):
    checkpoint, out, outside = tmp_path / "last.pth", tmp_path / "out.pth", tmp_path / "outside.txt"
    save_checkpoint(student_state(), str(checkpoint))
    plant(out, kind, outside)
    assert tools.export.main(["--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    assert one_line(capsys.readouterr().err).startswith(f"error: refusing to write {out}: it is a")
    assert not stat.S_ISREG(os.lstat(out).st_mode)
    if kind == "symlink":
        assert outside.read_bytes() == b"precious"


def test_export_to_a_read_only_place_is_one_line(tmp_path, monkeypatch, capsys):
    checkpoint, out = tmp_path / "last.pth", tmp_path / "out.pth"
    save_checkpoint(student_state(), str(checkpoint))
    out.write_bytes(b"the previous export")
    monkeypatch.setattr(utils.atomic, "os", _OsWith(open=EROFS))
    assert tools.export.main(["--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    assert one_line(capsys.readouterr().err) == f"error: cannot write {out}: Read-only file system"
    assert out.read_bytes() == b"the previous export"


# --- full disk and read-only directories: one line, exit 2, nothing lost ------------------------

@pytest.mark.parametrize("failing, reason", [(dict(write=ENOSPC), "No space left on device"),
                                             (dict(makedirs=EROFS), "Read-only file system")],
                         ids=["full-disk-at-the-lock-write", "read-only-output-directory"])
def test_a_run_directory_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, capsys,
                                                            failing, reason):
    config = write_config(tmp_path, "unwritable", epochs=1, extra=SMALL)
    monkeypatch.setattr(utils.run_lock, "os", _OsWith(**failing))
    assert train_here("--config", str(config)) == 2
    lock = tmp_path / "runs/unwritable/.lock"
    assert one_line(capsys.readouterr().err) == f"error: cannot write {lock}: {reason}"


def test_full_disk_in_tensorboards_writer_is_one_line_without_its_threads_traceback(
        tmp_path, monkeypatch, capsys):
    from tensorboard.compat.tensorflow_stub.io import gfile
    monkeypatch.setattr(threading, "excepthook", threading.__excepthook__)   # pytest's would hide it
    config = write_config(tmp_path, "tbfull", epochs=1, extra={**SMALL, "log": {"tensorboard": True}})
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    for name in ("write", "append"):   # every event file write TensorBoard's thread makes
        monkeypatch.setattr(gfile.LocalFileSystem, name, full_disk)
    assert train_here("--config", str(config)) == 2
    tb = tmp_path / "runs/tbfull/tb"
    assert one_line(capsys.readouterr().err) == f"error: cannot write {tb}: No space left on device"


def test_full_disk_inside_torchs_zip_writer_is_one_line_naming_the_last_pth_written_before(
        tmp_path, monkeypatch, capsys):
    """torch's zip writer turns the file's OSError into ``RuntimeError: ... unexpected pos``;
    here at ``best.pth``, just after ``last.pth`` of the same epoch was written."""
    class FullDisk(io.FileIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    original = utils.atomic._open_temp
    monkeypatch.setattr(utils.atomic, "_open_temp",
                        lambda tmp: FullDisk(tmp, "wb") if tmp.endswith("best.pth") else original(tmp))
    config = write_config(tmp_path, "zipfull", epochs=1, extra=SMALL)
    assert train_here("--config", str(config)) == 2
    run_dir = tmp_path / "runs/zipfull"
    assert one_line(capsys.readouterr().err) == (
        f"error: cannot write {run_dir / 'best.pth'}: No space left on device; stopped; the last "
        f"good checkpoint is {run_dir / 'last.pth'} (epoch 1); resume with --resume auto")
    assert load(run_dir / "last.pth")["epoch"] == 1
    assert [name for name in os.listdir(run_dir) if name.startswith(TEMP_PREFIX)] == []


# --- memory bombs under weights_only=True --------------------------------------------------------

@contextlib.contextmanager
def address_space_limit(extra_bytes: int):
    """This process may map at most ``extra_bytes`` more than it has now, while inside."""
    with open("/proc/self/status") as f:
        mapped = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (mapped + extra_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def compressed_checkpoint(path, megabytes: int) -> None:
    """A checkpoint of a few hundred KB holding a ``megabytes`` float tensor of zeros as a
    deflate-compressed record, which torch's reader inflates in full (torch never writes one)."""
    numel = megabytes * 2 ** 20 // 4
    buffer = io.BytesIO()
    torch.save({"model": {"fc.weight": torch.zeros(1000)}}, buffer)
    source = zipfile.ZipFile(buffer)
    with zipfile.ZipFile(path, "w", compresslevel=1) as out:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("data.pkl"):   # 1000 -> numel, in the storage and the size
                declared = b"J" + numel.to_bytes(4, "little")
                data = data.replace(b"q\x08M\xe8\x03t", b"q\x08" + declared + b"t")
                data = data.replace(b"K\x00M\xe8\x03\x85", b"K\x00" + declared + b"\x85")
            if info.filename.endswith("data/0"):
                record = zipfile.ZipInfo(info.filename)
                record.compress_type = zipfile.ZIP_DEFLATED
                with out.open(record, "w") as f:
                    for _ in range(megabytes):
                        f.write(bytes(2 ** 20))
            else:
                out.writestr(info.filename, data)


def test_a_stride_0_tensor_of_10_billion_elements_is_refused_without_expanding_it(tmp_path):
    path = tmp_path / "bomb.pth"
    torch.save({"model": {"fc.weight": torch.zeros(1).expand(10 ** 10)}, "checksum": "0" * 64}, path)
    assert path.stat().st_size < 10_000
    with address_space_limit(512 * 2 ** 20), pytest.raises(UserError) as refused:
        read_checkpoint(str(path))
    assert str(refused.value) == (f"refusing to read {path}: 'model/fc.weight' claims "
                                  "10,000,000,000 values over a storage of 1 (an expanded view, a memory bomb)")


def test_a_compressed_record_expanding_far_beyond_the_file_is_refused_before_allocating_it(tmp_path):
    path = tmp_path / "bomb.pth"
    compressed_checkpoint(path, megabytes=80)
    assert path.stat().st_size < 2 ** 20
    with address_space_limit(40 * 2 ** 20), pytest.raises(UserError) as refused:
        read_checkpoint(str(path))
    assert str(refused.value).startswith(f"refusing to read {path}: its records declare 83,886,")


# --- non-finite weights and damaged teacher caches are never used ---------------------------------

@pytest.mark.parametrize("command", ["eval", "resume", "export"])
def test_a_checkpoint_with_nan_weights_and_a_valid_checksum_is_refused(tmp_path, command, capsys):
    config = write_config(tmp_path, "nan", epochs=2, extra=SMALL)
    last = tmp_path / "runs/nan/last.pth"
    last.parent.mkdir(parents=True)
    save_checkpoint(student_state(nan=True), str(last))
    if command == "eval":
        import eval as eval_cli
        code = eval_cli.main(["--checkpoint", str(last), "--arch", "resnet8"])
    elif command == "resume":
        code = train_here("--config", str(config), "--resume", "auto")
    else:
        code = tools.export.main(["--checkpoint", str(last), "--out", str(tmp_path / "out.pth")])
    assert code == 2
    assert one_line(capsys.readouterr().err) == (
        f"error: refusing {last}: it holds NaN or infinite values (model/fc.weight), the weights "
        "of a diverged run, not a usable checkpoint; use an earlier checkpoint")
    assert not (tmp_path / "out.pth").exists()
