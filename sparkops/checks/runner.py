"""`inv check`: gather facts once, run the asked groups of checks on every node, one report."""
from __future__ import annotations

import time
from collections.abc import Iterable
from contextlib import ExitStack
from datetime import datetime, timezone

from sparkops.apply.lock import locked_facts
from sparkops.apply.state import read_state
from sparkops.base.progress import Progress
from sparkops.checks import api, logs, memory, nccl, network, quick, reach
from sparkops.checks import profile as profile_checks
from sparkops.checks.result import CLUSTER, FAIL, WARN, Check, CheckReport
from sparkops.config import Config
from sparkops.config.weights import download_size_gb
from sparkops.facts.session import ClusterSession, cluster_session
from sparkops.plan.context import contexts

GROUPS = ("quick", "gpu", "network", "logs", "nccl")
DEFAULT_GROUPS = ("quick", "network")


def run_checks(cfg: Config, groups: Iterable[str], *, profile: str | None, progress: Progress) -> CheckReport:
    wanted = set(groups)
    chosen = [g for g in GROUPS if g in wanted]
    report = CheckReport(cfg.cluster_name, profile, chosen,
                         datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         nodes=[n["name"] for n in cfg.nodes])
    start = time.monotonic()
    with cluster_session(cfg, gather=False) as session, ExitStack() as stack:
        if "nccl" in chosen:
            # The all-reduce runs on the nodes' GPUs and ports: not while another verb changes
            # them; and what it sees (facts, what is serving) is read once it is its turn.
            stack.enter_context(locked_facts(session, "check --nccl", progress=progress, head_may_be_down=True))
        else:
            progress.say(f"reading facts from {len(session.group)} node(s)")
            session.gather()
        ctxs = contexts(cfg, session.facts, all_nodes=True)
        state = read_state(session)
        out = quick.reachable(ctxs, session.unreachable)
        if "quick" in chosen:
            out += [*quick.facts_read(ctxs), *quick.gpu_checks(cfg, ctxs), *quick.image_agree(cfg, ctxs),
                    *quick.disk(cfg, ctxs, download_gb=download_size_gb(cfg.doc) if profile else None),
                    *quick.cache_owner(ctxs), *memory.checks(cfg, ctxs, state), *quick.clock_skew(ctxs),
                    *api.checks(cfg)]
            if profile:
                out += profile_checks.checks(cfg, ctxs, f"--profile {cfg.profile} --cluster {cfg.cluster_name}")
        elif "gpu" in chosen:
            out += quick.gpu_checks(cfg, ctxs)
        if "network" in chosen:
            picked, found = network.checks(cfg, ctxs, state)
            if len(picked) > 1:
                progress.say("pinging every node's RoCE address from every other node")
            out += found + reach.checks(ctxs, picked, reach.probe(session.group, ctxs, picked))
        if "logs" in chosen:
            out += logs.checks(cfg, logs.collect(session, state), state)
        if "nccl" in chosen:
            out += _nccl(session, state, progress)
    report.checks = out
    report.seconds = time.monotonic() - start
    return report


def _nccl(session: ClusterSession, state: dict | None, progress: Progress) -> list[Check]:
    cfg = session.cfg
    if session.unreachable:
        return [Check("nccl.allreduce", "nccl", CLUSTER, FAIL,
                      f"not run: {', '.join(session.unreachable)} unreachable", {},
                      "every node must take part: fix SSH first (`inv check --quick`)")]
    if state:
        return [Check("nccl.allreduce", "nccl", CLUSTER, WARN,
                      f"not run: {state.get('profile')} is serving (it holds the GPUs and the rendezvous port)",
                      {"deployment": state}, f"`inv down --cluster {cfg.cluster_name}` first, then "
                      "`inv check --nccl`")]
    progress.say("running the all-reduce test on every node")
    result = nccl.run(cfg, session.group, session.facts, progress)  # under run_checks' lock
    return [result] if isinstance(result, Check) else nccl.checks(cfg, result)
