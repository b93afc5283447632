"""The planner: (effective configuration, node facts) -> ordered steps. Pure.

A runtime (how a service runs on a node) and a distributed backend (which services, in
which order) are modules registered here; adding one touches nothing else.
"""
from __future__ import annotations

import json
from dataclasses import replace

from sparkops.config import Config
from sparkops.facts.node import NodeFacts
from sparkops.facts.roce import RoceChoice, select_roce
from sparkops.plan import backend_dp, backend_mp, backend_ray, backend_replicas, runtime_docker, runtime_native
from sparkops.plan.context import NodeContext, contexts
from sparkops.plan.env import env_file_text, serving_env
from sparkops.plan.interfaces import Backend, Runtime
from sparkops.plan.steps import Action, Plan, Run, Step, WaitReady, Watch, WriteFile

RUNTIMES: dict[str, Runtime] = {m.name: m for m in (runtime_docker, runtime_native)}
BACKENDS: dict[str, Backend] = {m.name: m for m in (backend_mp, backend_ray, backend_dp, backend_replicas)}
ALL_SERVICES = ("vllm", "ray", "router")
# Log lines `up` reads from a watched service that stopped: it shows the last 30, but looks for
# the cause in all of them (vLLM's root cause comes before the API server's own traceback).
WATCH_LOG_LINES = 400


def all_services(cfg: Config) -> tuple[str, ...]:
    """Every service sparkops may run on a node of this cluster (what `down` stops, `logs`
    shows and `status` asks): ALL_SERVICES, and replicas side by side on a node of several GPUs."""
    extra = tuple(backend_replicas.service_name(k) for k in range(1, cfg.cluster.get("gpus_per_node", 1)))
    return ALL_SERVICES + extra


def api_url(cfg: Config, port: int | None = None) -> str:
    """The head's API as the controller reaches it (or another port of the head's)."""
    head = cfg.nodes[0]
    host = "127.0.0.1" if head["host"] in ("local", "localhost") else head["host"]
    return f"http://{host}:{port or cfg.cluster['ports']['api']}"


def layout(cfg: Config) -> str:
    """The launcher module of a profile: independent servers behind a router (`replicas`) when
    that is the backend; vLLM's data parallel (`dp`) when serving.data_parallel > 1; otherwise
    one model over the nodes with the configured backend (`mp` or `ray`)."""
    backend = cfg.doc["distributed"]["backend"]
    if backend == "replicas":
        return backend
    return "dp" if cfg.serving.get("data_parallel", 1) > 1 else backend


def roce_choices(cfg: Config, ctxs: list[NodeContext]) -> dict[str, RoceChoice]:
    """Each node's cable (interface, address, HCAs) where the deployment spans nodes; {} on one."""
    if len(ctxs) < 2:
        return {}
    return {c.name: select_roce(c.facts, c.node, cfg.cluster["network"]) for c in ctxs}


def plan_up(cfg: Config, facts: dict[str, NodeFacts]) -> Plan:
    runtime = RUNTIMES[cfg.cluster["runtime"]]
    backend = BACKENDS[layout(cfg)]
    ctxs = contexts(cfg, facts)
    multi = len(ctxs) > 1
    roce = roce_choices(cfg, ctxs)
    # A backend whose engines stay inside their nodes (replicas) still needs the workers' cable
    # addresses (where the router reaches them), but none of the collective's environment.
    spans = multi and backend.SPANS_NODES
    envs = {c.name: serving_env(cfg, c, roce.get(c.name), runtime, multi_node=spans) for c in ctxs}

    ctx_of = {c.name: c for c in ctxs}

    def env_of(ctx: NodeContext, service: str) -> dict[str, str]:
        return envs[ctx.name]

    launch = backend.launch(ctxs, roce, runtime, env_of)
    # Env files are written with what each launch step will run with (the Ray driver adds RAY_ADDRESS).
    files: dict[str, list[Action]] = {c.name: list(runtime.prepare(c)) for c in ctxs}
    for step in launch:
        for node, env in step.env.items():
            files[node].append(WriteFile(ctx_of[node].env_file(step.service), env_file_text(env), 0o600, secret=True))
    head = ctxs[0]
    state = {"profile": cfg.profile, "cluster": cfg.cluster_name, "hash": cfg.config_hash(),
             "model": cfg.model["repo"], "served_model_name": cfg.served_model_name,
             "api_url": api_url(cfg), "runtime": runtime.name, "backend": backend.name,
             "nodes": [c.name for c in ctxs], "services": list(backend.SERVICES),
             "data_parallel": cfg.serving["data_parallel"]}
    # Layout replicas: each replica (index, node, service, URL), the services by node (they
    # differ), and what bench records of the router.
    found = backend_replicas.replicas(ctxs, roce) if backend.name == "replicas" else []
    if found:
        state["node_services"] = backend_replicas.node_services(ctxs, roce)
        state["router"] = {"engine": "vllm-router", "policy": cfg.doc["router"]["policy"],
                           "replicas": [{"node": n, "service": s, "url": u} for _, n, s, u in found]}
    if cfg.dummy_weights:  # what bench marks its results by (absent: the model's own weights)
        state["weights"] = "dummy"
    if cfg.overrides():  # what bench reloads the profile with (absent: none were given)
        state["overrides"] = cfg.overrides()
    started = [(node, step.service) for step in reversed(launch) for node in step.env]
    watch = tuple(Watch(node, service, runtime.status_argv(ctx_of[node], service),
                        runtime.log_argv(ctx_of[node], service, WATCH_LOG_LINES)) for node, service in started)
    replicas = tuple((index, node) for index, node, _, _ in found)
    if backend.name == "dp":
        replicas = tuple((rank, node) for node, ranks in backend_dp.replica_ranks(ctxs).items() for rank in ranks)
    ready = WaitReady(api_url(cfg), cfg.served_model_name, float(cfg.serving["ready_timeout_s"]), watch, replicas,
                      router_metrics=api_url(cfg, cfg.cluster["ports"]["router_metrics"]) + "/metrics" if found else "",
                      replica_urls=tuple(u for *_, u in found))
    steps = [Step("prepare", "create directories, write scripts and 0600 env files",
                  {n: tuple(a) for n, a in files.items()}),
             *launch,
             Step("ready", "wait for the API: health, model listed, one completion", {}, controller=(ready,)),
             Step("record", "record what is serving", {head.name: (
                 WriteFile(head.state_file, json.dumps(state, indent=1) + "\n", 0o644),)})]
    notes = [f"{c.name}: RoCE {roce[c.name].interface} {roce[c.name].ip}, HCAs "
             f"{','.join(roce[c.name].hcas) or '-'}, GID index {roce[c.name].gid_index}"
             for c in ctxs if c.name in roce]
    # Which vLLM will run: the flag check asks that one, and the plan says so.
    notes += [f"{c.name}: vLLM " + (f"image {cfg.cluster['image']} "
                                    + (f"= {c.facts.image_id[:19]}" if c.facts.image_id else "(not on this node yet)")
                                    if runtime.name == "docker"
                                    else f"{c.facts.vllm_version or '(not installed)'} in {c.venv}")
              for c in ctxs]
    return Plan("up", cfg.profile, cfg.cluster_name, cfg.config_hash(),
                {c.name: c.facts.source for c in ctxs}, tuple(steps),
                hosts={c.name: c.node["host"] for c in ctxs},
                undo=plan_down(cfg, facts, only=[c.name for c in ctxs]).steps, notes=tuple(notes))


def plan_down(cfg: Config, facts: dict[str, NodeFacts], only: list[str] | None = None,
              services: tuple[str, ...] = ()) -> Plan:
    """`services`: what to stop on every node (default all_services: a stack's models are named
    by the deployment's record, apply.health.every_service)."""
    runtime = RUNTIMES[cfg.cluster["runtime"]]
    ctxs = [c for c in contexts(cfg, facts, all_nodes=True) if only is None or c.name in only]
    actions = {}
    for c in ctxs:
        stops = [runtime.stop(c, s) for s in services or all_services(cfg)]
        if c.is_head:
            stops.append(Run(("rm", "-f", c.state_file), 10))
        actions[c.name] = tuple(stops)
    step = Step("stop", "stop sparkops services (vLLM, Ray, the router) on every node", actions)
    return Plan("down", cfg.profile, cfg.cluster_name, cfg.config_hash(),
                {c.name: c.facts.source for c in ctxs}, (step,))


def plan_heal(cfg: Config, facts: dict[str, NodeFacts], dead: list[tuple[str, str]]) -> Plan:
    """Layout replicas: start again only the replicas in `dead` ((node, service)), while the
    router and the other replicas keep serving; ready when each has served through the router
    again. Undo stops only what this plan started."""
    full = plan_up(cfg, facts)
    runtime = RUNTIMES[cfg.cluster["runtime"]]
    ctxs = contexts(cfg, facts)
    ctx_of = {c.name: c for c in ctxs}
    want = set(dead)
    nodes = sorted({n for n, _ in dead})
    stop = Step("stop-dead", "stop what is left of the dead replica(s) " + ", ".join(f"{s} on {n}" for n, s in dead),
                {n: tuple(runtime.stop(ctx_of[n], s) for m, s in dead if m == n) for n in nodes})
    prepare = full.steps[0]
    steps = [stop, Step(prepare.name, prepare.title, {n: a for n, a in prepare.actions.items() if n in nodes})]
    for step in full.steps:
        mine = {n: a for n, a in step.actions.items() if (n, step.service) in want}
        if step.service and mine:
            steps.append(Step(step.name, f"start {step.service} again on {', '.join(mine)}", mine,
                              env={n: e for n, e in step.env.items() if n in mine}, service=step.service))
    found = [(i, n, u) for i, n, s, u in backend_replicas.replicas(ctxs, roce_choices(cfg, ctxs)) if (n, s) in want]
    (ready,) = [a for s in full.steps for a in s.controller if isinstance(a, WaitReady)]
    ready = replace(ready, replicas=tuple((i, n) for i, n, _ in found), replica_urls=tuple(u for *_, u in found),
                    watch=tuple(w for w in ready.watch if (w.node, w.service) in want or w.service == "router"))
    steps.append(Step("ready", "wait until each started replica serves through the router", {}, controller=(ready,)))
    return Plan("heal", cfg.profile, cfg.cluster_name, cfg.config_hash(), full.facts_source, tuple(steps),
                hosts=full.hosts, undo=(stop,), notes=full.notes)
