"""`inv status`: what runs where, per node, and whether the API answers."""
from __future__ import annotations

from sparkops.apply.health import assess, every_service, probe_deployment, service_states
from sparkops.apply.ready import Probe
from sparkops.apply.run import CHECKS
from sparkops.apply.state import read_state
from sparkops.base.errors import SparkopsError
from sparkops.base.tables import text_table
from sparkops.config import Config
from sparkops.config.weights import SPEED_ONLY
from sparkops.facts.roce import select_roce
from sparkops.facts.session import ClusterSession, cluster_session
from sparkops.plan import RUNTIMES
from sparkops.plan.context import contexts


def collect(cfg: Config) -> dict:
    with cluster_session(cfg) as session:
        state = read_state(session)
        services = service_states(session, list(session.facts), list(every_service(cfg, state)))
        nodes = []
        for node in cfg.nodes:
            name = node["name"]
            if name in session.unreachable:
                nodes.append({"node": name, "host": node["host"], "reachable": False,
                              "error": session.unreachable[name].message})
                continue
            f = session.facts[name]
            gpu_mem = [g.memory_used_mib for g in f.gpus]
            nodes.append({"node": name, "host": node["host"], "reachable": True,
                          "hostname": f.hostname, "services": services.get(name, {}),
                          "gpus": [g.name for g in f.gpus],
                          "gpu_memory_used_mib": gpu_mem if any(m is not None for m in gpu_mem) else None,
                          "memory_available_gib": round(f.memory.available_bytes / 1024 ** 3, 1) if f.memory else None})
        api, check = None, None
        if state:
            check = probe_deployment(state, cfg.secrets.get("api_key"), timeout=5)
            api = {"url": state["api_url"], "ready": check.ready, "detail": check.detail}
        # Ray on the head (a `ray` deployment, or one still starting): how many nodes joined.
        head = next((n for n in nodes if n["node"] == session.head_name and n["reachable"]), None)
        ray = _ray_nodes(session, state) if head and head["services"].get("ray", {}).get("running") else None
        if ray is not None and api is not None:
            api["ray_nodes"] = ray
        health = _verdict(state, services, {n: e.message for n, e in session.unreachable.items()}, check)
        return {"cluster": cfg.cluster_name, "runtime": cfg.cluster["runtime"], "health": health,
                "deployment": state, "api": api, "ray_nodes": ray, "nodes": nodes}


def _verdict(state: dict | None, services: dict[str, dict[str, dict]], unreachable: dict[str, str],
             check: Probe | None) -> dict:
    """READY (whole), DEGRADED (recorded, something missing: named), or NONE (nothing recorded;
    services running anyway are named as left over)."""
    if state:
        problems = assess(state, services, unreachable, check)
        return {"verdict": "DEGRADED" if problems else "READY", "problems": problems}
    left = [f"{svc} on {node} (no deployment recorded: left over; `inv down` stops it)"
            for node, by in services.items() for svc, st in by.items() if st["running"] or st["orphaned"]]
    return {"verdict": "NONE", "problems": left}


def _ray_nodes(session: ClusterSession, state: dict | None) -> int | None:
    """Nodes in the head's Ray cluster, asked at the address the planner started Ray on: the
    head's RoCE address when the deployment spans several nodes, else 127.0.0.1."""
    cfg = session.cfg
    runtime = RUNTIMES[cfg.cluster["runtime"]]
    head = contexts(cfg, session.facts, all_nodes=True)[0]
    port = cfg.cluster["ports"]["ray"]
    multi = len(state["nodes"]) > 1 if state else len(cfg.nodes) > 1
    try:
        roce = select_roce(head.facts, head.node, cfg.cluster["network"]) if multi else None
    except SparkopsError:
        roce = None
    address = f"{roce.ip if roce else '127.0.0.1'}:{port}"
    res = session.head.run(runtime.exec_argv(head, "ray", ["ray", "status", "--address", address]), timeout=60)
    return CHECKS["ray-nodes"](res.stdout) if res.ok else None


def render(data: dict) -> str:
    out = [f"cluster {data['cluster']} ({data['runtime']} runtime)"]
    health = data.get("health") or {}
    if health.get("verdict") in ("READY", "DEGRADED"):
        out.append(f"deployment {health['verdict']}" + (": " + "; ".join(health["problems"])
                                                         if health["problems"] else ""))
    elif health.get("problems"):
        out.append("LEFT OVER: " + "; ".join(health["problems"]))
    dep = data.get("deployment")
    if dep and dep.get("stack"):
        out.append(f"serving stack {dep['stack']} (config {dep['hash']}): "
                   + ", ".join(f"{m['served_model_name']!r} ({m['profile']}) on {m['node']}"
                               for m in dep["router"]["models"])
                   + ", behind LiteLLM's proxy routing by model"
                   + ("; STARTING (or an `up` that was interrupted: `inv down` stops it)"
                      if dep.get("starting") else ""))
    elif dep:
        out.append(f"serving profile {dep['profile']} (config {dep['hash']}): {dep['model']} "
                   f"as {dep['served_model_name']!r}, backend {dep['backend']}, nodes {', '.join(dep['nodes'])}"
                   + (f", {dep['data_parallel']} replicas" if (dep.get("data_parallel") or 1) > 1 else "")
                   + (f" behind vLLM's router ({dep['router']['policy']})" if dep.get("router") else "")
                   + (f"; {SPEED_ONLY}" if dep.get("weights") == "dummy" else ""))
    else:
        out.append("no sparkops deployment recorded on the head")
    api = data.get("api")
    if api:
        out.append(f"API {api['url']}: {'READY' if api['ready'] else 'NOT READY'} ({api['detail']})"
                   + (f", Ray nodes: {api['ray_nodes']}" if 'ray_nodes' in api else ""))
    elif data.get("ray_nodes") is not None:
        out.append(f"Ray on the head: {data['ray_nodes']} node(s) joined")
    rows = []
    for n in data["nodes"]:
        if not n["reachable"]:
            rows.append({"node": n["node"], "host": n["host"], "state": f"UNREACHABLE: {n['error']}"})
            continue
        svc = ", ".join(f"{s} " + (f"running {_ago(v.get('uptime_s'), v.get('started'))}" if v["running"]
                                   else f"DIED, left pids {','.join(map(str, v['orphaned']))}" if v.get("orphaned")
                                   else "stopped")
                        for s, v in n["services"].items())
        mem = n["gpu_memory_used_mib"]
        gpu = (", ".join(n["gpus"]) or "no GPU") + (f", GPU mem used {mem} MiB" if mem else "")
        avail = f", {n['memory_available_gib']} GiB RAM free" if n.get("memory_available_gib") is not None else ""
        rows.append({"node": n["node"], "host": n["host"], "state": f"{svc}; {gpu}{avail}"})
    out.append(text_table(rows, ["node", "host", "state"], header=False, indent="  ", gap=" ",
                          min_width={"node": 10, "host": 16}))
    return "\n".join(out)


def _ago(seconds, started) -> str:
    if seconds is not None:
        return f"for {seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"
    return f"since {started}" if started else ""
