"""A name -> constructor registry shared by models and distillers.

Registering a name twice is a bug and raises at import time; an unknown name is a user mistake
and raises ``UserError`` with the close spellings, so a typo in a config costs one line, not a
traceback.
"""
import difflib
from typing import Callable, Dict, List, Optional

from utils.errors import UserError


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, Callable] = {}

    def register(self, name: Optional[str] = None):
        def decorator(obj: Callable) -> Callable:
            key = name or obj.__name__
            if key in self._entries:
                raise KeyError(f"{self.kind} '{key}' is registered twice")
            self._entries[key] = obj
            return obj
        return decorator

    def get(self, name: str) -> Callable:
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else (
                f"; known: {', '.join(sorted(self._entries))}")
            raise UserError(f"unknown {self.kind} '{name}'{hint}")
        return self._entries[name]

    def names(self) -> List[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
