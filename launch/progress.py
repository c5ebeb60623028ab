"""Progress of a long computation: a live bar on a terminal, plain lines anywhere else.

A log file (a batch job's, `nohup`'s, `landscape-surface ... > log 2>&1`) gets a line per tenth of the work or
per `every_s` seconds with progress, whichever comes first, and a last line on closing, each ending in a
newline: `surface: 120/441 points (27%), 3.1 points/s, about 00:01:43 left`. No carriage return reaches it."""
from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

from tqdm import tqdm


def clock_text(seconds: float) -> str:
    """A duration for people (time taken, time left): HH:MM:SS, or `N.N days` from a day on."""
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    s = int(round(seconds))
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """`with Progress(total, "surface") as bar: bar.update(n)`, written to `stream` (stderr by default)."""

    def __init__(self, total: int, desc: str, unit: str = "points", stream: TextIO | None = None,
                 every_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.desc, self.unit, self.every_s, self.clock = total, desc, unit, every_s, clock
        self.stream = stream or sys.stderr
        self.count = self.shown = 0
        self.start = self.last = clock()
        live = getattr(self.stream, "isatty", lambda: False)()
        self.bar = tqdm(total=total, unit="pt", desc=desc, smoothing=0.1, file=self.stream) if live else None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tenth(self, count: int) -> int:
        return count * 10 // self.total if self.total else 10

    def update(self, n: int) -> None:
        """`n` more done; a line when a tenth is crossed or `every_s` has passed since the last one."""
        self.count += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = self.clock()
        moved = self.shown < self.count < self.total
        if moved and (self._tenth(self.count) > self._tenth(self.shown) or now - self.last >= self.every_s):
            self._line(now, final=False)

    def close(self) -> None:
        """The last line: how far it got, in how long."""
        if self.bar is not None:
            self.bar.close()
        else:
            self._line(self.clock(), final=True)

    def _line(self, now: float, final: bool) -> None:
        elapsed = now - self.start
        percent = 100 * self.count // self.total if self.total else 100
        parts = [f"{self.desc}: {self.count}/{self.total} {self.unit} ({percent}%)"]
        rate = self.count / elapsed if elapsed > 0 else 0.0
        if rate:
            parts.append(f"{rate:.1f} {self.unit}/s" if rate >= 1 else f"{rate:.2g} {self.unit}/s")
        if final:
            parts.append(f"{clock_text(elapsed)} in all")
        elif rate:
            parts.append(f"about {clock_text((self.total - self.count) / rate)} left")
        print(", ".join(parts), file=self.stream, flush=True)
        self.shown, self.last = self.count, now
