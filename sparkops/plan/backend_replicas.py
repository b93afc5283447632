"""Layout `replicas`: serving.data_parallel independent vLLM servers, each inside one node, and
vLLM's router (vllm-router) in front of them on the head's API port.

Nothing crosses the cable while a request is served but the request itself (router to the
replica on a worker): no collective, no shared expert layers. The price is that a replica
holds the whole model in one node, and that the router picks where a request goes.

Each replica is a plain `vllm serve` on its own port (cluster.ports.replicas + its index on
the node): on the head bound to 127.0.0.1 (the router is there), on a worker to its
cable address. Each demands the API key (VLLM_API_KEY), which the router sends on. Replicas
start first, on every node at once; the router starts after them and waits for every
replica's /health before it listens. A node's replicas are services `vllm`, `vllm-1`, ...
"""
from __future__ import annotations

from sparkops.config.memfit import replicas_per_node
from sparkops.node_scripts import source
from sparkops.plan.context import NodeContext
from sparkops.plan.steps import Step
from sparkops.plan.vllm_args import listen_address, serve_argv

name = "replicas"
SERVICES = ("vllm", "router")
SPANS_NODES = False  # each engine inside one node: no collective over the cable


def service_name(index: int) -> str:
    """A node's replica `index` (0, 1, ...) as a service: vllm, vllm-1, vllm-2, ..."""
    return "vllm" if index == 0 else f"vllm-{index}"


def replicas(ctxs: list[NodeContext], roce: dict) -> list[tuple[int, str, str, str]]:
    """Every replica: (global index, node, service, URL the router reaches it at), head first."""
    doc = ctxs[0].cfg.doc
    total, per = doc["serving"]["data_parallel"], max(1, replicas_per_node(doc))
    base = doc["cluster"]["ports"]["replicas"]
    out = []
    for i, ctx in enumerate(ctxs):
        host = "127.0.0.1" if ctx.is_head or ctx.name not in roce else roce[ctx.name].ip
        for k in range(per):
            index = i * per + k
            if index < total:
                out.append((index, ctx.name, service_name(k), f"http://{host}:{base + k}"))
    return out


def node_services(ctxs: list[NodeContext], roce: dict) -> dict[str, list[str]]:
    """What runs on each node: its replicas, and on the head the router."""
    out: dict[str, list[str]] = {c.name: [] for c in ctxs}
    for _, node, service, _ in replicas(ctxs, roce):
        out[node].append(service)
    out[ctxs[0].name].append("router")
    return {n: s for n, s in out.items() if s}


def router_argv(ctxs: list[NodeContext], roce: dict) -> list[str]:
    cfg = ctxs[0].cfg
    router, ports = cfg.doc["router"], cfg.cluster["ports"]
    listen = listen_address(cfg)
    return ["python3", "-c", source("router.py"),
            "--host", listen, "--port", str(ports["api"]), "--policy", router["policy"],
            # Beside the API: vLLM's own /metrics is as open as this (no secret in either).
            "--metrics-host", listen, "--metrics-port", str(ports["router_metrics"]),
            "--startup-timeout", str(int(cfg.serving["ready_timeout_s"])),
            "--health-interval", str(router["health_check_interval_s"]),
            *(url for *_, url in replicas(ctxs, roce))]


def launch(ctxs: list[NodeContext], roce: dict, runtime, env_of) -> list[Step]:
    cfg = ctxs[0].cfg
    by_node = {c.name: c for c in ctxs}
    ranks = cfg.serving["tensor_parallel"] * cfg.serving["pipeline_parallel"]
    gpus = cfg.cluster["accelerator"] == "nvidia" and cfg.cluster.get("gpus_per_node", 1) > ranks
    all_replicas = replicas(ctxs, roce)
    per = max(1, replicas_per_node(cfg.doc))
    steps = []
    # One step per replica slot (vllm, vllm-1, ...): a step starts one service on its nodes.
    for k in range(per):
        service = service_name(k)
        mine = [(node, url) for _, node, svc, url in all_replicas if svc == service]

        def env(node: str, k: int = k) -> dict[str, str]:
            out = dict(env_of(by_node[node], service_name(k)))
            if gpus:  # replicas side by side on a node of several GPUs: each its own
                out["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in range(k * ranks, (k + 1) * ranks))
            return out

        def argv(node: str, url: str) -> list[str]:
            host, port = url.removeprefix("http://").rsplit(":", 1)
            return serve_argv(cfg, host=host, port=int(port))
        steps.append(Step(f"start-replicas{'' if k == 0 else f'-{k}'}",
                          f"start {len(mine)} replica(s) as {service}: " + ", ".join(f"{n} {u}" for n, u in mine),
                          {node: tuple(runtime.start(by_node[node], service, argv(node, url))) for node, url in mine},
                          env={node: env(node) for node, _ in mine}, service=service))
    head = ctxs[0]
    steps.append(Step("start-router", f"start vLLM's router ({cfg.doc['router']['policy']}) over "
                      f"{len(all_replicas)} replica(s) on the head's API port",
                      {head.name: tuple(runtime.start(head, "router", router_argv(ctxs, roce)))},
                      env={head.name: env_of(head, "router")}, service="router"))
    return steps
