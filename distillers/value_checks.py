"""The values of a ``distiller`` section: numbers as researchers write them, and their ranges.

A method's constructor defaults are its schema of keys (``resolve_distiller_section``); this
module checks what the values mean before anything is built, so ``distiller.temperature=-1`` or
``distiller.kd_weight=.nan`` is one line naming where it was set, not a traceback or a silent
NaN at the first step. The rules go by the parameter's name, the conventions every method here
follows (``*_weight`` is a loss weight, ``temperature``/``tau`` divide logits), so a new method
gets them without listing its keys anywhere.
"""
from typing import Any, Callable, Dict, Optional

from utils.config import AT_LEAST_1, NON_NEGATIVE, POSITIVE, Range, as_number, check_number
from utils.errors import UserError

RULES_BY_NAME: Dict[str, Range] = {
    "temperature": POSITIVE, "base_temperature": POSITIVE, "tau": POSITIVE,   # logits / T
    "alpha": NON_NEGATIVE, "beta": NON_NEGATIVE, "gamma": NON_NEGATIVE,      # term weights
    "warmup": POSITIVE,     # DKD: min(epoch / warmup, 1)
    "rampup": NON_NEGATIVE,  # ONE: sigmoid ramp length in epochs (0: no ramp)
    "nce_temperature": POSITIVE, "nce_k": AT_LEAST_1, "embed_dim": AT_LEAST_1,   # CRD
    "nce_momentum": Range(0, 1, high_open=True),   # CRD bank: momentum·row + (1 − momentum)·v
    "warmup_epochs": POSITIVE,   # ReviewKD: min(epoch / warmup_epochs, 1)
    "init_pred_var": POSITIVE,   # VID: the initial variance (must also exceed eps)
    "connector_kernel_size": AT_LEAST_1, "max_mid_channels": AT_LEAST_1,  # OFD, ReviewKD widths
    "p": POSITIVE,          # AT: the attention map's power (p ≤ 0: constant or infinite maps)
    "k": AT_LEAST_1,        # KDSVD: singular vectors kept (0 would keep them all)
    "eps": POSITIVE,        # numerical floors (VID: σ² = softplus(α) + eps; RKD: 0 gives NaN gradients)
    # CTKD: T = t_start + t_end·sigmoid(θ) > 0; the reversal's curriculum (epochs, strengths)
    "t_start": POSITIVE, "t_end": NON_NEGATIVE, "curriculum_epochs": POSITIVE,
    "strength_start": NON_NEGATIVE, "strength_end": NON_NEGATIVE,
}


def value_range(key: str) -> Optional[Range]:
    if key.endswith("_weight"):
        return NON_NEGATIVE
    return RULES_BY_NAME.get(key)


def check_distiller_values(section: Dict[str, Any], defaults: Dict[str, Any],
                           where: Callable[[str], str]) -> Dict[str, Any]:
    """``section`` with number spellings converted to the type of each key's default (``5e-4``
    for a float, ``1e3`` for an int) and every number checked finite and in range; ``where(key)``
    names the file or command line that set the key."""
    checked = dict(section)
    for key, value in section.items():
        default = defaults.get(key)
        if key == "name" or default is None:
            continue
        kind = type(default)
        if kind is bool:
            if not isinstance(value, bool):
                raise UserError(f"'distiller.{key}' in {where(key)} must be true or false, got {value!r}")
            continue
        if kind in (int, float):
            number = as_number(value, kind)
            if number is None:
                raise UserError(f"'distiller.{key}' in {where(key)} must be {kind.__name__}, "
                                f"got {value!r}")   # the schema's wording for every section
            checked[key] = number
        check_number(f"distiller.{key}", checked[key], value_range(key), where(key))
    return checked
