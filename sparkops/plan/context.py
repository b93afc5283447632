"""Per-node context a planner works with: the node's config, facts and resolved paths, and
the nodes in rank order."""
from __future__ import annotations

import posixpath
from dataclasses import dataclass

from sparkops.config import Config
from sparkops.config.memfit import nodes_needed
from sparkops.facts.node import NodeFacts

# Where a sparkops container sees its caches and its home: outside /root, which an image's
# non-root user cannot enter (containers run as the node's user: runtime_docker.user_flags).
CONTAINER_DIR = "/sparkops"
CONTAINER_HOME = f"{CONTAINER_DIR}/home"
CONTAINER_HF_HOME = f"{CONTAINER_DIR}/huggingface"


@dataclass(frozen=True)
class NodeContext:
    cfg: Config
    node: dict
    facts: NodeFacts
    rank: int

    @property
    def name(self) -> str:
        return self.node["name"]

    @property
    def is_head(self) -> bool:
        return self.rank == 0

    def path(self, value: str) -> str:
        """Resolve a configured path on this node: '~/' is the node user's home."""
        if value.startswith("~/"):
            home = self.facts.home or (f"/home/{self.node['user']}" if self.node.get("user") else "~")
            return posixpath.join(home, value[2:])
        return value

    @property
    def work_dir(self) -> str:
        return self.path(self.cfg.cluster["paths"]["work_dir"])

    @property
    def run_dir(self) -> str:
        return posixpath.join(self.work_dir, "run")

    @property
    def log_dir(self) -> str:
        return posixpath.join(self.work_dir, "logs")

    @property
    def hf_home(self) -> str:
        return self.path(self.cfg.cluster["paths"]["hf_home"])

    @property
    def cache_dir(self) -> str:
        return self.path(self.cfg.cluster["paths"]["cache_dir"])

    @property
    def venv(self) -> str:
        return self.path(self.cfg.cluster["venv"])

    @property
    def container_home(self) -> str:
        """The node folder a container gets as its home (CONTAINER_HOME): the user's, writable."""
        return posixpath.join(self.cache_dir, "container-home")

    def env_file(self, service: str) -> str:
        return posixpath.join(self.run_dir, f"{service}.env")

    def log_file(self, service: str) -> str:
        return posixpath.join(self.log_dir, f"{service}.log")

    @property
    def state_file(self) -> str:
        """On the head: what is deployed (written by `up`'s last step, read by every verb)."""
        return posixpath.join(self.run_dir, "state.json")


def contexts(cfg: Config, facts: dict[str, NodeFacts], *, all_nodes: bool = False) -> list[NodeContext]:
    """Nodes in rank order (head first): those the profile uses (all of the cluster's with
    all_nodes); nodes without facts (unreachable) are left out."""
    nodes = cfg.nodes if all_nodes else cfg.nodes[:nodes_needed(cfg.doc)]
    return [NodeContext(cfg, node, facts[node["name"]], rank) for rank, node in enumerate(nodes)
            if node["name"] in facts]
