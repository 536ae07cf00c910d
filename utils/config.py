"""Run configuration: YAML files with ``_base_`` inheritance, command-line overrides, a typed schema.

One ``Config`` is built per run (``load_config``) and passed down; nothing reads a global. The
schema is a tree of frozen dataclasses, so an unknown key, a wrong type or a value outside its
choices or its range (its annotation carries it: ``utils.ranges``) is caught before anything
runs, and the error names the key, the file that set it and the closest valid spelling. The ``distiller`` section is free-form here: each method's own
constructor is its schema (``distillers.resolve_distiller_section``).
"""
import dataclasses
import difflib
import math
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Dict, List, Literal, Optional, Tuple, Union

import yaml

from utils.errors import UserError
from utils.input_files import require_file
from utils.ranges import (AtLeastOneInt, Momentum, NonNegativeFloat, NonNegativeInt,
                          PositiveFloat, Range, range_of)


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "run"
    output_dir: str = "checkpoints"
    seed: NonNegativeInt = 0


@dataclass(frozen=True)
class DataConfig:
    dataset: Literal["cifar100", "imagenet", "imagefolder", "synthetic"] = "cifar100"
    root: str = "data"
    download: bool = False
    batch_size: AtLeastOneInt = 64          # GLOBAL batch, split evenly over the processes
    val_batch_size: Optional[AtLeastOneInt] = None
    num_workers: NonNegativeInt = 4
    loader: Literal["auto", "torch", "gpu"] = "auto"   # gpu: CIFAR on the device; folders decoded there
    num_classes: Optional[AtLeastOneInt] = None   # synthetic only; other datasets know their own
    image_size: Optional[AtLeastOneInt] = None    # synthetic / imagefolder only
    train_size: AtLeastOneInt = 512               # synthetic only
    val_size: AtLeastOneInt = 256                 # synthetic only
    mean: Optional[List[Annotated[float, Range(0, 1)]]] = None  # None: the dataset's own
    std: Optional[List[Annotated[float, Range(0, 1, low_open=True)]]] = None


@dataclass(frozen=True)
class StudentConfig:
    arch: str = "resnet8"


@dataclass(frozen=True)
class TeacherConfig:
    arch: Optional[str] = None
    checkpoint: Optional[str] = None
    # stop when the measured teacher top-1 is below this
    min_top1: Optional[Annotated[float, Range(0, 100)]] = None
    cache: Literal["auto", "fp16", "fp32", "off"] = "off"   # auto = fp16 storage
    # the teacher forward's precision: auto = the step's (runtime.amp); off = fp32 even under
    # runtime.amp; bf16/fp16 = autocast for the teacher alone (faster, logits rounded)
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    train_epochs: NonNegativeInt = 0     # >0: train the teacher first when its checkpoint is missing
    allow_random: bool = False           # smoke runs only: a missing checkpoint gives random weights


@dataclass(frozen=True)
class SolverConfig:
    epochs: AtLeastOneInt = 240
    lr: PositiveFloat = 0.05
    momentum: Momentum = 0.9
    weight_decay: NonNegativeFloat = 5e-4
    nesterov: bool = False
    milestones: List[AtLeastOneInt] = field(default_factory=lambda: [150, 180, 210])
    gamma: PositiveFloat = 0.1
    warmup_epochs: NonNegativeInt = 0
    # sgd: one backward of the summed losses; dot: DOT (Zhao et al., ICCV 2023), the task loss
    # ("loss_ce") stepped with momentum - dot_delta, every other loss with momentum + dot_delta
    optimizer: Literal["sgd", "dot"] = "sgd"
    dot_delta: Momentum = 0.075
    clip_grad_norm: Optional[PositiveFloat] = None   # clip the gradients' global L2 norm to this; null: off


@dataclass(frozen=True)
class RuntimeConfig:
    device: str = "auto"
    amp: Literal["off", "fp16", "bf16"] = "off"
    channels_last: bool = False
    # torch.compile the training module: true (default mode), "reduce-overhead" (CUDA graphs:
    # the whole step replayed as one launch where shapes are static), "max-autotune"; false = eager
    compile: Literal[False, True, "reduce-overhead", "max-autotune"] = False
    # the whole step (forward, losses, backward, fused SGD) captured per epoch as one CUDA graph
    # and replayed for each batch (engine/graphed.py): one CUDA process, sgd, amp off or bf16
    cuda_graph: bool = False
    sync_bn: bool = False
    deterministic: bool = False


@dataclass(frozen=True)
class LogConfig:
    tensorboard: bool = True
    print_freq: AtLeastOneInt = 50


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

MAX_VALUES = 100_000  # far above any real config; a YAML alias bomb expands beyond it
ANCHORS_ONLY = "x-"    # top-level keys that only hold YAML anchors (docker compose's idiom)
MAX_DEPTH = 32        # sections nest 2 or 3 deep; a distiller option a few more


MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping, and keys that are not
    strings (the schema's keys are names): PyYAML silently keeps the last duplicate.

    Merge keys (``<<: *defaults``, or ``<<: [*a, *b]``) work as YAML defines them: the mapping's
    own keys win over merged ones, an earlier merged mapping over a later one. A merged key is not
    a duplicate; two ``<<`` in one mapping are. Merged pairs are kept once per key, so merges of
    merges cannot multiply a mapping's pairs (PyYAML's own ``flatten_mapping`` keeps every copy)."""

    def flatten_mapping(self, node, _open=()):
        """Called by ``construct_mapping`` for every mapping (SafeConstructor's hook)."""
        if id(node) in _open:
            raise _KeyProblem(f"{node.start_mark.line + 1}: a merge key ('<<') merges the mapping into itself")
        own, merged, merge_seen = {}, {}, False
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                if merge_seen:
                    raise _KeyProblem(f"{key_node.start_mark.line + 1}: duplicate key '<<'")
                merge_seen = True
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                if not all(isinstance(source, yaml.MappingNode) for source in sources):
                    raise _KeyProblem(f"{key_node.start_mark.line + 1}: a merge key ('<<') takes a "
                                      "mapping or a list of mappings")
                for source in sources:
                    self.flatten_mapping(source, _open + (id(node),))
                    for pair in source.value:
                        merged.setdefault(self._name(pair[0]), pair)
                continue
            name = self._name(key_node)   # a quoted '<<' is a plain key, checked as any other
            if name in own:
                raise _KeyProblem(f"{key_node.start_mark.line + 1}: duplicate key '{name}'")
            own[name] = (key_node, value_node)
        node.value = list({**merged, **own}.values())

    def _name(self, key_node) -> str:
        key = self.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise _KeyProblem(f"{key_node.start_mark.line + 1}: key {key!r} is not a name (a string)")
        return key


class _KeyProblem(Exception):
    """A key the loader refuses, as ``"<line>: <problem>"``; ``parse_yaml`` names the file."""


def _check_size(data: Any, where: str) -> None:
    """Count the values of ``data`` as if its YAML aliases were expanded, stopping at
    MAX_VALUES: a sub-kilobyte alias bomb is refused in microseconds, not after minutes. Nesting
    beyond MAX_DEPTH is refused too (the merges and checks that follow recurse)."""
    stack, count = [(data, 1)], 0
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise UserError(f"{where} expands to more than {MAX_VALUES} values (YAML aliases "
                            "nested or recursive?): refused")
        if depth > MAX_DEPTH:
            raise _too_deep(where)
        if isinstance(item, dict):
            stack.extend((value, depth + 1) for value in item.values())
        elif isinstance(item, list):
            stack.extend((value, depth + 1) for value in item)


def _too_deep(where: str) -> UserError:
    return UserError(f"{where} nests more than {MAX_DEPTH} levels deep: refused (a config "
                     "needs a few)")


def parse_yaml(text: str, where: str) -> Any:
    """``text`` parsed safely and strictly (see ``_StrictLoader``); errors name ``where``."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except _KeyProblem as err:
        raise UserError(f"{where}:{err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise UserError(f"invalid YAML in {where}{line}: {getattr(err, 'problem', None) or err}") from None
    except RecursionError:   # PyYAML composes nested nodes recursively
        raise _too_deep(where) from None
    _check_size(data, where)
    return data


def read_yaml_file(path: str) -> Any:
    """The YAML document in the file at ``path`` (UTF-8, a BOM allowed), parsed as
    ``parse_yaml`` parses; a file in another encoding is one line naming the first bad byte."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset "
                        f"{err.start}): save it as UTF-8") from None
    return parse_yaml(text, path)


def _read_yaml(path: str) -> Dict[str, Any]:
    require_file(path, "config file")
    data = read_yaml_file(path)
    if data is None:
        raise UserError(f"config file {path} is empty: it holds no settings")
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of sections, not {type(data).__name__}")
    return {key: value for key, value in data.items() if not key.startswith(ANCHORS_ONLY)}


def _base_paths(bases: Any, path: str) -> List[str]:
    """``_base_``: one path or a list of paths (strings), relative to the file naming them."""
    items = [bases] if isinstance(bases, str) else bases
    if not isinstance(items, list) or not all(isinstance(b, str) and b for b in items):
        raise UserError(f"'_base_' in {path} must be a path or a list of paths, got {bases!r}")
    return [os.path.join(os.path.dirname(path), base) for base in items]


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
    merged: Dict[str, Any] = {}
    for base_path in _base_paths(data.pop("_base_", []), path):
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
            value = parse_yaml(raw, f"override '{item}'") if raw != "" else None
        except UserError:
            if any(mark in raw for mark in "&*"):  # anchors/aliases: never taken as plain text
                raise
            value = raw
        node = tree
        parts = dotted.strip().split(".")
        if len(parts) > MAX_DEPTH:
            raise _too_deep(f"the override of '{'.'.join(parts[:3])}...'")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = value
        provenance[dotted.strip()] = "the command-line overrides"


# ---------------------------------------------------------------------------------------------
# Numbers as researchers write them. YAML 1.1 (PyYAML) reads `5e-4` and `1E-3` as strings (its
# floats need a dot), so a string that spells a number is taken as that number wherever the
# schema (or a method's annotation) expects one. Nothing else is converted: 'ten' stays a type error.

_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def as_number(value: Any, kind: type) -> Optional[Any]:
    """``value`` as a ``kind`` (float or int) if it is one or spells one (``5e-4``, ``1E-3``,
    ``.1``, ``1_000``, a whole ``1e3`` for an int); None otherwise. Booleans are not numbers;
    NaN and infinities pass here and are refused by the range checks, with their own message."""
    if isinstance(value, str):
        text = re.sub(r"(?<=\d)_(?=\d)", "", value.strip())   # 1_000: digit separators
        if not _NUMBER.fullmatch(text):
            return None
        value = float(text) if re.search(r"[.eE]", text) else int(text)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if kind is float:
        return float(value)
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    return value


# Keys that existed once: written by hand they are refused with what to do instead.
RETIRED = {"experiment.smoke": "a smoke run is asked for with train.py --smoke (which turns off "
                               "the stop on a non-finite validation); a config cannot set it"}
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


# ---------------------------------------------------------------------------------------------
# Validation against the schema.

def _type_ok(value: Any, hint: Any) -> Tuple[bool, Any]:
    """Whether ``value`` fits the annotation ``hint``; returns (ok, value converted)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:   # the range is checked on the converted value (check_value)
        return _type_ok(value, args[0])
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
    if hint in (float, int):
        number = as_number(value, hint)
        return number is not None, value if number is None else number
    if hint in (dict, Dict) or origin in (dict, Dict):
        return isinstance(value, dict), value
    return isinstance(value, hint), value


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return _describe(args[0])
    if hint is bool:
        return "true or false"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, List):
        return f"a list of {_describe(args[0])}"
    if origin is Union and type(None) in args:
        return " or ".join(_describe(a) for a in args if a is not type(None)) + " or null"
    return getattr(hint, "__name__", str(hint)).replace("typing.", "")


def _build(cls, tree: Dict[str, Any], provenance: Dict[str, str], prefix: str):
    hints = typing.get_type_hints(cls, include_extras=True)   # one per field, in their order
    kwargs = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if key not in hints:
            where = provenance.get(dotted) or provenance.get(_first_leaf(tree[key], dotted), "config")
            if dotted in RETIRED:
                raise UserError(f"'{dotted}' in {where} is not a config key any more: {RETIRED[dotted]}")
            close = difflib.get_close_matches(key, hints, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(hints)}"
            raise UserError(f"unknown key '{dotted}' in {where}{hint}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise UserError(f"'{dotted}' in {provenance.get(dotted, 'config')} must be a section (a mapping)")
            kwargs[key] = _build(hint, value, provenance, dotted + ".")
            continue
        kwargs[key] = check_value(dotted, value, hint, provenance.get(dotted, "config"))
    return cls(**kwargs)


def _first_leaf(value: Any, dotted: str) -> str:
    return dotted + "." + _leaf_keys(value)[0] if isinstance(value, dict) and value else dotted


def load_config(path: str, overrides: Optional[List[str]] = None,
                provenance: Optional[Dict[str, str]] = None) -> Config:
    """Read ``path`` (+ its bases), apply overrides, validate; user mistakes raise ``UserError``.

    ``provenance``, when given, is filled with where each key was set (a file, or the
    command-line overrides), so later checks (the distiller section) blame the right place."""
    provenance = {} if provenance is None else provenance
    tree = load_yaml_tree(path, provenance)
    apply_overrides(tree, list(overrides or []), provenance)
    cfg = _build(Config, tree, provenance, "")
    _check_consistency(cfg, provenance)
    return cfg


SCHEMA_DEFAULTS = "the defaults (utils/config.py)"
MAX_SEED = 2**63 - 1      # torch's generators take 64 bits, and the loaders seed with seed + epoch
MAX_NAME_BYTES = 255      # a folder name's limit on Linux and macOS (NAME_MAX)


def _check_consistency(cfg: Config, provenance: Dict[str, str]) -> None:
    """Rules between keys of a section, and values of the right type and sign that the platform
    still cannot take (refused here, with the key, rather than as a traceback from torch or the
    file system later); each error names where the key it blames was set. Which options go
    together in a run (DOT's momenta among them): launch/combination.py."""
    def where(key: str) -> str:
        return provenance.get(key, SCHEMA_DEFAULTS)

    solver = cfg.solver
    milestones = list(solver.milestones)
    if any(b <= a for a, b in zip(milestones, milestones[1:])):
        raise UserError(f"'solver.milestones' in {where('solver.milestones')} must be increasing, "
                        f"got {milestones}")
    if milestones and milestones[-1] > solver.epochs:
        raise UserError(f"'solver.milestones' in {where('solver.milestones')} must lie within the "
                        f"{solver.epochs} epochs (solver.epochs in {where('solver.epochs')}), got "
                        f"{milestones}: a later milestone never takes effect; drop it (e.g. "
                        f"solver.milestones=[{', '.join(str(m) for m in milestones if m <= solver.epochs)}])")
    if solver.warmup_epochs > solver.epochs:
        raise UserError(f"'solver.warmup_epochs' in {where('solver.warmup_epochs')} must be at most "
                        f"solver.epochs={solver.epochs}, got {solver.warmup_epochs}")
    if not DEVICE.fullmatch(cfg.runtime.device):
        raise UserError(f"'runtime.device' in {where('runtime.device')} must be auto, cpu, cuda, "
                        f"cuda:N or mps, got {cfg.runtime.device!r}")
    if cfg.experiment.seed > MAX_SEED:
        raise UserError(f"'experiment.seed' in {where('experiment.seed')} must be at most 2**63 - 1 "
                        f"({MAX_SEED}), got {cfg.experiment.seed}")
    for part in cfg.experiment.name.split("/"):
        if len(part.encode()) > MAX_NAME_BYTES:
            raise UserError(f"'experiment.name' in {where('experiment.name')} is "
                            f"{len(part.encode())} bytes in one folder name, more than a file "
                            f"system takes ({MAX_NAME_BYTES}): shorten it")


def replace_section(cfg: Config, section: str, **changes) -> Config:
    """A copy of ``cfg`` with some keys of one section changed (configs are frozen)."""
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **changes)})


def config_from_dict(tree: Dict[str, Any], where: str = "checkpoint") -> Config:
    """Rebuild a Config from its ``to_dict()`` form (e.g. the copy stored in a checkpoint; the
    retired keys an older checkpoint holds are dropped)."""
    tree = {section: ({k: v for k, v in values.items() if f"{section}.{k}" not in RETIRED}
                      if isinstance(values, dict) else values) for section, values in tree.items()}
    provenance = {key: where for key in _leaf_keys(tree)}
    return _build(Config, tree, provenance, "")


def check_value(dotted: str, value: Any, hint: Any, where: str) -> Any:
    """``value`` converted to its annotation ``hint`` (numbers as researchers write them) and
    checked finite and within the range the annotation carries (``utils.ranges``): the one
    pass for every config key and every method argument. A mismatch is a one-line error naming
    the key and ``where`` it was set."""
    try:
        ok, converted = _type_ok(value, hint)
    except TypeError:   # a hint isinstance cannot test (e.g. Sequence[int]): the method checks
        return value
    if not ok:
        raise UserError(f"'{dotted}' in {where} must be {_describe(hint)}, got {value!r}")
    allowed = range_of(hint)
    for x in converted if isinstance(converted, (list, tuple)) else [converted]:
        if isinstance(x, float) and not math.isfinite(x):   # an int is finite however large
            raise UserError(f"'{dotted}' in {where} must be a finite number, got {x}")
        if allowed is not None and type(x) in (int, float) and not allowed.holds(x):
            raise UserError(f"'{dotted}' in {where} must be {allowed}, got {converted}")
    return converted
