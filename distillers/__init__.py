"""Distillation methods: a registry of ``Distiller`` classes, one small file per method.

Every module of this package is imported on first use (``pkgutil``, no hand-kept list), so a
new file that registers a method is found; an error while importing one is raised, never
hidden. A method outside the package is named in a config as ``package.module:Class``.

A method's keyword-only constructor arguments, their defaults and type hints, in its own file,
are the one source of truth for its config section (``method_parameters``): ``resolve_distiller_section``
checks a section against them (unknown keys get a spelling hint, values must fit the hints and
the ranges they carry, ``PositiveFloat`` of ``utils.ranges``, a key without a
default is required) and fills in the defaults. Arguments named as a context value
(``CONTEXT``) are not config keys: ``build_distiller`` hands them in.
"""
import difflib
import functools
import importlib
import inspect
import pkgutil
import typing
from typing import Any, Dict, Optional, Sequence

from torch import nn

from utils.config import check_value
from utils.errors import UserError
from utils.registry import Registry

DISTILLERS = Registry("distiller")

# What a constructor may ask for by naming it, beside ``student`` and ``teacher``.
CONTEXT = ("num_classes", "input_shape", "train_size", "train_targets", "seed",
           "student_feature_shapes", "teacher_feature_shapes", "student_pooled_dim",
           "teacher_pooled_dim")
_BUILDER_ARGS = ("self", "student", "teacher", *CONTEXT)
_REQUIRED = inspect.Parameter.empty


register_distiller = DISTILLERS.register


def _load_methods() -> None:
    """Import every module of this package (each registers its methods as it is imported)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def list_distillers():
    _load_methods()
    return DISTILLERS.names()


def _load_plugin(name: str):
    """``package.module:Class``: the Distiller subclass ``Class`` of an importable module. A
    module that is not there is the config's mistake (one line); an error inside the module
    is the module's own, raised as it is."""
    from distillers.base import Distiller
    module_name, _, class_name = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name) and module_name[len(err.name):][:1] in ("", "."):
            raise UserError(f"distiller.name '{name}': no module '{err.name}' on the Python path "
                            "(PYTHONPATH)") from None
        raise
    cls = getattr(module, class_name, None)
    if not (inspect.isclass(cls) and issubclass(cls, Distiller)):
        raise UserError(f"distiller.name '{name}': {module_name} has no Distiller subclass "
                        f"'{class_name}'")
    return cls


def get_distiller_class(name: str):
    """A registered method by name, or a method of another package named ``module:Class``."""
    if not isinstance(name, str):
        raise UserError(f"distiller.name must be a method's name, got {name!r}")
    if ":" in name:
        return _load_plugin(name)
    _load_methods()
    return DISTILLERS.get(name)


def method_parameters(cls) -> Dict[str, inspect.Parameter]:
    """The config keys of a method: keyword-only constructor arguments that are not context,
    from the class itself and, where its constructor passes ``**kwargs`` on, from its bases
    (so an argument declared once in a base, e.g. the Z-score switch, is a key of every
    method built on it; a subclass's redeclaration changes its default). A base's arguments
    without a default are not inherited: the subclass passes them itself. Each parameter's
    annotation is what its value must be: its type hint, else its default's type (a plugin
    that annotates nothing still gets its numbers converted and checked finite), else none."""
    found: Dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        hints = typing.get_type_hints(init, include_extras=True)
        params = inspect.signature(init).parameters.values()
        for p in params:
            if (p.kind == p.KEYWORD_ONLY and p.name not in _BUILDER_ARGS and p.name not in found
                    and (klass is cls or p.default is not _REQUIRED)):
                by_default = None if p.default is _REQUIRED or p.default is None else type(p.default)
                found[p.name] = p.replace(annotation=hints.get(p.name, by_default))
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return found


def distiller_defaults(name: str) -> Dict[str, Any]:
    """The method's hyper-parameters and their defaults (None where one is required)."""
    return {k: (None if p.default is _REQUIRED else p.default)
            for k, p in method_parameters(get_distiller_class(name)).items()}


def resolve_distiller_section(section: Dict[str, Any], where: str = "config",
                              provenance: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """The section with the method's defaults filled in, each value converted as researchers
    write numbers (``5e-4``) and checked against its constructor's annotation, the range it
    carries included (one pass, ``utils.config.check_value``; an argument without one is
    checked against its default's type). ``provenance`` names where each key was set
    (``distiller.<key>`` -> file or "the command-line overrides", as ``load_config`` fills it);
    ``where`` stands in for keys it does not name."""
    sources = provenance or {}
    if "name" not in section:
        raise UserError(f"missing key 'distiller.name' in {where}; one of: {', '.join(list_distillers())}")
    name = section["name"]
    params = method_parameters(get_distiller_class(name))
    for key in section:
        if key != "name" and key not in params:
            close = difflib.get_close_matches(key, params, n=1)
            hint = (f"; did you mean 'distiller.{close[0]}'?" if close else
                    f"; '{name}' takes: {', '.join(params) or 'no options'}")
            raise UserError(f"unknown key 'distiller.{key}' in "
                            f"{sources.get(f'distiller.{key}', where)}{hint}")
    resolved = {"name": name, **section}
    for key, param in params.items():
        if key not in resolved:
            if param.default is _REQUIRED:
                raise UserError(f"missing key 'distiller.{key}' in {where}: "
                                f"'{name}' has no default for it")
            resolved[key] = param.default
        if param.annotation is not None:
            resolved[key] = check_value(f"distiller.{key}", resolved[key], param.annotation,
                                        sources.get(f"distiller.{key}", where))
    return resolved


def build_distiller(cfg: Dict[str, Any], student: nn.Module, teacher: Optional[nn.Module] = None,
                    input_shape=(3, 32, 32), num_classes: Optional[int] = None,
                    train_size: Optional[int] = None, train_targets: Optional[Sequence[int]] = None,
                    seed: Optional[int] = None):
    """Construct the method named by ``cfg["name"]`` from a (resolved or partial) section.

    Context a constructor may ask for: ``num_classes`` (default: the student's), ``input_shape``
    ``(C, H, W)``, ``train_size`` (images in the training set), ``train_targets`` (every
    training label in dataset order, as an int64 tensor), ``seed`` (the run's, for a method's
    own random stream: required by a method that asks for it, never silently 0),
    ``student_feature_shapes`` / ``teacher_feature_shapes`` (the ``(C, H, W)`` of each map of
    ``forward_features``) and ``student_pooled_dim`` / ``teacher_pooled_dim`` (the width of its
    ``pooled_feat``), probed once per network on a zero image. Each is computed only when the
    constructor names it."""
    import torch
    from distillers.base import probe_shapes
    from distillers.teacher import FrozenTeacher
    section = resolve_distiller_section(dict(cfg))
    method = section.pop("name")
    cls = get_distiller_class(method)
    if cls.needs_teacher and teacher is None:
        raise UserError(f"distiller '{method}' needs a teacher: set teacher.arch and teacher.checkpoint")
    frozen = None
    if cls.needs_teacher:
        frozen = teacher if isinstance(teacher, FrozenTeacher) else FrozenTeacher(teacher)
    shape = tuple(input_shape)
    probe = functools.cache(lambda model: probe_shapes(model, shape))

    def known(name: str, value: Any, what: str) -> Any:
        if value is None:
            raise UserError(f"distiller '{method}' needs {what}: pass {name}")
        return value

    classes = num_classes or getattr(student, "num_classes", None)
    values = {"num_classes": lambda: int(known("num_classes", classes, "the number of classes")),
              "input_shape": lambda: shape,
              "train_size": lambda: known("train_size", train_size, "the training set's size"),
              "train_targets": lambda: torch.as_tensor(known(
                  "train_targets", train_targets, "the training set's labels"), dtype=torch.long),
              "seed": lambda: int(known("seed", seed, "the run's seed (experiment.seed)")),
              "student_feature_shapes": lambda: probe(student)[0],
              "teacher_feature_shapes": lambda: probe(frozen.model)[0],
              "student_pooled_dim": lambda: probe(student)[1],
              "teacher_pooled_dim": lambda: probe(frozen.model)[1]}
    wanted = inspect.signature(cls.__init__).parameters
    context = {name: values[name]() for name in CONTEXT if name in wanted}
    if "teacher" in wanted:
        context["teacher"] = frozen
    return cls(student=student, **context, **section)
