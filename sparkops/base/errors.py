"""Errors meant for people: what failed, where, why, and how to fix it.

Every user-facing failure is a `SparkopsError`; tasks turn it into a message and
a non-zero exit instead of a traceback.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class SparkopsError(Exception):
    message: str
    host: str | None = None
    step: str | None = None
    fix: str | None = None
    log_tail: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.render()

    def render(self) -> str:
        where = " ".join(p for p in (f"[{self.host}]" if self.host else "",
                                     f"step '{self.step}':" if self.step else "") if p)
        return "\n".join([f"error: {where + ' ' if where else ''}{self.message}", *self.body()])

    def body(self) -> list[str]:
        """Everything below the first line: details, the log tail, the fix (indented)."""
        lines = [f"  {d}" for d in self.details]
        if self.log_tail:
            lines.append(f"  last {len(self.log_tail)} lines of its log:")
            lines += [f"    | {line}" for line in self.log_tail]
        if self.fix:
            lines.append(f"  fix: {self.fix}")
        return lines


class ConfigError(SparkopsError):
    """Bad profile, cluster or override file; nothing was touched."""


class ConnectError(SparkopsError):
    """A node could not be reached over SSH."""


class StepError(SparkopsError):
    """A remote step failed on one or more nodes."""


def every_node(errors: Mapping[str, SparkopsError], what: str) -> SparkopsError:
    """One error that names every node that failed `what`, each with its own evidence. A
    single failure is returned as it is."""
    if len(errors) == 1:
        return next(iter(errors.values()))
    first = next(iter(errors.values()))
    details = []
    for node, err in errors.items():
        details.append(f"[{err.host or node}] {err.message}")
        details += [f"  {line}" for line in err.body()]
    fixes = {e.fix for e in errors.values() if e.fix}
    steps = {e.step for e in errors.values()}
    step = first.step if len(steps) == 1 else None
    # With one step in common, the first line already names it ("step 'x': failed on ...").
    return StepError(f"{'' if step else what + ' '}failed on {len(errors)} nodes: {', '.join(errors)}",
                     step=step, details=details, fix=fixes.pop() if len(fixes) == 1 else None)
