"""Tests that cover "every method" take their list from the registry, not from a hand-kept one.

A test's table lists only the methods that need something else than its default case (another
student, a shorter warm-up, a tolerance); ``every_method`` gives each registered method its
case, the default derived from the method itself, so a method registered tomorrow is tested
with no new test code. An exception naming no registered method is an error (a renamed method
would otherwise silently lose its special case).
"""
from typing import Any, Callable, Dict

from distillers import get_distiller_class, list_distillers
from distillers.base import LogitDistiller

METHODS = list_distillers()
LOGIT_METHODS = [name for name in METHODS if issubclass(get_distiller_class(name), LogitDistiller)]


def needs_teacher(name: str) -> bool:
    return get_distiller_class(name).needs_teacher


def every_method(exceptions: Dict[str, Any], default: Callable[[str], Any]) -> Dict[str, Any]:
    """Each registered method's case: its entry in ``exceptions``, else ``default(name)``."""
    stale = sorted(set(exceptions) - set(METHODS))
    if stale:
        raise ValueError(f"test exceptions for methods that are not registered: {stale}")
    return {name: exceptions[name] if name in exceptions else default(name) for name in METHODS}
