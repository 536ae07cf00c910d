"""Tests that cover "every method" take their list from the registry, not from a hand-kept one.

A test keeps a table of what each method needs (a student, tolerances); ``case`` looks a
registered method up in it and fails, naming the method, when it has none, so a method
registered tomorrow cannot go untested by accident.
"""
from typing import Any, Dict

import pytest

from distillers import get_distiller_class, list_distillers
from distillers.base import LogitDistiller

METHODS = list_distillers()
LOGIT_METHODS = [name for name in METHODS if issubclass(get_distiller_class(name), LogitDistiller)]


def case(table: Dict[str, Any], name: str) -> Any:
    if name not in table:
        pytest.fail(f"the registered method '{name}' has no case in this test's table: add one")
    return table[name]
