"""The same work on every node at once, with each node's outcome kept.

Like fabric's ThreadingGroup/GroupResult: `map` returns a `GroupResult`, a dict of every
node's value or the exception it raised, with `succeeded` and `failed`; a failure on one node
never hides the others'. `raise_failures` raises one error naming every node that failed.
Unlike fabric's group, nodes may mix this machine (no SSH) and remote hosts.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from sparkops.base.errors import SparkopsError, every_node
from sparkops.remote.connection import NodeConn

T = TypeVar("T")


class GroupResult(dict[str, "T | BaseException"], Generic[T]):
    """{node: its value, or the exception its work raised}, in the group's order."""

    @property
    def succeeded(self) -> dict[str, T]:
        return {n: v for n, v in self.items() if not isinstance(v, BaseException)}

    @property
    def failed(self) -> dict[str, BaseException]:
        return {n: v for n, v in self.items() if isinstance(v, BaseException)}

    def errors(self) -> dict[str, SparkopsError]:
        """{node: why it failed} for the nodes that failed. An exception that is not a
        SparkopsError is a bug, not a node's failure: it is raised as it is."""
        for exc in self.failed.values():
            if not isinstance(exc, SparkopsError):
                raise exc
        return {n: e for n, e in self.failed.items() if isinstance(e, SparkopsError)}

    def raise_failures(self, what: str) -> dict[str, T]:
        """The values, when every node succeeded. Otherwise one SparkopsError naming every
        failed node (`what` failed on a, b), each with its own message, log tail and fix."""
        errors = self.errors()
        if errors:
            raise every_node(errors, what)
        return self.succeeded


class NodeGroup:
    def __init__(self, conns: list[NodeConn]):
        self.conns = conns

    @classmethod
    def for_nodes(cls, nodes: list[dict], ssh: dict) -> NodeGroup:
        return cls([NodeConn(node, ssh) for node in nodes])

    def __getitem__(self, name: str) -> NodeConn:
        return next(c for c in self.conns if c.name == name)

    def __len__(self) -> int:
        return len(self.conns)

    def names(self) -> list[str]:
        return [c.name for c in self.conns]

    def subset(self, names: Iterable[str]) -> NodeGroup:
        wanted = set(names)
        return NodeGroup([c for c in self.conns if c.name in wanted])

    def map(self, fn: Callable[[NodeConn], T]) -> GroupResult[T]:
        """fn on every node in parallel -> GroupResult {node: value or the exception raised}."""
        out: GroupResult[T] = GroupResult()
        if not self.conns:
            return out
        with ThreadPoolExecutor(max_workers=len(self.conns)) as pool:
            futures = {c.name: pool.submit(fn, c) for c in self.conns}
            for name, future in futures.items():
                try:
                    out[name] = future.result()
                except BaseException as exc:  # kept per node: GroupResult reports them all
                    out[name] = exc
        return out

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
