"""The same work on every node at once, with each node's outcome kept.

Like fabric's ThreadingGroup/GroupResult, a failure on one node never hides the
others' results; unlike it, nodes may mix this machine (no SSH) and remote hosts.
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .connection import NodeConn

T = TypeVar("T")


class NodeGroup:
    def __init__(self, conns: list[NodeConn]):
        self.conns = conns

    @classmethod
    def for_nodes(cls, nodes: list[dict], ssh: dict) -> NodeGroup:
        return cls([NodeConn(node, ssh) for node in nodes])

    def __getitem__(self, name: str) -> NodeConn:
        return next(c for c in self.conns if c.name == name)

    def names(self) -> list[str]:
        return [c.name for c in self.conns]

    def subset(self, names) -> NodeGroup:
        return NodeGroup([c for c in self.conns if c.name in set(names)])

    def map(self, fn: Callable[[NodeConn], T]) -> dict[str, T | BaseException]:
        """fn on every node in parallel -> {node: result or the exception it raised}."""
        if not self.conns:
            return {}
        with ThreadPoolExecutor(max_workers=len(self.conns)) as pool:
            futures = {c.name: pool.submit(fn, c) for c in self.conns}
            out: dict[str, T | BaseException] = {}
            for name, future in futures.items():
                try:
                    out[name] = future.result()
                except BaseException as exc:  # kept per node, reported by the caller
                    out[name] = exc
            return out

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
