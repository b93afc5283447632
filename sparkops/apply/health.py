"""Is a recorded deployment whole? Every node it uses reachable, every service it started
running there (its whole session: no orphans), and the API completing a 1-token request.
`up` restarts what is not whole; `status` shows it as DEGRADED; `watch` checks it on a clock."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from sparkops.apply.ready import Probe, probe
from sparkops.facts.session import ClusterSession
from sparkops.plan import RUNTIMES, all_services
from sparkops.plan.context import contexts

PROBE_TIMEOUT_S = 30.0


def parse_status(text: str, ok: bool) -> dict:
    """A service's status line (service.sh or `docker inspect`) -> {"running", "uptime_s",
    "started", "orphaned": [pids]}."""
    text = text.strip()
    uptime = re.search(r"uptime_s=(\d+)", text)
    started = re.search(r"started=(\S+)", text)
    orphans = re.search(r"orphaned pids=([\d,]+)", text)
    return {"running": ok and text.startswith("running"),
            "uptime_s": int(uptime.group(1)) if uptime else None,
            "started": started.group(1) if started else None,
            "orphaned": [int(p) for p in orphans.group(1).split(",")] if orphans else []}


@dataclass
class Health:
    problems: list[str] = field(default_factory=list)  # "vllm is not running on spark-b", ...
    services: dict[str, dict[str, dict]] = field(default_factory=dict)  # node -> service -> status
    api: Probe | None = None

    @property
    def whole(self) -> bool:
        return not self.problems and self.api is not None and self.api.ready


def service_states(session: ClusterSession, nodes: list[str], services: list[str]) -> dict[str, dict[str, dict]]:
    """Each reachable node's services, asked on all of them at once."""
    cfg = session.cfg
    runtime = RUNTIMES[cfg.cluster["runtime"]]
    ctxs = {c.name: c for c in contexts(cfg, session.facts, all_nodes=True)}
    reachable = [n for n in nodes if n in session.facts]

    def ask(conn) -> dict[str, dict]:
        out = {}
        for service in services:
            res = conn.run(runtime.status_argv(ctxs[conn.name], service), timeout=30)
            out[service] = parse_status(res.stdout, res.ok)
        return out
    result = session.group.subset(reachable).map(ask)
    return {name: value for name, value in result.succeeded.items()}


def services_on(state: dict, node: str) -> list[str]:
    """The services a recorded deployment runs on `node`: its own list where they differ by node
    (layout replicas: the router on the head only), else the deployment's."""
    by_node = state.get("node_services")
    if by_node is not None:
        return list(by_node.get(node, []))
    return list(state.get("services") or ["vllm"])


def deployed_services(state: dict) -> list[str]:
    """Every service the deployment runs on some node."""
    return list(dict.fromkeys(s for n in state.get("nodes") or [] for s in services_on(state, n)))


def every_service(cfg, state: dict | None) -> tuple[str, ...]:
    """What sparkops may run on a node: the cluster's own services (plan.all_services) and those a
    recorded deployment names (a stack's models)."""
    return tuple(dict.fromkeys([*all_services(cfg), *(deployed_services(state) if state else [])]))


def assess(state: dict, services: dict[str, dict[str, dict]], unreachable: dict[str, str],
           api: Probe | None) -> list[str]:
    """What is missing from the deployment `state` describes, given each node's services, the
    unreachable nodes (name -> why) and the API probe. Pure: status and watch share it."""
    problems = []
    for name in state.get("nodes") or []:
        if name in unreachable:
            problems.append(f"{name} is unreachable ({unreachable[name]})")
            continue
        states = services.get(name)
        if states is None:
            problems.append(f"{name}: its services could not be read")
            continue
        for service in services_on(state, name):
            st = states.get(service) or {"running": False, "orphaned": []}
            if st["orphaned"]:
                problems.append(f"{service} on {name} died and left processes behind "
                                f"(pids {', '.join(map(str, st['orphaned']))})")
            elif not st["running"]:
                problems.append(f"{service} is not running on {name}")
    if api is not None and not api.ready:
        problems.append(f"the API does not complete a 1-token request ({api.detail})")
    return problems


def probe_deployment(state: dict, api_key: str | None, *, timeout: float = 10.0,
                     completion_timeout: float | None = None) -> Probe:
    """The recorded deployment's API: its model completes a 1-token request; a stack's every
    model does, through its router (the first that does not is the answer, by name)."""
    models = [m["served_model_name"] for m in (state.get("router") or {}).get("models", [])] \
        or [state["served_model_name"]]
    last = None
    for model in models:
        last = probe(state["api_url"], model, api_key, timeout=timeout, completion_timeout=completion_timeout,
                     health_path=state.get("health_path", "/health"))
        if not last.ready:
            return last if len(models) == 1 else Probe(False, last.stage, f"{model!r}: {last.detail}")
    assert last is not None
    return last if len(models) == 1 else Probe(True, "ready", f"{len(models)} models: {last.detail}")


def deployment_health(session: ClusterSession, state: dict, *, timeout: float = PROBE_TIMEOUT_S) -> Health:
    """What is missing from the deployment `state` (the head's state.json) describes."""
    nodes, services = list(state.get("nodes") or []), deployed_services(state)
    health = Health(services=service_states(session, nodes, services))
    health.api = probe_deployment(state, session.cfg.secrets.get("api_key"), completion_timeout=timeout)
    unreachable = {n: e.message for n, e in session.unreachable.items()}
    health.problems = assess(state, health.services, unreachable, health.api)
    return health
