"""What a runtime module and a backend module provide. A new runtime (how a service runs on a
node) or backend (which services, in which order) is a new module with these names,
registered in sparkops.plan; nothing else changes."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from sparkops.facts.roce import RoceChoice
from sparkops.plan.context import NodeContext
from sparkops.plan.steps import Action, Run, Step

EnvOf = Callable[[NodeContext, str], dict[str, str]]  # (node, service) -> its environment


class Runtime(Protocol):
    name: str

    def service_env(self, ctx: NodeContext) -> dict[str, str]: ...
    def litellm(self, ctx: NodeContext) -> str: ...  # LiteLLM's proxy command (a stack's router)
    def prepare(self, ctx: NodeContext) -> list[Action]: ...
    def start(self, ctx: NodeContext, service: str, argv: list[str]) -> list[Action]: ...
    def stop(self, ctx: NodeContext, service: str) -> Run: ...
    def status_argv(self, ctx: NodeContext, service: str) -> tuple[str, ...]: ...
    def exec_argv(self, ctx: NodeContext, service: str, argv: Sequence[str]) -> tuple[str, ...]: ...
    def log_argv(self, ctx: NodeContext, service: str, lines: int, follow: bool = False) -> tuple[str, ...]: ...
    def tool_argv(self, ctx: NodeContext, argv: Sequence[str]) -> tuple[str, ...]:
        """argv run once with the serving runtime's programs (the virtualenv's, or the image's
        in a throwaway container), outside any service: `vllm serve --help`, `python3 -c`."""
        ...


class Backend(Protocol):
    name: str
    SERVICES: tuple[str, ...]
    SPANS_NODES: bool  # its engines talk over the cable (so they get the collective's environment)

    def launch(self, ctxs: list[NodeContext], roce: dict[str, RoceChoice], runtime: Runtime,
               env_of: EnvOf) -> list[Step]: ...
