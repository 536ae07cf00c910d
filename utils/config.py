"""Run configuration: YAML files with ``_base_`` inheritance, command-line overrides, a typed schema.

One ``Config`` is built per run (``load_config``) and passed down; nothing reads a global. The
schema is a tree of frozen dataclasses, so an unknown key, a wrong type or a value outside its
choices is caught before anything runs, and the error names the key, the file that set it and
the closest valid spelling. The ``distiller`` section is free-form here: each method's own
constructor is its schema (``distillers.resolve_distiller_section``).
"""
import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Tuple

import yaml

from utils.errors import UserError


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "run"
    output_dir: str = "checkpoints"
    seed: int = 0


@dataclass(frozen=True)
class DataConfig:
    dataset: Literal["cifar100", "imagenet", "imagefolder", "synthetic"] = "cifar100"
    root: str = "data"
    download: bool = False
    batch_size: int = 64          # GLOBAL batch, split evenly over the processes
    val_batch_size: Optional[int] = None
    num_workers: int = 4
    loader: Literal["auto", "torch", "gpu"] = "auto"   # gpu: CIFAR on the device; folders decoded there
    num_classes: Optional[int] = None   # synthetic only; other datasets know their own
    image_size: Optional[int] = None    # synthetic / imagefolder only
    train_size: int = 512               # synthetic only
    val_size: int = 256                 # synthetic only
    mean: Optional[List[float]] = None  # None: the dataset's standard statistics
    std: Optional[List[float]] = None


@dataclass(frozen=True)
class StudentConfig:
    arch: str = "resnet8"


@dataclass(frozen=True)
class TeacherConfig:
    arch: Optional[str] = None
    checkpoint: Optional[str] = None
    min_top1: Optional[float] = None     # stop when the measured teacher top-1 is below this
    cache: Literal["auto", "fp16", "fp32", "off"] = "off"   # auto = fp16 storage
    # the teacher forward's precision: auto = the step's (runtime.amp); off = fp32 even under
    # runtime.amp; bf16/fp16 = autocast for the teacher alone (faster, logits rounded)
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    train_epochs: int = 0                # >0: train the teacher first when its checkpoint is missing
    allow_random: bool = False           # smoke runs only: a missing checkpoint gives random weights


@dataclass(frozen=True)
class SolverConfig:
    epochs: int = 240
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    milestones: List[int] = field(default_factory=lambda: [150, 180, 210])
    gamma: float = 0.1
    warmup_epochs: int = 0


@dataclass(frozen=True)
class RuntimeConfig:
    device: str = "auto"
    amp: Literal["off", "fp16", "bf16"] = "off"
    channels_last: bool = False
    # torch.compile the training module: true (default mode), "reduce-overhead" (CUDA graphs:
    # the whole step replayed as one launch where shapes are static), "max-autotune"; false = eager
    compile: Literal[False, True, "reduce-overhead", "max-autotune"] = False
    sync_bn: bool = False
    deterministic: bool = False


@dataclass(frozen=True)
class LogConfig:
    tensorboard: bool = True
    print_freq: int = 50


@dataclass(frozen=True)
class Config:
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    distiller: Dict[str, Any] = field(default_factory=lambda: {"name": "vanilla"})
    solver: SolverConfig = field(default_factory=SolverConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def run_dir(self) -> str:
        return os.path.join(self.experiment.output_dir, self.experiment.name)


# ---------------------------------------------------------------------------------------------
# Reading files: `_base_` inheritance with provenance (which file set which key).

def _read_yaml(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise UserError(f"config file not found: {path}")
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise UserError(f"invalid YAML in {path}{where}: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of sections, not {type(data).__name__}")
    return data


def _merge(base: Dict, override: Dict, source: str, provenance: Dict[str, str], prefix=""):
    """Deep-merge ``override`` into ``base`` in place; lists and scalars are replaced."""
    for key, value in override.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, source, provenance, dotted + ".")
        else:
            base[key] = value
            provenance[dotted] = source


def load_yaml_tree(path: str, provenance: Optional[Dict[str, str]] = None,
                   _chain: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """The merged mapping of ``path`` and its ``_base_`` files (paths relative to the file)."""
    provenance = {} if provenance is None else provenance
    real = os.path.realpath(path)
    if real in _chain:
        raise UserError(f"_base_ cycle: {' -> '.join(_chain + (real,))}")
    data = _read_yaml(path)
    bases = data.pop("_base_", [])
    merged: Dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        base_path = os.path.join(os.path.dirname(path), base)
        _merge(merged, load_yaml_tree(base_path, provenance, _chain + (real,)), base_path, {})
    _merge(merged, data, path, provenance)
    for key in _leaf_keys(merged):
        provenance.setdefault(key, path)
    return merged


def _leaf_keys(tree: Dict, prefix="") -> List[str]:
    keys = []
    for key, value in tree.items():
        keys += _leaf_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return keys


def apply_overrides(tree: Dict[str, Any], overrides: List[str], provenance: Dict[str, str]) -> None:
    """Apply ``a.b=value`` strings (values parsed as YAML) in order."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override '{item}' must look like key.sub=value")
        dotted, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        node = tree
        parts = dotted.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = value
        provenance[dotted.strip()] = "the command-line overrides"


# ---------------------------------------------------------------------------------------------
# Validation against the schema.

def _type_ok(value: Any, hint: Any) -> Tuple[bool, Any]:
    """Whether ``value`` fits the annotation ``hint``; returns (ok, value converted)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        if value is None:
            return type(None) in args, None
        return _type_ok(value, next(a for a in args if a is not type(None)))
    if origin is Literal:
        if value is False and "off" in args:  # YAML 1.1 reads a bare `off` as false
            value = "off"
        # type-strict: 1 must not pass for True, nor 0 for False
        return any(type(value) is type(a) and value == a for a in args), value
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            return False, value
        converted = [_type_ok(v, args[0]) for v in value]
        return all(ok for ok, _ in converted), [v for _, v in converted]
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint in (dict, Dict) or origin in (dict, Dict):
        return isinstance(value, dict), value
    return isinstance(value, hint), value


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", str(hint)).replace("typing.", "")


def _build(cls, tree: Dict[str, Any], provenance: Dict[str, str], prefix: str):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if key not in hints:
            where = provenance.get(dotted) or provenance.get(_first_leaf(tree[key], dotted), "config")
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(names)}"
            raise UserError(f"unknown key '{dotted}' in {where}{hint}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise UserError(f"'{dotted}' in {provenance.get(dotted, 'config')} must be a section (a mapping)")
            kwargs[key] = _build(hint, value, provenance, dotted + ".")
            continue
        ok, converted = _type_ok(value, hint)
        if not ok:
            raise UserError(f"'{dotted}' in {provenance.get(dotted, 'config')} must be "
                            f"{_describe(hint)}, got {value!r}")
        kwargs[key] = converted
    return cls(**kwargs)


def _first_leaf(value: Any, dotted: str) -> str:
    return dotted + "." + _leaf_keys(value)[0] if isinstance(value, dict) and value else dotted


def load_config(path: str, overrides: Optional[List[str]] = None,
                provenance: Optional[Dict[str, str]] = None) -> Config:
    """Read ``path`` (+ its bases), apply overrides, validate; user mistakes raise ``UserError``.
    ``provenance``, when given, is filled with where each dotted key was set."""
    provenance = {} if provenance is None else provenance
    tree = load_yaml_tree(path, provenance)
    apply_overrides(tree, list(overrides or []), provenance)
    cfg = _build(Config, tree, provenance, "")
    _check_consistency(cfg, path)
    return cfg


def _check_consistency(cfg: Config, path: str) -> None:
    solver = cfg.solver
    if solver.epochs < 1:
        raise UserError(f"'solver.epochs' in {path} must be at least 1, got {solver.epochs}")
    if sorted(solver.milestones) != list(solver.milestones):
        raise UserError(f"'solver.milestones' in {path} must be increasing, got {solver.milestones}")
    if cfg.data.batch_size < 1:
        raise UserError(f"'data.batch_size' in {path} must be at least 1, got {cfg.data.batch_size}")
    if cfg.log.print_freq < 1:
        raise UserError(f"'log.print_freq' in {path} must be at least 1, got {cfg.log.print_freq}")


def replace_section(cfg: Config, section: str, **changes) -> Config:
    """A copy of ``cfg`` with some keys of one section changed (configs are frozen)."""
    current = getattr(cfg, section)
    if isinstance(current, dict):
        return dataclasses.replace(cfg, **{section: {**current, **changes}})
    return dataclasses.replace(cfg, **{section: dataclasses.replace(current, **changes)})


def config_from_dict(tree: Dict[str, Any], where: str = "checkpoint") -> Config:
    """Rebuild a Config from its ``to_dict()`` form (e.g. the copy stored in a checkpoint)."""
    provenance = {key: where for key in _leaf_keys(tree)}
    return _build(Config, tree, provenance, "")


def check_section_value(dotted: str, value: Any, hint: Any, where: str) -> None:
    """One value of a section whose schema is not a dataclass (the distiller's, read from the
    method's constructor) against its type hint; a mismatch is a one-line error naming the key
    and ``where`` it was set."""
    try:
        ok, _ = _type_ok(value, hint)
    except TypeError:   # a hint isinstance cannot test (e.g. Sequence[int]): the method checks
        return
    if not ok:
        raise UserError(f"'{dotted}' in {where} must be {_describe(hint)}, got {value!r}")
