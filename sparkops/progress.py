"""Progress lines for long work: one line per step and per node as each finishes.

Plain lines (no cursor tricks) so the same output reads well on a terminal, in CI logs
and when piped to a file.
"""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, stream=None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.started = time.monotonic()
        self.marks: list[tuple[str, float]] = []  # (step name, when it began): for timings

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def step(self, number: int, total: int, name: str, title: str) -> None:
        self.marks.append((name, time.monotonic()))
        self.say(f"[{number}/{total}] {name}: {title}")

    def node(self, node: str, ok: bool, seconds: float, detail: str = "") -> None:
        self.say(f"      {node:<12} {'ok' if ok else 'FAILED':<6} {seconds:5.1f}s"
                 + (f"  {detail}" if detail else ""))

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Silent(Progress):
    def __init__(self):
        super().__init__(quiet=True)


def step_seconds(marks: list[tuple[str, float]], end: float) -> dict[str, float]:
    """How long each step took, from when each began to when the next (or `end`) began."""
    ends = [t for _, t in marks[1:]] + [end]
    return {name: round(stop - begin, 3) for (name, begin), stop in zip(marks, ends)}
