"""A cluster session: the connections to a cluster's nodes (or to the nodes a profile uses),
their facts gathered on all of them at once, the head, the reachable and the unreachable
nodes, and everything closed at the end. Every verb that talks to nodes works inside one:

    with cluster_session(cfg) as session:
        session.require()                    # every node reachable, or one error naming each
        plan = plan_up(cfg, session.facts)
        apply(plan, session.group, ...)
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from sparkops.base.errors import SparkopsError, every_node
from sparkops.config import Config
from sparkops.facts.gather import gather
from sparkops.facts.node import NodeFacts
from sparkops.remote.connection import NodeConn
from sparkops.remote.group import NodeGroup


class ClusterSession:
    def __init__(self, cfg: Config, group: NodeGroup):
        self.cfg = cfg
        self.group = group  # every node of the session, reachable or not
        self.facts: dict[str, NodeFacts] = {}  # the reachable nodes' facts, once gathered
        self.unreachable: dict[str, SparkopsError] = {}  # node -> why it could not be reached

    def gather(self, names: Iterable[str] | None = None) -> dict[str, NodeFacts]:
        """(Re)read the facts of these nodes (default: all), all at once; returns them."""
        group = self.group if names is None else self.group.subset(names)
        facts, down = gather(self.cfg, group)
        for name in group.names():
            self.facts.pop(name, None)
            self.unreachable.pop(name, None)
        self.facts |= facts
        self.unreachable |= down
        return facts

    @property
    def head_name(self) -> str:
        """The cluster's head is its first node: it serves the API and keeps the state."""
        return str(self.cfg.nodes[0]["name"])

    @property
    def head(self) -> NodeConn:
        return self.group[self.head_name]

    def head_reachable(self) -> bool:
        return self.head_name in self.facts

    @property
    def reachable(self) -> NodeGroup:
        """The nodes whose facts were read."""
        return self.group.subset(self.facts)

    def require(self, names: Iterable[str] | None = None) -> None:
        """Raise one error naming every one of these nodes (default: all of the session) that
        could not be reached."""
        wanted = self.group.names() if names is None else list(names)
        missing = {n: self.unreachable[n] for n in wanted if n in self.unreachable}
        if missing:
            raise every_node(missing, "reaching the nodes")

    def close(self) -> None:
        self.group.close()


@contextmanager
def cluster_session(cfg: Config, names: Iterable[str] | None = None, *,
                    gather: bool = True) -> Iterator[ClusterSession]:
    """A session over the cluster's nodes (or only `names`), facts gathered first unless
    `gather=False` (a verb that needs them for a few nodes only calls `session.gather`)."""
    wanted = None if names is None else set(names)
    nodes = [n for n in cfg.nodes if wanted is None or n["name"] in wanted]
    session = ClusterSession(cfg, NodeGroup.for_nodes(nodes, cfg.cluster["ssh"]))
    try:
        if gather:
            session.gather()
        yield session
    finally:
        session.close()
