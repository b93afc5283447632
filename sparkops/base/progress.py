"""Progress lines for long work: one line per step and per node as each finishes, and for
work measured in amounts (requests, bytes) a meter line every few seconds with the rate and
the time left.

Plain lines (no cursor tricks) so the same output reads well on a terminal, in CI logs
and when piped to a file. The one progress mechanism of sparkops: every verb reports
through a `Progress`.
"""
from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Hashable
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.started = time.monotonic()
        self.marks: list[tuple[str, float]] = []  # (step name, when it began): for timings
        self._lock = threading.Lock()  # lines from parallel nodes never interleave

    def say(self, text: str) -> None:
        if not self.quiet:
            with self._lock:
                print(text, file=self.stream, flush=True)

    def step(self, number: int, total: int, name: str, title: str) -> None:
        self.marks.append((name, time.monotonic()))
        self.say(f"[{number}/{total}] {name}: {title}")

    def node(self, node: str, ok: bool, seconds: float, detail: str = "") -> None:
        self.say(f"      {node:<12} {'ok' if ok else 'FAILED':<6} {seconds:5.1f}s"
                 + (f"  {detail}" if detail else ""))

    def meter(self, label: str, total: float, *, unit: str = "", every: float = 1.0,
              amount: Callable[[float], str] | None = None, rate: bool = False) -> Meter:
        """A meter for `total` of something; see Meter."""
        return Meter(self, label, total, unit=unit, every=every, amount=amount, rate=rate)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Silent(Progress):
    def __init__(self) -> None:
        super().__init__(quiet=True)


class Meter:
    """How much of `total` is done: a line at most every `every` seconds and one at the end,
    with the elapsed time, the rate (`rate=True`) and the time left. Parallel parts of the
    work (a copy's streams, say) each report their own count under a key; the meter adds them."""

    def __init__(self, progress: Progress, label: str, total: float, *, unit: str = "",
                 every: float = 1.0, amount: Callable[[float], str] | None = None, rate: bool = False):
        self.progress, self.label, self.total, self.unit = progress, label, total, unit
        self.every, self.rate = every, rate
        self.amount = amount or number
        self.parts: dict[Hashable, float] = {}
        self.start = self.last = time.monotonic()
        self._lock = threading.Lock()

    def update(self, done: float, *, part: Hashable = None, note: str = "") -> None:
        with self._lock:
            self.parts[part] = done
            total_done = sum(self.parts.values())
            now = time.monotonic()
            if total_done < self.total and now - self.last < self.every:
                return
            self.last = now
        self.progress.say(self.line(total_done, now, note))

    def line(self, done: float, now: float, note: str = "") -> str:
        elapsed = max(now - self.start, 1e-9)
        unit = f" {self.unit}" if self.unit else ""
        text = f"{self.label}: {self.amount(done)} of {self.amount(self.total)}{unit}"
        if self.rate:
            text += f" ({self.amount(done / elapsed)}/s)"
        text += f", {elapsed:.1f}s"
        if 0 < done < self.total:
            text += f", about {duration((self.total - done) * elapsed / done)} left"
        return text + (f", {note}" if note else "")


def number(n: float) -> str:
    """A count or a rate as people read it: '20', '1234', '4.5'."""
    return f"{n:.0f}" if abs(n) >= 10 or float(n).is_integer() else f"{n:.1f}"


def duration(seconds: float) -> str:
    """'42s', '3m05s', '2h07m'."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def step_seconds(marks: list[tuple[str, float]], end: float) -> dict[str, float]:
    """How long each step took, from when each began to when the next (or `end`) began."""
    ends = [t for _, t in marks[1:]] + [end]
    return {name: round(stop - begin, 3) for (name, begin), stop in zip(marks, ends)}
