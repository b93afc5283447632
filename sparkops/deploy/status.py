"""`inv status`: what runs where, per node, and whether the API answers."""
from __future__ import annotations

import re

from sparkops.apply.ready import probe
from sparkops.apply.run import CHECKS
from sparkops.apply.state import read_state
from sparkops.base.errors import SparkopsError
from sparkops.base.tables import text_table
from sparkops.config import Config
from sparkops.facts.roce import select_roce
from sparkops.facts.session import ClusterSession, cluster_session
from sparkops.plan import ALL_SERVICES, RUNTIMES
from sparkops.plan.context import contexts


def collect(cfg: Config) -> dict:
    runtime = RUNTIMES[cfg.cluster["runtime"]]
    with cluster_session(cfg) as session:
        state = read_state(session)
        ctxs = {c.name: c for c in contexts(cfg, session.facts, all_nodes=True)}
        nodes = []
        for node in cfg.nodes:
            name = node["name"]
            if name in session.unreachable:
                nodes.append({"node": name, "host": node["host"], "reachable": False,
                              "error": session.unreachable[name].message})
                continue
            f = session.facts[name]
            services = {}
            for service in ALL_SERVICES:
                res = session.group[name].run(runtime.status_argv(ctxs[name], service), timeout=30)
                text = res.stdout.strip()
                running = res.ok and text.startswith("running")
                uptime = re.search(r"uptime_s=(\d+)", text)
                started = re.search(r"started=(\S+)", text)
                services[service] = ({"running": True, "uptime_s": int(uptime.group(1)) if uptime else None,
                                      "started": started.group(1) if started else None}
                                     if running else {"running": False})
            gpu_mem = [g.memory_used_mib for g in f.gpus]
            nodes.append({"node": name, "host": node["host"], "reachable": True,
                          "hostname": f.hostname, "services": services,
                          "gpus": [g.name for g in f.gpus],
                          "gpu_memory_used_mib": gpu_mem if any(m is not None for m in gpu_mem) else None,
                          "memory_available_gib": round(f.memory.available_bytes / 1024 ** 3, 1) if f.memory else None})
        api = None
        if state:
            check = probe(state["api_url"], state["served_model_name"], cfg.secrets.get("api_key"), timeout=5)
            api = {"url": state["api_url"], "ready": check.ready, "detail": check.detail}
        # Ray on the head (a `ray` deployment, or one still starting): how many nodes joined.
        head = next((n for n in nodes if n["node"] == session.head_name and n["reachable"]), None)
        ray = _ray_nodes(session, state) if head and head["services"]["ray"]["running"] else None
        if ray is not None and api is not None:
            api["ray_nodes"] = ray
        return {"cluster": cfg.cluster_name, "runtime": cfg.cluster["runtime"],
                "deployment": state, "api": api, "ray_nodes": ray, "nodes": nodes}


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
    dep = data.get("deployment")
    if dep:
        out.append(f"serving profile {dep['profile']} (config {dep['hash']}): {dep['model']} "
                   f"as {dep['served_model_name']!r}, backend {dep['backend']}, nodes {', '.join(dep['nodes'])}")
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
        svc = ", ".join(f"{s} " + (f"running {_ago(v.get('uptime_s'), v.get('started'))}"
                                   if v["running"] else "stopped")
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
