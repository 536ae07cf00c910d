"""Distillation methods: a registry of ``Distiller`` classes, one small file per method.

A method's keyword arguments and their defaults, in its own file, are the one source of truth for
its config section: ``distiller_defaults`` reads them, ``build_distiller`` checks a section
against them (unknown keys get a spelling hint) and constructs the method.
"""
import difflib
import importlib
import inspect
from typing import Any, Dict, Optional

from torch import nn

from distillers.value_checks import check_distiller_values
from utils.errors import UserError
from utils.registry import Registry

DISTILLERS = Registry("distiller")
_METHOD_MODULES = ("vanilla", "kd", "dkd", "dist", "fitnet", "srrl", "one")


def register_distiller(name: str):
    return DISTILLERS.register(name)


def _load_methods() -> None:
    for module in _METHOD_MODULES:
        try:
            importlib.import_module(f"distillers.{module}")
        except ModuleNotFoundError as err:  # a method not written yet must not hide the others
            if err.name != f"distillers.{module}":
                raise


def list_distillers():
    _load_methods()
    return DISTILLERS.names()


def get_distiller_class(name: str):
    _load_methods()
    return DISTILLERS.get(name)


# Constructor arguments supplied by the builder, not by the config section.
_CONTEXT_ARGS = ("self", "student", "teacher", "input_shape")


def distiller_defaults(name: str) -> Dict[str, Any]:
    """The method's hyper-parameters and their defaults, read from its constructor."""
    params = inspect.signature(get_distiller_class(name).__init__).parameters
    return {k: (None if p.default is inspect.Parameter.empty else p.default)
            for k, p in params.items()
            if k not in _CONTEXT_ARGS and p.kind == p.KEYWORD_ONLY}


def resolve_distiller_section(section: Dict[str, Any], where: str = "config",
                              provenance: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Fill the method's defaults into a config section and check its values; unknown keys and
    bad values are a user error naming where the key was set (``provenance``: dotted key ->
    file or command line, as ``load_config`` fills it; ``where`` otherwise)."""
    def where_of(key: str) -> str:
        return (provenance or {}).get(f"distiller.{key}", where)

    if "name" not in section:
        raise UserError(f"missing key 'distiller.name' in {where}; one of: {', '.join(list_distillers())}")
    defaults = distiller_defaults(section["name"])
    for key in section:
        if key != "name" and key not in defaults:
            close = difflib.get_close_matches(key, defaults, n=1)
            hint = f"; did you mean 'distiller.{close[0]}'?" if close else (
                f"; '{section['name']}' takes: {', '.join(defaults) or 'no options'}")
            raise UserError(f"unknown key 'distiller.{key}' in {where_of(key)}{hint}")
    resolved = {"name": section["name"], **defaults, **{k: v for k, v in section.items() if k != "name"}}
    missing = [k for k, v in resolved.items() if v is None and k != "name"]
    if missing:
        raise UserError(f"missing key 'distiller.{missing[0]}' in {where}")
    return check_distiller_values(resolved, defaults, where_of)


def build_distiller(cfg: Dict[str, Any], student: nn.Module, teacher: Optional[nn.Module] = None,
                    input_shape=(3, 32, 32)):
    """Construct the method named by ``cfg["name"]`` from a (resolved or partial) section."""
    section = resolve_distiller_section(dict(cfg))
    cls = get_distiller_class(section.pop("name"))
    if cls.needs_teacher and teacher is None:
        raise UserError(f"distiller '{cfg['name']}' needs a teacher: set teacher.arch and teacher.checkpoint")
    context = {"student": student}
    if cls.needs_teacher:
        context["teacher"] = teacher
    if "input_shape" in inspect.signature(cls.__init__).parameters:
        context["input_shape"] = tuple(input_shape)
    return cls(**context, **section)
