"""A method is one file, in the package or out of it.

The README's "Adding a method" example, run as it is written there: a method in a module
outside the package, named by its config alone, trains, resumes bit-exactly, evaluates and is
checked and printed like a built-in one; its loss test passes. Methods of the package are found
without a list, and an import error in one is raised, not hidden.
"""
import importlib.util
import json
import re
import sys

import pytest
import torch
import yaml

import distillers
from distillers import get_distiller_class, list_distillers, resolve_distiller_section
from tests.runs import REPO, load, run_script
from utils.errors import UserError

EXAMPLE = re.compile(r"<!-- example: (\S+) -->\n```\w+\n(.*?)```", re.S)
TINY = ["data.dataset=synthetic", "data.num_classes=10", "data.train_size=128",
        "data.val_size=64", "data.batch_size=32", "data.num_workers=0", "student.arch=resnet8",
        "teacher.arch=resnet8", "teacher.allow_random=true", "runtime.device=cpu",
        "log.tensorboard=false", "log.print_freq=2", "solver.epochs=2",
        "solver.milestones=[]"]


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The README's example files, written where the README puts them (the config's ``_base_``
    pointed at this clone's configs/)."""
    directory = tmp_path_factory.mktemp("plugin")
    blocks = dict(EXAMPLE.findall((REPO / "README.md").read_text()))
    assert set(blocks) == {"my_methods/learned_t.py", "my_kd.yaml", "test_learned_t.py"}
    for name, text in blocks.items():
        if name.endswith(".yaml"):
            config = yaml.safe_load(text)
            config["_base_"] = str(REPO / config["_base_"])
            config["experiment"]["output_dir"] = str(directory / "runs")
            text = yaml.safe_dump(config)
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    return directory


def train(example, *args):
    return run_script("train.py", "--config", str(example / "my_kd.yaml"), *TINY, *args,
                      env={"PYTHONPATH": str(example)})


def test_the_readme_loss_test_passes(example, monkeypatch):
    monkeypatch.syspath_prepend(str(example))
    spec = importlib.util.spec_from_file_location("readme_test", example / "test_learned_t.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tests = [getattr(module, name) for name in dir(module) if name.startswith("test_")]
    assert tests
    for test in tests:
        test()
    monkeypatch.delitem(sys.modules, "my_methods.learned_t")


def test_a_method_outside_the_package_trains_resumes_and_evaluates(example):
    """From its config alone: 2 epochs uninterrupted equal 1 epoch + resume, bit for bit
    (student and the method's learnt temperature); eval.py scores the checkpoint."""
    full = train(example, "experiment.name=full")
    assert full.returncode == 0, full.stderr[-3000:]
    assert "loss = 0.1·CE + 0.9·KD(T learnt)" in full.stdout
    first = train(example, "experiment.name=part", "solver.epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = train(example, "experiment.name=part", "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = load(example / "runs/full/last.pth"), load(example / "runs/part/last.pth")
    assert a["epoch"] == b["epoch"] == 2
    assert list(a["distiller"]) == ["log_temperature"]
    assert a["distiller"]["log_temperature"].item() != pytest.approx(torch.tensor(4.0).log().item())
    for section in ("model", "distiller"):
        assert a[section].keys() == b[section].keys()
        assert all(torch.equal(a[section][k], b[section][k]) for k in a[section]), section
    assert a["config"]["distiller"]["name"] == "my_methods.learned_t:LearnedTemperatureKD"
    scored = run_script("eval.py", "--checkpoint", str(example / "runs/full/last.pth"), "--json")
    assert scored.returncode == 0, scored.stderr[-3000:]
    metrics = json.loads(scored.stdout)["metrics"]
    assert metrics["samples"] == 64 and 0.0 <= metrics["top1"] <= 100.0


def test_a_method_outside_the_package_is_printed_and_checked_as_a_built_in_one(example):
    printed = train(example, "--print-config")
    assert printed.returncode == 0, printed.stderr
    section = yaml.safe_load(printed.stdout)["distiller"]
    assert section == {"name": "my_methods.learned_t:LearnedTemperatureKD", "ce_weight": 0.1,
                       "kd_weight": 0.9, "temperature": 4}
    wrong = train(example, "distiller.temperature=abc")
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == ("error: 'distiller.temperature' in the command-line "
                                    "overrides must be float, got 'abc'")
    typo = train(example, "distiller.kd_wieght=1")
    assert typo.returncode == 2 and "did you mean 'distiller.kd_weight'" in typo.stderr


def test_a_plugin_name_that_does_not_import_is_one_line(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="no module 'absent_package'"):
        get_distiller_class("absent_package.methods:Method")
    (tmp_path / "plugin_without_class.py").write_text("X = 1\n")
    (tmp_path / "plugin_with_a_bug.py").write_text("import not_installed_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError, match="has no Distiller subclass 'Method'"):
        get_distiller_class("plugin_without_class:Method")
    with pytest.raises(ModuleNotFoundError, match="not_installed_dependency"):
        get_distiller_class("plugin_with_a_bug:Method")   # the module's own error, unhidden


def test_every_module_that_registers_a_method_is_found_without_a_list():
    written = {name for path in (REPO / "distillers").glob("*.py")
               for name in re.findall(r'@register_distiller\("(\w+)"\)', path.read_text())}
    assert written and set(list_distillers()) == written


def test_a_new_module_in_the_package_is_found_and_its_import_error_raised(tmp_path, monkeypatch):
    """Modules are discovered by walking the package's path: a new file registering a method
    appears in the registry; a file that fails to import fails the lookup loudly."""
    monkeypatch.setattr(distillers, "__path__", [*distillers.__path__, str(tmp_path)])
    monkeypatch.setattr(distillers.DISTILLERS, "_entries", dict(distillers.DISTILLERS._entries))
    (tmp_path / "brand_new.py").write_text(
        "from distillers import register_distiller\n"
        "from distillers.vanilla import Vanilla\n"
        "register_distiller('brand_new')(type('BrandNew', (Vanilla,), {}))\n")
    try:
        assert "brand_new" in list_distillers()
        (tmp_path / "broken.py").write_text("raise RuntimeError('a bug in a method file')\n")
        with pytest.raises(RuntimeError, match="a bug in a method file"):
            list_distillers()
    finally:
        sys.modules.pop("distillers.brand_new", None)


def test_section_values_are_checked_against_the_constructors_type_hints(tmp_path):
    sources = {"distiller.temperature": "the command-line overrides"}
    with pytest.raises(UserError) as error:
        resolve_distiller_section({"name": "kd", "temperature": "abc"}, "a.yaml", sources)
    assert str(error.value) == ("'distiller.temperature' in the command-line overrides must be "
                                "float, got 'abc'")
    with pytest.raises(UserError, match="'distiller.warmup' in b.yaml must be int, got 2.5"):
        resolve_distiller_section({"name": "dkd", "warmup": 2.5}, "b.yaml")
    with pytest.raises(UserError, match="'distiller.logit_standardization' in c.yaml must be true or false, got 1"):
        resolve_distiller_section({"name": "kd", "logit_standardization": 1}, "c.yaml")
    assert resolve_distiller_section({"name": "kd", "temperature": 3})["temperature"] == 3


def test_a_key_is_required_without_a_default_and_range_checked_by_its_annotation(tmp_path, monkeypatch):
    (tmp_path / "needs_keys.py").write_text(
        "from typing import Optional\n"
        "from distillers.vanilla import Vanilla\n"
        "from utils.ranges import PositiveFloat\n"
        "class Method(Vanilla):\n"
        "    def __init__(self, student, teacher=None, *, margin: PositiveFloat, note: Optional[str] = None):\n"
        "        super().__init__(student)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError, match="missing key 'distiller.margin' in d.yaml"):
        resolve_distiller_section({"name": "needs_keys:Method"}, "d.yaml")
    with pytest.raises(UserError, match=r"^'distiller.margin' in d.yaml must be > 0, got -3.0$"):
        resolve_distiller_section({"name": "needs_keys:Method", "margin": -3}, "d.yaml")
    resolved = resolve_distiller_section({"name": "needs_keys:Method", "margin": 1.0})
    assert resolved == {"name": "needs_keys:Method", "margin": 1.0, "note": None}
    monkeypatch.delitem(sys.modules, "needs_keys")


def test_constructors_get_the_context_they_name():
    import models
    from distillers import build_distiller
    seen = {}

    class AsksForContext(distillers.vanilla.Vanilla):
        def __init__(self, student, teacher=None, *, num_classes, input_shape, train_size,
                     student_feature_shapes, teacher_feature_shapes):
            super().__init__(student)
            seen.update(num_classes=num_classes, input_shape=input_shape, train_size=train_size,
                        student=student_feature_shapes, teacher=teacher_feature_shapes)
    AsksForContext.needs_teacher = True
    module = type(sys)("context_probe")
    module.Method = AsksForContext
    sys.modules["context_probe"] = module
    try:
        student, teacher = models.build_model("resnet8", 7), models.build_model("resnet20", 7)
        build_distiller({"name": "context_probe:Method"}, student, teacher,
                        input_shape=(3, 32, 32), train_size=123)
    finally:
        del sys.modules["context_probe"]
    assert seen["num_classes"] == 7 and seen["input_shape"] == (3, 32, 32)
    assert seen["train_size"] == 123
    assert seen["student"][-1] == (64, 8, 8) and len(seen["teacher"]) == len(seen["student"])
    assert not any(k in resolve_distiller_section({"name": "fitnet"})
                   for k in ("student_feature_shapes", "input_shape", "num_classes"))


def test_a_method_is_built_from_its_config_without_data_and_with_the_configs_seed(tmp_path):
    """For notebooks and differential checks: classes, image shape and seed come from the
    config, no data is read (its root does not exist); CRD's seed is never silently 0."""
    from distillers import build_distiller
    from launch.method import build_method
    from utils.config import load_config
    import models
    cfg = load_config(str(REPO / "configs/cifar100/crd/res56_res20.yaml"), [
        "student.arch=resnet8", f"data.root={tmp_path}/no_data", "experiment.seed=7",
        "distiller.nce_k=8"])
    labels, teacher = torch.arange(40) % 4, models.build_model("resnet8", 100)
    method = build_method(cfg, teacher=teacher, train_size=40, train_targets=labels)
    assert method.student.num_classes == 100 and method.sampler.seed == 7
    assert method.memory.memory_v1.shape[0] == 40 and not (tmp_path / "no_data").exists()
    with pytest.raises(UserError, match=r"^distiller 'crd' needs the run's seed \(experiment.seed\)"):
        build_distiller(cfg.distiller, method.student, method.teacher.model, train_size=40,
                        train_targets=labels)
