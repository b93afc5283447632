"""What a plan is made of: ordered steps, each holding what every node does.

Plans are data. `inv plan` prints them, tests compare them with golden files, and the
apply layer executes them; nothing here touches a machine.
"""
from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Run:
    """Run argv on the node; exit status 0 is success."""
    argv: tuple[str, ...]
    timeout_s: float = 60.0
    ok_exit: tuple[int, ...] = (0,)
    kind: str = "run"

    def render(self) -> str:
        # A script handed over as one argument (`python3 -c TEXT`) is shown by its size: the
        # text is a file of this repository (sparkops/node_scripts), and the JSON plan holds it.
        return shlex.join(f"<script, {a.count(chr(10)) + 1} lines>" if "\n" in a else a for a in self.argv)


@dataclass(frozen=True)
class WriteFile:
    """Write a file on the node. Secret files are created 0600 before any byte is written."""
    path: str
    content: str
    mode: int = 0o644
    secret: bool = False
    kind: str = "write"

    def render(self) -> str:
        return f"write {self.path} (mode {self.mode:o}, {len(self.content)} bytes)"


@dataclass(frozen=True)
class Watch:
    """A started service the controller keeps an eye on while it waits."""
    node: str
    service: str
    status_argv: tuple[str, ...]
    log_argv: tuple[str, ...]


@dataclass(frozen=True)
class Poll:
    """Run argv on the node until `check` accepts its output, or time out. With `watch` (a
    service on the same node), its stop ends the wait at once, with its log."""
    argv: tuple[str, ...]
    check: str  # a name in sparkops.apply.run.CHECKS: e.g. "ray-nodes"
    expect: int
    timeout_s: float = 120.0
    interval_s: float = 2.0
    watch: Watch | None = None
    kind: str = "poll"

    def render(self) -> str:
        return (f"until {self.check} >= {self.expect}: {shlex.join(self.argv)}"
                + (f" (while {self.watch.service} runs)" if self.watch else ""))


@dataclass(frozen=True)
class WaitReady:
    """The controller waits for the API: /health, /v1/models lists the model, one completion.
    Meanwhile every watched service must stay alive; the first in `watch` is the head's."""
    url: str
    model: str
    timeout_s: float
    watch: tuple[Watch, ...]
    # Data parallel: (engine index, node) of every replica; each must serve a request (its
    # own counter in /metrics) before the deployment is ready.
    replicas: tuple[tuple[int, str], ...] = ()
    # Layout replicas: the router's Prometheus URL, where each replica's own count is (by its
    # URL, replica_urls[i] for replicas[i]) instead of vLLM's per-engine one.
    router_metrics: str = ""
    replica_urls: tuple[str, ...] = ()
    # A stack: its other models, each of which must complete a request through the same API;
    # and where that API says it is alive (LiteLLM's proxy: /health/liveliness).
    models: tuple[str, ...] = ()
    health_path: str = "/health"
    kind: str = "wait-ready"

    def render(self) -> str:
        each = (f", then until each of its {len(self.replicas)} replicas has served a request"
                + (f" (the router's count, {self.router_metrics})" if self.router_metrics else "")
                if self.replicas else "")
        names = ", ".join(repr(m) for m in (self.model, *self.models))
        return f"wait until {self.url} serves {names}{each} (timeout {self.timeout_s:.0f}s)"


Action = Run | WriteFile | Poll | WaitReady


@dataclass(frozen=True)
class Step:
    """One step: on every listed node at once. `env` is what the launched service sees."""
    name: str
    title: str
    actions: Mapping[str, tuple[Action, ...]]  # node name -> actions, in order
    env: Mapping[str, dict[str, str]] = field(default_factory=dict)  # node name -> environment
    controller: tuple[Action, ...] = ()  # actions the controller runs after the nodes' ones
    service: str = ""  # the service this step starts, if any ("vllm", "ray")


@dataclass(frozen=True)
class Plan:
    verb: str
    profile: str
    cluster: str
    config_hash: str
    facts_source: dict[str, str]  # node -> "live", "recorded: FILE" or "cluster file"
    steps: tuple[Step, ...]
    hosts: dict[str, str] = field(default_factory=dict)  # node -> SSH address ('local': no SSH)
    undo: tuple[Step, ...] = ()  # what stops everything this plan starts
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return asdict(self)
