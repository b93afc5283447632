"""`inv check`: gather facts once, run the asked groups of checks on every node, one report."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..config import Config
from ..lifecycle import connect, gather, read_state
from ..plan import contexts
from . import deploy, logs, nccl, network, quick, reach
from .result import CLUSTER, FAIL, WARN, Check, counts, worst

GROUPS = ("quick", "gpu", "network", "logs", "nccl")
DEFAULT_GROUPS = ("quick", "network")


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


def run_checks(cfg: Config, groups, *, profile: str | None, progress) -> CheckReport:
    groups = [g for g in GROUPS if g in set(groups)]
    report = CheckReport(cfg.cluster_name, profile, groups,
                         datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         nodes=[n["name"] for n in cfg.nodes])
    start = time.monotonic()
    group = connect(cfg)
    try:
        progress.say(f"reading facts from {len(group.conns)} node(s)")
        facts, down = gather(cfg, group)
        ctxs = contexts(cfg, facts, all_nodes=True)
        state = read_state(cfg, group, facts) if cfg.nodes[0]["name"] in facts else None
        out = quick.reachable(ctxs, down)
        if "quick" in groups:
            out += [*quick.facts_read(ctxs), *quick.gpu_checks(cfg, ctxs), *quick.image_agree(cfg, ctxs),
                    *quick.disk(cfg, ctxs, download_gb=cfg.model.get("download_gb") if profile else None),
                    *quick.clock_skew(ctxs)]
            if profile:
                out += deploy.checks(cfg, ctxs, f"--profile {cfg.profile} --cluster {cfg.cluster_name}")
        elif "gpu" in groups:
            out += quick.gpu_checks(cfg, ctxs)
        if "network" in groups:
            picked, found = network.checks(cfg, ctxs, state)
            if len(picked) > 1:
                progress.say("pinging every node's RoCE address from every other node")
            out += found + reach.checks(ctxs, picked, reach.probe(cfg, group, ctxs, picked))
        if "logs" in groups:
            out += logs.checks(cfg, logs.collect(cfg, group, facts, state), state)
        if "nccl" in groups:
            out += _nccl(cfg, group, facts, down, state, progress)
    finally:
        group.close()
    report.checks = out
    report.seconds = time.monotonic() - start
    return report


def _nccl(cfg, group, facts, down, state, progress) -> list[Check]:
    if down:
        return [Check("nccl.allreduce", "nccl", CLUSTER, FAIL, f"not run: {', '.join(down)} unreachable", {},
                      "every node must take part: fix SSH first (`inv check --quick`)")]
    if state:
        return [Check("nccl.allreduce", "nccl", CLUSTER, WARN,
                      f"not run: {state.get('profile')} is serving (it holds the GPUs and the rendezvous port)",
                      {"deployment": state}, f"`inv down --cluster {cfg.cluster_name}` first, then "
                      "`inv check --nccl`")]
    progress.say("running the all-reduce test on every node")
    result = nccl.run(cfg, group, facts, progress)
    return [result] if isinstance(result, Check) else nccl.checks(cfg, result)
