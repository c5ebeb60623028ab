"""Typed launcher settings: each backend's frozen dataclass is built by a `Reader`, which checks every
`launcher.<key>` value as it reads it and refuses a key the dataclass does not have. Free of torch and
submitit: the PBS submitit plugin imports this package in every process that uses submitit."""
from __future__ import annotations

import dataclasses
import difflib
import numbers
import re
from dataclasses import dataclass
from typing import Any, Mapping

from landscape.errors import UserError, real_number, whole_number

_TIME = re.compile(r"(\d+)(?::([0-5]?\d)(?::([0-5]?\d))?)?")  # minutes, or H:MM[:SS]


@dataclass(frozen=True)
class Settings:
    """The switches every launcher has; each backend's settings extend these."""
    wait: bool      # a submitting backend may return once the tiles are submitted
    dry_run: bool   # plan and calibrate, write nothing


class Reader:
    """`launcher.*` as handed over by Hydra (or a test); each method reads one key and checks it."""

    def __init__(self, values: Mapping[str, Any], kind: type[Settings]) -> None:
        known = {f.name for f in dataclasses.fields(kind)} | {"name"}
        unknown = sorted(set(values) - known)
        if unknown:
            close = difflib.get_close_matches(unknown[0], known, n=1)
            raise UserError(f"launcher.{unknown[0]} is unknown to launcher={values.get('name')}"
                            + (f" (did you mean launcher.{close[0]}?)" if close else "")
                            + f": every key it takes, with its default, is in conf/launcher/{values.get('name')}.yaml")
        self.values = values

    def value(self, key: str) -> Any:
        """The value as given, unchecked (for a backend's own check); an absent key is refused."""
        if key not in self.values:
            raise UserError(f"launcher.{key} is not set: its default is in "
                            f"conf/launcher/{self.values.get('name')}.yaml")
        return self.values[key]

    def common(self) -> dict[str, bool]:
        """The fields of `Settings`, as keyword arguments for a backend's settings."""
        return {f.name: self.flag(f.name) for f in dataclasses.fields(Settings)}

    def flag(self, key: str) -> bool:
        value = self.value(key)
        if not isinstance(value, bool):
            raise UserError(f"launcher.{key} is {value!r}: use true or false")
        return value

    def whole(self, key: str, minimum: int = 1, null: bool = False) -> int | None:
        """A whole number of at least `minimum`, or null where `null` allows it."""
        value = self.value(key)
        if value is None and null:
            return None
        return whole_number(value, f"launcher.{key}", minimum, ", or null" if null else "")

    def number(self, key: str, null: bool = False) -> float | None:
        """A number above 0 (seconds, minutes, gigabytes), or null where `null` allows it."""
        value = self.value(key)
        return None if value is None and null else real_number(value, f"launcher.{key}", 0.0, above=True)

    def text(self, key: str) -> str | None:
        """A name (queue, account, path, ...): a string or a number written as one; null or empty is unset."""
        value = self.value(key)
        if value is None or value == "":
            return None
        if isinstance(value, bool) or not isinstance(value, (str, numbers.Integral)):
            raise UserError(f"launcher.{key} is {value!r}: use a name (a string), or null")
        return str(value)

    def choice(self, key: str, options: tuple[str, ...]) -> str:
        value = self.value(key)
        if value not in options:
            raise UserError(f"launcher.{key} is {value!r}: use one of {', '.join(options)}")
        return value

    def lines(self, key: str) -> tuple[str, ...]:
        """A list of strings (shell lines, directives); null is none."""
        value = self.value(key)
        if value is None:
            return ()
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise UserError(f"launcher.{key} is {value!r}: use a list of strings, "
                            f"e.g. 'launcher.{key}=[\"...\", \"...\"]'")
        return tuple(value)

    def table(self, key: str) -> dict[str, str | int | float | bool]:
        """A mapping of names to plain values ({constraint: a100}); null is empty."""
        value = self.value(key)
        if value is None:
            return {}
        plain = (str, numbers.Real)
        if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, plain)
                                                      for k, v in value.items()):
            raise UserError(f"launcher.{key} is {value!r}: use a mapping of names to plain values, "
                            f"e.g. 'launcher.{key}={{name: value}}'")
        return dict(value)

    def minutes(self, key: str, seconds: bool = False) -> float:
        """A time limit: whole minutes, or `H:MM` / `H:MM:SS` rounded up to the minute (kept to the second,
        as a fraction of a minute, with `seconds`: PBS takes walltimes in seconds); at least 1 second."""
        value = self.value(key)
        plain = isinstance(value, (str, numbers.Integral)) and not isinstance(value, bool)
        match = _TIME.fullmatch(str(value).strip()) if plain else None
        if match:
            first, mm, ss = int(match[1]), match[2], int(match[3] or 0)
            total = first if mm is None else first * 60 + int(mm) + (ss / 60 if seconds else 1 if ss else 0)
            if total > 0:
                return total
        raise UserError(f"launcher.{key} is {value!r}: use minutes (a whole number of 1 or more) or H:MM:SS")


def plain(values: Mapping[str, Any]) -> Settings:
    """The settings of a backend that has none of its own."""
    return Settings(**Reader(values, Settings).common())
