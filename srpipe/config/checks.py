"""Value checks shared by the stage configurations: each dataclass checks its own fields when it is
built (``__post_init__`` calls :func:`check_values` with its rules), so a bad value is refused however
it arrives (pipeline file, ``--set``, command-line option, library call)."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from typing import Any, Literal

from srpipe.errors import ConfigError

Boundary = Literal["mirror", "replicate"]
Weights = Literal["ema", "raw"]  # which weights of a training checkpoint: its EMA average or the raw ones
Strength = float | Literal["auto"] | None  # photo models: None = "auto" with --model photo, else unused

Rule = tuple[Callable[[Any], bool], str]  # (accepts the value, what "must be" says otherwise)


def finite(v: Any) -> bool:
    return not isinstance(v, float) or math.isfinite(v)


def value_range(lo: float, hi: float) -> Rule:
    """A ``[low, high]`` pair inside ``[lo, hi]``."""
    return (lambda v: len(v) == 2 and lo <= v[0] <= v[1] <= hi,
            f"[low, high] with {lo} <= low <= high <= {hi}")


AT_LEAST_0: Rule = (lambda v: finite(v) and v >= 0, ">= 0")
AT_LEAST_1: Rule = (lambda v: v >= 1, ">= 1")
ABOVE_0: Rule = (lambda v: finite(v) and v > 0, "> 0")
AUTO_OR_SCALE: Rule = (lambda v: v == 0 or v >= 2, "0 (automatic) or an integer >= 2")
UNIT_OPEN: Rule = (lambda v: 0 <= v < 1, "in [0, 1)")
PROBABILITY: Rule = (lambda v: finite(v) and 0 <= v <= 1, "in [0, 1]")
STRENGTH: Rule = (lambda v: v is None or v == "auto" or (isinstance(v, float) and 0 <= v <= 1),
                  "\"auto\" or a number in [0, 1]")

_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def check_values(obj: Any, section: str, rules: dict[str, Rule]) -> None:
    """Raise ``ConfigError`` "<section>.<key>: must be ..., got ..." for the first field of dataclass
    ``obj`` outside its ``Literal`` choices or failing its rule."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        hint = hints[f.name]
        if typing.get_origin(hint) is Literal and value not in typing.get_args(hint):
            choices = ", ".join(repr(a) for a in typing.get_args(hint))
            raise ConfigError(f"{section}.{f.name}: must be one of {choices}, got {value!r}")
        rule = rules.get(f.name)
        if rule is not None and not rule[0](value):
            raise ConfigError(f"{section}.{f.name}: must be {rule[1]}, got {value!r}")
