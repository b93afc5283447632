"""The planner: (effective configuration, node facts) -> ordered steps. Pure.

A runtime (how a service runs on a node) and a distributed backend (which services, in
which order) are modules registered here; adding one touches nothing else.
"""
from __future__ import annotations

import json

from sparkops.config import Config
from sparkops.facts.node import NodeFacts
from sparkops.facts.roce import select_roce
from sparkops.plan import backend_dp, backend_mp, backend_ray, runtime_docker, runtime_native
from sparkops.plan.context import NodeContext, contexts
from sparkops.plan.env import env_file_text, serving_env
from sparkops.plan.interfaces import Backend, Runtime
from sparkops.plan.steps import Action, Plan, Run, Step, WaitReady, Watch, WriteFile

RUNTIMES: dict[str, Runtime] = {m.name: m for m in (runtime_docker, runtime_native)}
BACKENDS: dict[str, Backend] = {m.name: m for m in (backend_mp, backend_ray, backend_dp)}
ALL_SERVICES = ("vllm", "ray")
# Log lines `up` reads from a watched service that stopped: it shows the last 30, but looks for
# the cause in all of them (vLLM's root cause comes before the API server's own traceback).
WATCH_LOG_LINES = 400


def api_url(cfg: Config) -> str:
    head = cfg.nodes[0]
    host = "127.0.0.1" if head["host"] in ("local", "localhost") else head["host"]
    return f"http://{host}:{cfg.cluster['ports']['api']}"


def layout(cfg: Config) -> str:
    """The launcher module of a profile: replicas (`dp`) when serving.data_parallel > 1,
    otherwise one model over the nodes with the configured backend (`mp` or `ray`)."""
    return "dp" if cfg.serving.get("data_parallel", 1) > 1 else cfg.doc["distributed"]["backend"]


def plan_up(cfg: Config, facts: dict[str, NodeFacts]) -> Plan:
    runtime = RUNTIMES[cfg.cluster["runtime"]]
    backend = BACKENDS[layout(cfg)]
    ctxs = contexts(cfg, facts)
    multi = len(ctxs) > 1
    roce = {c.name: select_roce(c.facts, c.node, cfg.cluster["network"]) for c in ctxs} if multi else {}
    envs = {c.name: serving_env(cfg, c, roce.get(c.name), runtime, multi_node=multi) for c in ctxs}

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
    if cfg.dummy_weights:  # what bench marks its results by (absent: the model's own weights)
        state["weights"] = "dummy"
    if cfg.overrides():  # what bench reloads the profile with (absent: none were given)
        state["overrides"] = cfg.overrides()
    started = [(node, step.service) for step in reversed(launch) for node in step.env]
    watch = tuple(Watch(node, service, runtime.status_argv(ctx_of[node], service),
                        runtime.log_argv(ctx_of[node], service, WATCH_LOG_LINES)) for node, service in started)
    replicas = tuple((rank, node) for node, ranks in backend_dp.replica_ranks(ctxs).items()
                     for rank in ranks) if backend.name == "dp" else ()
    ready = WaitReady(api_url(cfg), cfg.served_model_name, float(cfg.serving["ready_timeout_s"]), watch,
                      replicas)
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


def plan_down(cfg: Config, facts: dict[str, NodeFacts], only: list[str] | None = None) -> Plan:
    runtime = RUNTIMES[cfg.cluster["runtime"]]
    ctxs = [c for c in contexts(cfg, facts, all_nodes=True) if only is None or c.name in only]
    actions = {}
    for c in ctxs:
        stops = [runtime.stop(c, s) for s in ALL_SERVICES]
        if c.is_head:
            stops.append(Run(("rm", "-f", c.state_file), 10))
        actions[c.name] = tuple(stops)
    step = Step("stop", "stop sparkops services (vLLM, Ray) on every node", actions)
    return Plan("down", cfg.profile, cfg.cluster_name, cfg.config_hash(),
                {c.name: c.facts.source for c in ctxs}, (step,))
