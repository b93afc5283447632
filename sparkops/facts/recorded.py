"""Where `inv plan` gets node facts: the live nodes, or facts recorded earlier."""
from __future__ import annotations

from sparkops.base.errors import SparkopsError
from sparkops.base.paths import project_root
from sparkops.config import Config
from sparkops.config.catalog import cluster_path
from sparkops.facts.node import NodeFacts, from_cluster_file, load_recorded
from sparkops.facts.session import cluster_session


def recorded_facts(cfg: Config) -> tuple[dict[str, NodeFacts], str]:
    path = cluster_path(project_root(), cfg.cluster_name).with_suffix(".facts.json")
    recorded = load_recorded(path) if path.is_file() else {}
    facts = {n["name"]: recorded.get(n["name"]) or from_cluster_file(n) for n in cfg.nodes}
    used = sorted({f.source for f in facts.values()})
    return facts, ", ".join(used)


def facts_for_plan(cfg: Config, mode: str = "auto") -> tuple[dict[str, NodeFacts], str]:
    """Returns (facts per node, a note saying where they came from when not live)."""
    if mode not in ("auto", "live", "recorded"):
        raise SparkopsError(f"--facts {mode!r}: use auto, live or recorded")
    if mode == "recorded":
        facts, used = recorded_facts(cfg)
        return facts, f"planning from {used} facts (nodes not contacted)"
    with cluster_session(cfg) as session:
        facts, down = session.facts, session.unreachable
    if not down:
        return facts, ""
    if mode == "live":
        session.require()
    recorded, used = recorded_facts(cfg)
    why = "; ".join(f"{name}: {err.message}" for name, err in down.items())
    merged = {**recorded, **facts}
    return merged, f"not reachable ({why}): planning those nodes from {used} facts"
