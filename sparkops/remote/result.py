"""What running a command on a node gives back: its result, or a timeout with what it had
printed so far."""
from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from sparkops.base.errors import SparkopsError


@dataclass(frozen=True)
class Result:
    node: str
    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def tail(self, lines: int = 30) -> list[str]:
        text = (self.stdout + ("\n" if self.stdout and self.stderr else "") + self.stderr).rstrip()
        return text.splitlines()[-lines:] if text else []


class CommandTimeout(SparkopsError):
    """A command ran past its timeout; `partial` is what it printed until then."""

    def __init__(self, node: str, argv: Sequence[str], timeout: float, partial: str = ""):
        super().__init__(f"`{shlex.join(argv)[:200]}` did not finish within {timeout:g}s", host=node,
                         log_tail=partial.rstrip().splitlines()[-30:])
        self.node, self.argv, self.timeout, self.partial = node, tuple(argv), timeout, partial
