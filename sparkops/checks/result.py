"""What one check found: ok / warn / fail, the observed values, and how to fix it; and a
report of many."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

OK, WARN, FAIL = "ok", "warn", "fail"
STATUSES = (OK, WARN, FAIL)
CLUSTER = "cluster"  # the node of a check about the nodes together (subnet, MTU, clock skew)


@dataclass(frozen=True)
class Check:
    name: str  # e.g. "roce.mtu"
    group: str  # quick, gpu, network, deploy, logs, nccl
    node: str  # a node's name, or CLUSTER
    status: str
    message: str  # what was observed, one line
    evidence: dict = field(default_factory=dict)  # the observed values, for --json and reports
    fix: str = ""

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"check {self.name}: status {self.status!r} is not one of {STATUSES}")

    def render(self) -> str:
        text = f"[{self.node}] {self.name}: {self.message}"
        return text + (f"\n    fix: {self.fix}" if self.fix and self.status != OK else "")

    def to_dict(self) -> dict:
        return asdict(self)


def worst(checks: list[Check]) -> str:
    statuses = {c.status for c in checks}
    return FAIL if FAIL in statuses else WARN if WARN in statuses else OK


def counts(checks: list[Check]) -> dict[str, int]:
    return {s: sum(1 for c in checks if c.status == s) for s in STATUSES}


@dataclass
class CheckReport:
    cluster: str
    profile: str | None  # the profile named on the command line, if any
    groups: list[str]
    started: str
    seconds: float = 0.0
    checks: list[Check] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return worst(self.checks)

    def to_dict(self) -> dict:
        return {"cluster": self.cluster, "profile": self.profile, "groups": self.groups,
                "started": self.started, "seconds": round(self.seconds, 1), "status": self.status,
                "summary": counts(self.checks), "nodes": self.nodes,
                "checks": [c.to_dict() for c in self.checks]}
