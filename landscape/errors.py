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


def whole_number(value: Any, key: str, minimum: int = 1, alternatives: str = "") -> int:
    """`value` as an int of at least `minimum`; YAML also hands over bools, floats and strings, which fail here."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise UserError(f"{key} is {value!r}: use a whole number of {minimum} or more{alternatives}")
    return int(value)


def is_number(value: Any) -> bool:
    """A finite real number (not a bool, not a string)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
