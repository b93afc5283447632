"""The planner: (effective configuration, node facts) -> ordered steps. Pure.

A runtime (how a service runs on a node) and a distributed backend (which services, in
which order) are modules registered here; adding one touches nothing else.
"""
from __future__ import annotations

import json

from ..config import Config
from ..config.memfit import nodes_needed
from ..errors import ConfigError
from ..facts.node import NodeFacts
from ..facts.roce import select_roce
from . import backend_mp, backend_ray, runtime_docker, runtime_native
from .context import NodeContext
from .model import Plan, Run, Step, WaitReady, Watch, WriteFile
from .network_env import network_env

RUNTIMES = {m.name: m for m in (runtime_docker, runtime_native)}
BACKENDS = {m.name: m for m in (backend_mp, backend_ray)}
ALL_SERVICES = ("vllm", "ray")
# Log lines `up` reads from a watched service that stopped: it shows the last 30, but looks for
# the cause in all of them (vLLM's root cause comes before the API server's own traceback).
WATCH_LOG_LINES = 400


def contexts(cfg: Config, facts: dict[str, NodeFacts], *, all_nodes: bool = False) -> list[NodeContext]:
    """Nodes in rank order (head first); nodes without facts (unreachable) are left out."""
    nodes = cfg.nodes if all_nodes else cfg.nodes[:nodes_needed(cfg.doc)]
    return [NodeContext(cfg, node, facts[node["name"]], rank) for rank, node in enumerate(nodes)
            if node["name"] in facts]


def api_url(cfg: Config) -> str:
    head = cfg.nodes[0]
    host = "127.0.0.1" if head["host"] in ("local", "localhost") else head["host"]
    return f"http://{host}:{cfg.cluster['ports']['api']}"


def service_env(cfg: Config, ctx: NodeContext, net: dict[str, str], runtime) -> dict[str, str]:
    env = dict(net)
    env |= runtime.service_env(ctx)
    # Workers must never download on their own: models arrive through `inv sync`.
    env["HF_HUB_OFFLINE"] = "1"
    env |= _env_strings(cfg.doc.get("env", {}))
    env |= _env_strings(ctx.node.get("env", {}))  # a node's own entries win: they are the specific ones
    if cfg.secrets.get("api_key"):
        env["VLLM_API_KEY"] = cfg.secrets["api_key"]
    for key, value in env.items():
        if "\n" in value or "\r" in value:
            raise ConfigError(f"env.{key}: values cannot hold line breaks")
    return env


def _env_strings(table: dict) -> dict[str, str]:
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in table.items()}


def env_file_text(env: dict[str, str]) -> str:
    return "".join(f"{k}={v}\n" for k, v in sorted(env.items()))


def plan_up(cfg: Config, facts: dict[str, NodeFacts]) -> Plan:
    runtime = RUNTIMES[cfg.cluster["runtime"]]
    backend = BACKENDS[cfg.doc["distributed"]["backend"]]
    ctxs = contexts(cfg, facts)
    multi = len(ctxs) > 1
    roce = {c.name: select_roce(c.facts, c.node, cfg.cluster["network"]) for c in ctxs} if multi else {}
    nets = {c.name: network_env(roce.get(c.name), accelerator=cfg.cluster["accelerator"],
                                network=cfg.cluster["network"], backend=backend.name, multi_node=multi)
            for c in ctxs}
    envs = {c.name: service_env(cfg, c, nets[c.name], runtime) for c in ctxs}

    ctx_of = {c.name: c for c in ctxs}

    def env_of(ctx: NodeContext, service: str) -> dict[str, str]:
        return envs[ctx.name]

    launch = backend.launch(ctxs, roce, runtime, env_of)
    # Env files are written with what each launch step will run with (the Ray driver adds RAY_ADDRESS).
    files: dict[str, list] = {c.name: list(runtime.prepare(c)) for c in ctxs}
    for step in launch:
        for node, env in step.env.items():
            files[node].append(WriteFile(ctx_of[node].env_file(step.service), env_file_text(env), 0o600, secret=True))
    head = ctxs[0]
    state = {"profile": cfg.profile, "cluster": cfg.cluster_name, "hash": cfg.config_hash(),
             "model": cfg.model["repo"], "served_model_name": cfg.served_model_name,
             "api_url": api_url(cfg), "runtime": runtime.name, "backend": backend.name,
             "nodes": [c.name for c in ctxs], "services": list(backend.SERVICES)}
    started = [(node, step.service) for step in reversed(launch) for node in step.env]
    watch = tuple(Watch(node, service, runtime.status_argv(ctx_of[node], service),
                        runtime.log_argv(ctx_of[node], service, WATCH_LOG_LINES)) for node, service in started)
    ready = WaitReady(api_url(cfg), cfg.served_model_name, float(cfg.serving["ready_timeout_s"]), watch)
    steps = [Step("prepare", "create directories, write scripts and 0600 env files",
                  {n: tuple(a) for n, a in files.items()}),
             *launch,
             Step("ready", "wait for the API: health, model listed, one completion", {}, controller=(ready,)),
             Step("record", "record what is serving", {head.name: (
                 WriteFile(f"{head.run_dir}/state.json", json.dumps(state, indent=1) + "\n", 0o644),)})]
    notes = [f"{c.name}: RoCE {roce[c.name].interface} {roce[c.name].ip}, HCAs "
             f"{','.join(roce[c.name].hcas) or '-'}, GID index {roce[c.name].gid_index}" for c in ctxs if c.name in roce]
    return Plan("up", cfg.profile, cfg.cluster_name, cfg.config_hash(),
                {c.name: c.facts.source for c in ctxs}, tuple(steps),
                hosts={c.name: c.node["host"] for c in ctxs}, undo=plan_down(cfg, facts, only=[c.name for c in ctxs]).steps, notes=tuple(notes))


def plan_down(cfg: Config, facts: dict[str, NodeFacts], only: list[str] | None = None) -> Plan:
    runtime = RUNTIMES[cfg.cluster["runtime"]]
    ctxs = [c for c in contexts(cfg, facts, all_nodes=True) if only is None or c.name in only]
    actions = {}
    for c in ctxs:
        stops = [runtime.stop(c, s) for s in ALL_SERVICES]
        if c.is_head:
            stops.append(Run(("rm", "-f", f"{c.run_dir}/state.json"), 10))
        actions[c.name] = tuple(stops)
    step = Step("stop", "stop sparkops services (vLLM, Ray) on every node", actions)
    return Plan("down", cfg.profile, cfg.cluster_name, cfg.config_hash(),
                {c.name: c.facts.source for c in ctxs}, (step,))
