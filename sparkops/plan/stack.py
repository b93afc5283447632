"""A stack's plan: several models at once, each its own `vllm serve` on its node, started one
after the other, then LiteLLM's proxy on the head's API port routing by the request's `model`.
Pure: (stack, node facts) -> ordered steps.

Why one at a time: vLLM sizes its KV cache from the memory it finds free during its profiling
run; on unified memory two profiling at once would each count the other's as taken (NVIDIA's
playbook for two models on one Spark starts them in turn). So each model's start is followed by
a wait on its node for its own /health (while its service runs), before the next starts.

Why LiteLLM and not the replicas layout's vllm-router: vllm-router 0.1.17 cannot route by model
name (measured: its plain mode sends any model to any server; its multi-model mode registers
servers as model "unknown"). LiteLLM's proxy routes by `model`, answers an unknown one with 400,
and with a master key refuses every route without it. Its config names the secrets as
`os.environ/...`: the key reaches it only through the router's 0600 env file.

Where things listen: a model on the head on 127.0.0.1, a model on another node on that node's
cable address (the router reaches it over the cable), each on cluster.ports.replicas (+k for a
node's k-th model), each demanding the API key, which the router sends on.
"""
from __future__ import annotations

import json
import posixpath

from sparkops.config.stack import Member, Stack
from sparkops.facts.node import NodeFacts
from sparkops.facts.roce import select_roce
from sparkops.node_scripts import source
from sparkops.plan import RUNTIMES, WATCH_LOG_LINES, all_services, api_url
from sparkops.plan.context import NodeContext
from sparkops.plan.env import env_file_text, serving_env
from sparkops.plan.steps import Action, Plan, Poll, Run, Step, WaitReady, Watch, WriteFile
from sparkops.plan.vllm_args import listen_address, serve_argv

BACKEND = "stack"
ROUTER = "router"
# LiteLLM's liveness route: answers without the key (its /health asks every model, with the key).
HEALTH_PATH = "/health/liveliness"


def member_urls(stack: Stack, facts: dict[str, NodeFacts]) -> dict[str, str]:
    """Where each model listens (its name -> URL), as the router on the head reaches it."""
    cfg = stack.cfg
    head = cfg.nodes[0]["name"]
    nodes = {n["name"]: n for n in cfg.nodes}
    out = {}
    for m in stack.members:
        if m.node == head:
            host = "127.0.0.1"
        else:
            host = select_roce(facts[m.node], nodes[m.node], cfg.cluster["network"]).ip
        out[m.name] = f"http://{host}:{m.port}"
    return out


def node_services(stack: Stack) -> dict[str, list[str]]:
    """What runs on each node: its models, and on the head the router."""
    head = stack.cfg.nodes[0]["name"]
    out: dict[str, list[str]] = {}
    for m in stack.members:
        out.setdefault(m.node, []).append(m.name)
    out.setdefault(head, []).append(ROUTER)
    return {n["name"]: out[n["name"]] for n in stack.cfg.nodes if n["name"] in out}


def litellm_config(stack: Stack, urls: dict[str, str]) -> dict:
    """LiteLLM's proxy config: one entry per model, by its served name; secrets by name only."""
    keyed = bool(stack.cfg.secrets.get("api_key"))
    models = [{"model_name": m.served_model_name,
               "litellm_params": {"model": f"hosted_vllm/{m.served_model_name}", "api_base": f"{urls[m.name]}/v1",
                                  "api_key": "os.environ/VLLM_API_KEY" if keyed else "none"}}
              for m in stack.members]
    return {"model_list": models,
            "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"} if keyed else {}}


def _member_ctx(stack: Stack, m: Member, facts: dict[str, NodeFacts]) -> NodeContext:
    rank = [n["name"] for n in stack.cfg.nodes].index(m.node)
    return NodeContext(m.cfg, stack.cfg.nodes[rank], facts[m.node], rank)


def plan_stack(stack: Stack, facts: dict[str, NodeFacts]) -> Plan:
    cfg = stack.cfg
    runtime = RUNTIMES[cfg.cluster["runtime"]]
    used = node_services(stack)
    head = NodeContext(cfg, cfg.nodes[0], facts[cfg.nodes[0]["name"]], 0)
    urls = member_urls(stack, facts)
    node_ctx = {n: NodeContext(cfg, cfg.nodes[i], facts[n], i)
                for i, n in enumerate(x["name"] for x in cfg.nodes) if n in used}

    files: dict[str, list[Action]] = {n: list(runtime.prepare(c)) for n, c in node_ctx.items()}
    launch: list[Step] = []
    watches: list[Watch] = []
    for m in stack.members:
        ctx = _member_ctx(stack, m, facts)
        env = serving_env(m.cfg, ctx, None, runtime, multi_node=False)
        files[m.node].append(WriteFile(ctx.env_file(m.name), env_file_text(env), 0o600, secret=True))
        host, port = urls[m.name].removeprefix("http://").rsplit(":", 1)
        watch = Watch(m.node, m.name, runtime.status_argv(ctx, m.name), runtime.log_argv(ctx, m.name, WATCH_LOG_LINES))
        watches.append(watch)
        launch.append(Step(f"start-{m.name}", f"start {m.served_model_name!r} on {m.node} ({urls[m.name]}, "
                           f"memory share {m.memory:g})",
                           {m.node: tuple(runtime.start(ctx, m.name, serve_argv(m.cfg, host=host, port=int(port))))},
                           env={m.node: env}, service=m.name))
        # Asked on its own node: a worker's model listens on the cable, which the controller may not reach.
        health = ("curl", "-s", "-o", "/dev/null", "--max-time", "5", "-w", "%{http_code}", f"{urls[m.name]}/health")
        launch.append(Step(f"ready-{m.name}", f"wait until {m.name} answers /health on {m.node} before the next starts",
                           {m.node: (Poll(health, "http-200", 1, float(m.cfg.serving["ready_timeout_s"]), 2.0,
                                          watch=watch),)}))
    router_env = serving_env(cfg, head, None, runtime, multi_node=False)
    router_env |= {"LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of a remote price list at start
                   "DISABLE_ADMIN_UI": "True"}  # no web admin page beside the API
    if cfg.secrets.get("api_key"):
        router_env["LITELLM_MASTER_KEY"] = cfg.secrets["api_key"]
    files[head.name].append(WriteFile(head.env_file(ROUTER), env_file_text(router_env), 0o600, secret=True))
    # LiteLLM's Python runs the wrapper, which hands the proxy its config (no secret in it).
    python = posixpath.join(posixpath.dirname(runtime.litellm(head)), "python3")
    router_argv = [python, "-c", source("litellm_router.py"),
                   "--config-json", json.dumps(litellm_config(stack, urls), sort_keys=True, separators=(",", ":")),
                   "--host", listen_address(cfg), "--port", str(cfg.cluster["ports"]["api"])]
    launch.append(Step("start-router", f"start LiteLLM's proxy on the head's API port, routing by model over "
                       f"{len(stack.members)} models",
                       {head.name: tuple(runtime.start(head, ROUTER, router_argv))},
                       env={head.name: router_env}, service=ROUTER))
    watches.insert(0, Watch(head.name, ROUTER, runtime.status_argv(head, ROUTER),
                            runtime.log_argv(head, ROUTER, WATCH_LOG_LINES)))
    first, *rest = [m.served_model_name for m in stack.members]
    ready = WaitReady(api_url(cfg), first, float(max(m.cfg.serving["ready_timeout_s"] for m in stack.members)),
                      tuple(watches), models=tuple(rest), health_path=HEALTH_PATH)
    state = {"stack": stack.name, "profile": f"stack:{stack.name}", "cluster": stack.cluster_name,
             "hash": stack.config_hash(), "api_url": api_url(cfg), "served_model_name": first,
             "health_path": HEALTH_PATH, "runtime": runtime.name, "backend": BACKEND, "nodes": list(used),
             "services": [s for ss in used.values() for s in ss], "node_services": used,
             "router": {"engine": "litellm", "models": [
                 {"name": m.name, "served_model_name": m.served_model_name, "profile": m.cfg.profile,
                  "node": m.node, "url": urls[m.name], "memory": m.memory, "config_hash": m.cfg.config_hash()}
                 for m in stack.members]}}
    # Recorded before anything starts, as starting: a stack's model services have names of their
    # own, so an `up` killed half-way leaves a record that `down` and the next `up` stop them by.
    files[head.name].append(WriteFile(head.state_file, json.dumps({**state, "starting": True}, indent=1) + "\n",
                                      0o644))
    steps = [Step("prepare", "create directories, write scripts and 0600 env files; record the stack as starting",
                  {n: tuple(a) for n, a in files.items()}),
             *launch,
             Step("ready", "wait for the API: each model listed and completing through the router", {},
                  controller=(ready,)),
             Step("record", "record what is serving", {head.name: (
                 WriteFile(head.state_file, json.dumps(state, indent=1) + "\n", 0o644),)})]
    notes = [f"{m.name}: {m.cfg.profile} ({m.served_model_name}) on {m.node}, memory share {m.memory:g}, "
             f"config {m.cfg.config_hash()}" for m in stack.members]
    return Plan("up", f"stack:{stack.name}", stack.cluster_name, stack.config_hash(),
                {n: facts[n].source for n in used}, tuple(steps),
                hosts={n: node_ctx[n].node["host"] for n in used},
                undo=plan_stack_down(stack, facts).steps, notes=tuple(notes))


def plan_stack_down(stack: Stack, facts: dict[str, NodeFacts]) -> Plan:
    """Stop every model of the stack and the router (and whatever else sparkops runs there)."""
    cfg = stack.cfg
    runtime = RUNTIMES[cfg.cluster["runtime"]]
    used = node_services(stack)
    actions: dict[str, tuple[Action, ...]] = {}
    for i, node in enumerate(cfg.nodes):
        name = node["name"]
        if name not in used or name not in facts:
            continue
        ctx = NodeContext(cfg, node, facts[name], i)
        services = list(dict.fromkeys([*used[name], *all_services(cfg)]))
        stops: list[Action] = [runtime.stop(ctx, s) for s in services]
        if i == 0:
            stops.append(Run(("rm", "-f", ctx.state_file), 10))
        actions[name] = tuple(stops)
    return Plan("down", f"stack:{stack.name}", stack.cluster_name, stack.config_hash(),
                {n: facts[n].source for n in actions}, (Step("stop", "stop the stack's models and router", actions),))
