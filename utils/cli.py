"""Command lines with ``section.key=value`` overrides anywhere: before, between or after flags.

argparse alone takes the overrides (a ``nargs="*"`` positional) only in one run of positionals,
so ``train.py --config C --resume auto data.root=x`` was "unrecognized arguments". Here every
token that looks like an override (``word.word=...``) and is not the value of a flag is taken out
first, in order, and argparse parses the rest. A flag's own values are respected: ``--compare
"a.b=1" "a.b=2"`` keeps both as the values of ``--compare``, since that flag takes exactly two.
Only flags with a variable count (``--seeds 0 1 2``) stop at an override.
"""
import argparse
import re
import sys
from typing import Optional, Sequence

OVERRIDE = re.compile(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)+=.*", re.DOTALL)


def _fixed_value_count(action: argparse.Action) -> int:
    """How many tokens after the flag are surely its values (0 for switches, ?, * and +)."""
    if action.nargs is None:
        return 1
    return action.nargs if isinstance(action.nargs, int) else 0


def split_overrides(parser: argparse.ArgumentParser, argv: Sequence[str]):
    """``(other tokens, overrides)``: the overrides in their order, wherever they stood."""
    flags = {option: action for action in parser._actions for option in action.option_strings}
    rest, overrides, skip = [], [], 0
    for i, token in enumerate(argv):
        if skip:
            skip -= 1
            rest.append(token)
        elif token == "--":
            rest.extend(argv[i:])
            break
        elif token.startswith("-") and token.split("=", 1)[0] in flags:
            rest.append(token)
            if "=" not in token:
                skip = _fixed_value_count(flags[token])
        elif OVERRIDE.fullmatch(token):
            overrides.append(token)
        else:
            rest.append(token)
    return rest, overrides


def parse_with_overrides(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None,
                         dest: str = "overrides") -> argparse.Namespace:
    """``parser.parse_args`` where ``section.key=value`` tokens may stand anywhere; they end up,
    in order, in ``args.<dest>`` (the parser may declare that positional for its help text)."""
    rest, overrides = split_overrides(parser, list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(rest)
    setattr(args, dest, [*overrides, *(getattr(args, dest, None) or [])])
    return args
