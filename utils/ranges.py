"""Where a number must lie, written where the number is declared.

A config key (``utils/config.py``) or a method's constructor argument carries its range in its
annotation, ``Annotated[float, Range(0, 1)]`` or one of the names below, and one pass
(``utils.config.check_value``) checks the type and the range of every value before anything is
built. A new method's arguments are range-checked by writing their annotations; nothing is
keyed by name elsewhere.
"""
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Optional


@dataclass(frozen=True)
class Range:
    """Where a number must lie: ``low``/``high`` bounds, each inclusive unless ``*_open``."""
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, x: float) -> bool:
        return ((self.low is None or (x > self.low if self.low_open else x >= self.low)) and
                (self.high is None or (x < self.high if self.high_open else x <= self.high)))

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return (f"in {'(' if self.low_open else '['}{self.low:g}, "
                f"{self.high:g}{')' if self.high_open else ']'}")


PositiveFloat = Annotated[float, Range(0, low_open=True)]   # temperatures, learning rates, eps floors
NonNegativeFloat = Annotated[float, Range(0)]      # loss weights, weight decay
NonNegativeInt = Annotated[int, Range(0)]          # counts that may be 0 (workers, seeds)
AtLeastOneInt = Annotated[int, Range(1)]           # sizes, and ramp lengths that divide (epoch / warmup)
Momentum = Annotated[float, Range(0, 1, high_open=True)]   # momentum·old + ...: [0, 1)


def range_of(hint: Any) -> Optional[Range]:
    """The Range an annotation carries: its own, its Optional's or its list elements'."""
    if typing.get_origin(hint) is Annotated:
        return next((m for m in hint.__metadata__ if isinstance(m, Range)), None)
    for arg in typing.get_args(hint):
        found = range_of(arg)
        if found is not None:
            return found
    return None
