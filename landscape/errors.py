"""One exception type for bad user input (the CLI prints its message as one line and exits 2), and the checks
of plain values that several settings share, so that every key says the same thing about the same mistake."""
from __future__ import annotations

import math
import numbers
from typing import Any


class UserError(Exception):
    """Something the user asked for cannot work; the message says what and what to do."""


def first_line(err: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message, or its type name when the message is empty (never IndexError)."""
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:limit]


def whole_number(value: Any, key: str, minimum: int | None = 1, alternatives: str = "") -> int:
    """`value` as an int of at least `minimum` (None: any); YAML also hands over bools, floats and strings."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" of {minimum} or more"
        raise UserError(f"{key} is {value!r}: use a whole number{bound}{alternatives}")
    return int(value)


def real_number(value: Any, key: str, low: float, above: bool = False) -> float:
    """`value` as a float at or above `low` (strictly above, where `above`); bools and strings fail here."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or (value <= low if above else value < low):
        raise UserError(f"{key} is {value!r}: use a number {'above' if above else 'of'} {low:g}"
                        f"{'' if above else ' or more'}")
    return float(value)


def is_number(value: Any) -> bool:
    """A finite real number (not a bool, not a string)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
