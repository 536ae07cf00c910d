"""Resume, for every registered method: a run stopped after epoch 1 and resumed equals the
uninterrupted run, bit for bit (CPU, deterministic data order and augmentation), including a
method's own learnable modules (FitNet's regressor, SRRL's connector, VID's regressors, OFD's
connectors, ReviewKD's ABFs, ONE's branches and gate) and state (CRD's memory bank and the count of
its negatives' draws)."""
import pytest
import torch

from tests.methods import METHODS, case
from tests.runs import load, run_script, write_config

TEACHER = {"arch": "resnet20", "allow_random": True}
CASES = {
    "vanilla": dict(student="resnet8", distiller={"name": "vanilla"}),
    "kd": dict(student="resnet8", distiller={"name": "kd"}, teacher=TEACHER),
    "dkd": dict(student="resnet8", distiller={"name": "dkd", "warmup": 2}, teacher=TEACHER),
    "dist": dict(student="resnet8", distiller={"name": "dist"}, teacher=TEACHER),
    "fitnet": dict(student="resnet8", distiller={"name": "fitnet"}, teacher=TEACHER),
    "srrl": dict(student="resnet8", distiller={"name": "srrl"}, teacher=TEACHER),
    "vid": dict(student="resnet8", distiller={"name": "vid"}, teacher=TEACHER),
    "ofd": dict(student="resnet8", distiller={"name": "ofd"}, teacher=TEACHER),
    "reviewkd": dict(student="resnet8", distiller={"name": "reviewkd"}, teacher=TEACHER),
    "at": dict(student="resnet8", distiller={"name": "at"}, teacher=TEACHER),
    "nst": dict(student="resnet8", distiller={"name": "nst"}, teacher=TEACHER),
    "sp": dict(student="resnet8", distiller={"name": "sp"}, teacher=TEACHER),
    "pkt": dict(student="resnet8", distiller={"name": "pkt"}, teacher=TEACHER),
    "rkd": dict(student="resnet8", distiller={"name": "rkd"}, teacher=TEACHER),
    "kdsvd": dict(student="resnet8", distiller={"name": "kdsvd"}, teacher=TEACHER),
    "one": dict(student="one_resnet32", distiller={"name": "one"}),
    "crd": dict(student="resnet8", distiller={"name": "crd", "nce_k": 32}, teacher=TEACHER),
}
OWN_MODULES = ("fitnet", "srrl", "vid", "ofd", "reviewkd", "crd")   # learnable modules beside the student
SMALL = {"data": {"train_size": 128, "val_size": 64}}


@pytest.mark.parametrize("method", METHODS)
def test_resumed_run_equals_uninterrupted_run(method, tmp_path):
    spec = case(CASES, method)
    full = write_config(tmp_path, "full", epochs=2, extra=SMALL, **spec)
    assert run_script("train.py", "--config", str(full)).returncode == 0
    part = write_config(tmp_path, "part", epochs=2, extra=SMALL, **spec)
    first = run_script("train.py", "--config", str(part), "solver.epochs=1", "solver.milestones=[]")
    assert first.returncode == 0, first.stderr
    resumed = run_script("train.py", "--config", str(part), "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    a, b = load(tmp_path / "runs/full/last.pth"), load(tmp_path / "runs/part/last.pth")
    assert a["epoch"] == b["epoch"] == 2
    for section in ("model", "distiller"):
        assert a[section].keys() == b[section].keys()
        for key in a[section]:
            assert torch.equal(a[section][key], b[section][key]), f"{section}.{key}"
    if method in OWN_MODULES:
        assert a["distiller"], "the method's learnable modules are checkpointed"
