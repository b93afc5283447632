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

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def step(self, number: int, total: int, name: str, title: str) -> None:
        self.say(f"[{number}/{total}] {name}: {title}")

    def node(self, node: str, ok: bool, seconds: float, detail: str = "") -> None:
        self.say(f"      {node:<12} {'ok' if ok else 'FAILED':<6} {seconds:5.1f}s"
                 + (f"  {detail}" if detail else ""))

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Silent(Progress):
    def __init__(self):
        super().__init__(quiet=True)
