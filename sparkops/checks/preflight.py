"""Checks before `up` touches anything: the quick and network checks of `inv check` (one set
of check functions serves both) plus the profile's own (model on every node, memory fit).
Each finding names the node, what is wrong, the evidence and the fix."""
from __future__ import annotations

from sparkops.checks import api, network, profile, quick, reach
from sparkops.checks.result import OK, Check
from sparkops.config import Config
from sparkops.config.weights import download_size_gb
from sparkops.facts.node import NodeFacts
from sparkops.plan.context import contexts
from sparkops.remote.group import NodeGroup


def preflight(cfg: Config, facts: dict[str, NodeFacts], *, profile_flag: str,
              group: NodeGroup | None = None) -> list[Check]:
    """Every check that is not ok (warn or fail), for the nodes this profile uses. With a
    group, every node's RoCE address is also pinged from every other node; without one the
    checks are pure (facts only)."""
    ctxs = contexts(cfg, facts)
    picked, found = network.checks(cfg, ctxs)
    if group is not None:
        found += reach.checks(ctxs, picked, reach.probe(group, ctxs, picked))
    found = [*quick.checks(cfg, ctxs, {}, download_gb=download_size_gb(cfg.doc)), *found,
             *profile.checks(cfg, ctxs, profile_flag), *api.checks(cfg)]
    return [c for c in found if c.status != OK]
