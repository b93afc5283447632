"""What a benchmark runs against: the API of the running deployment (from the head's
state.json) or a URL, plus the provenance a result records (config hash, versions, nodes,
hardware, the NCCL transport seen in the head's log)."""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import requests

from sparkops.apply.ready import headers
from sparkops.apply.state import read_state
from sparkops.base.errors import SparkopsError
from sparkops.bench.results.files import empty_provenance, weights_provenance
from sparkops.config import Config
from sparkops.config.layouts import layout_of
from sparkops.config.stack import Stack
from sparkops.facts.nccl_log import parse_nccl_log
from sparkops.facts.node import NodeFacts
from sparkops.facts.session import cluster_session
from sparkops.plan import RUNTIMES
from sparkops.plan.context import NodeContext, contexts
from sparkops.plan.interfaces import Runtime
from sparkops.remote.connection import NodeConn

NCCL_LOG_LINES = 5000


@dataclass
class Target:
    url: str
    model: str  # the served model name requests carry
    api_key: str | None
    provenance: dict
    cfg: Config | None = None  # the profile that is serving, when known
    state: dict | None = None
    head: NodeContext | None = None  # the head, for engines that run there
    conn: NodeConn | None = None  # the head's connection
    warnings: list[str] = field(default_factory=list)


def server_version(url: str, api_key: str | None) -> str | None:
    try:
        r = requests.get(f"{url}/version", headers=headers(api_key), timeout=5)
        return r.json().get("version") if r.status_code == 200 else None
    except (requests.RequestException, ValueError, AttributeError):
        return None


def listed_models(url: str, api_key: str | None) -> list[str]:
    try:
        r = requests.get(f"{url}/v1/models", headers=headers(api_key), timeout=10)
        r.raise_for_status()
        return [m.get("id") for m in r.json().get("data", [])]
    except (requests.RequestException, ValueError) as exc:
        raise SparkopsError(f"{url}/v1/models did not answer: {exc}", step="bench",
                            fix="is the server up? `inv status` shows what is serving") from None


@contextmanager
def open_target(load: Callable[..., Config], cluster_cfg: Config | None, *, profile: str | None,
                url: str | None, need_head: bool,
                load_stack: Callable[[str], Stack] | None = None) -> Iterator[Target]:
    """`load(profile, overrides=())` gives a profile's effective config (the deployment's recorded
    overrides, then the caller's --set); `load_stack(name)` a stack's, where one is deployed; without
    `cluster_cfg` only `url` is benched and provenance holds what the API says."""
    if cluster_cfg is None:
        if need_head:
            raise SparkopsError("this engine runs on the cluster's head: give --cluster", step="bench")
        cfg = load(profile) if profile else None
        # Another server gets the cluster's key only with the cluster's profile named; else the
        # key clients of OpenAI-compatible APIs read (never a command-line flag).
        api_key = (cfg.secrets.get("api_key") if cfg else None) or os.environ.get("OPENAI_API_KEY") or None
        yield _url_only(url, cfg, api_key)
        return
    with cluster_session(cluster_cfg) as session:
        session.require([session.head_name])
        state = read_state(session)
        if state is None:
            if url is None:
                raise SparkopsError(f"nothing is serving on cluster {cluster_cfg.cluster_name!r} "
                                    "(no state.json on the head)", step="bench",
                                    fix=f"`inv up --profile P --cluster {cluster_cfg.cluster_name}` first, "
                                        "or give --url")
            yield _url_only(url, load(profile) if profile else None, None)
            return
        if state.get("stack"):  # several models at once: bench the one --profile names
            if load_stack is None:
                raise SparkopsError(f"cluster {cluster_cfg.cluster_name!r} serves stack {state['stack']!r}",
                                    step="bench", fix="`inv bench --profile NAME` benches one of its models")
            yield _stack_target(load_stack, state, profile, url, cluster_cfg.cluster_name, session)
            return
        if profile and state["profile"] != profile:
            raise SparkopsError(f"cluster {cluster_cfg.cluster_name!r} serves profile {state['profile']!r}, "
                                f"not {profile!r}", step="bench",
                                fix=f"`inv switch --profile {profile} --cluster {cluster_cfg.cluster_name}` first, "
                                    "or leave out --profile to bench what is serving")
        cfg = load(state["profile"], state.get("overrides", []))  # the profile as it was deployed
        if state.get("weights") == "dummy" and not cfg.dummy_weights:
            cfg = cfg.with_dummy_weights()  # as deployed: `inv bench` needs no --dummy-weights
        api_key = cfg.secrets.get("api_key")
        target_url = (url or state["api_url"]).rstrip("/")
        head = contexts(cfg, session.facts, all_nodes=True)[0]
        prov = _provenance(cfg, state, target_url, api_key, session.facts, session.head, head)
        t = Target(target_url, state["served_model_name"], api_key, prov, cfg, state, head, session.head)
        if cfg.config_hash() != state.get("hash"):
            t.warnings.append(f"the deployment's config hash {state.get('hash')} differs from profile "
                              f"{state['profile']!r} as loaded now ({cfg.config_hash()}): it was started "
                              "with other overrides; the result records the deployment's hash")
        yield t


def _stack_target(load_stack: Callable[[str], Stack], state: dict, profile: str | None, url: str | None, cluster: str,
                  session) -> Target:
    """One model of a deployed stack, through the stack's router: --profile names it (its
    profile, its name in the stack, or its served model name)."""
    stack = load_stack(state["stack"])  # the stack as it loads now
    models = stack.members
    picked = [m for m in models if profile in (m.cfg.profile, m.name, m.served_model_name)]
    if len(picked) != 1:
        names = ", ".join(m.name for m in models)
        raise SparkopsError(f"cluster {cluster!r} serves stack {state['stack']!r} ({names}): "
                            + (f"{profile!r} is none of its models" if profile else "which of its models?"),
                            step="bench",
                            fix=f"`inv bench --profile NAME --cluster {cluster}` with NAME one of {names}")
    member = picked[0]
    cfg = member.cfg
    api_key = cfg.secrets.get("api_key")
    target_url = (url or state["api_url"]).rstrip("/")
    head = contexts(cfg, session.facts, all_nodes=True)[0]
    own = {**state, "profile": cfg.profile, "hash": cfg.config_hash(), "model": cfg.model["repo"],
           "served_model_name": member.served_model_name, "nodes": [member.node],
           "router": {**state.get("router", {}), "stack": state["stack"]}}
    prov = _provenance(cfg, own, target_url, api_key, session.facts, session.head, head)
    t = Target(target_url, member.served_model_name, api_key, prov, cfg, own, head, session.head)
    if stack.config_hash() != state.get("hash"):
        t.warnings.append(f"the stack's config hash {state.get('hash')} differs from stack {state['stack']!r} as "
                          f"loaded now ({stack.config_hash()}): it was started with other overrides")
    return t


def _url_only(url: str | None, cfg: Config | None, api_key: str | None) -> Target:
    if not url:
        raise SparkopsError("no --url and no cluster to find the API on", step="bench")
    url = url.rstrip("/")
    models = listed_models(url, api_key)
    model = cfg.served_model_name if cfg and cfg.served_model_name in models else (models[0] if models else None)
    if model is None:
        raise SparkopsError(f"{url}/v1/models lists no model", step="bench")
    prov = empty_provenance() | {"api_url": url, "served_model_name": model,
                                 "vllm_version": server_version(url, api_key),
                                 "nccl_note": "not looked at: benched by URL, no node access"}
    if cfg is not None:
        # The profile named (with the caller's --set) is all that says what this server loaded.
        prov |= {"profile": cfg.profile, "model": cfg.model["repo"], "revision": cfg.model.get("revision"),
                 **layout_provenance(cfg), **weights_provenance("dummy" if cfg.dummy_weights else "real")}
    return Target(url, model, api_key, prov, cfg)


def layout_provenance(cfg: Config) -> dict:
    """How the model was placed: parallel sizes and the layout's name."""
    return {"tensor_parallel": cfg.serving["tensor_parallel"], "pipeline_parallel": cfg.serving["pipeline_parallel"],
            "data_parallel": cfg.serving["data_parallel"], "layout": layout_of(cfg.doc)}


def _provenance(cfg: Config, state: dict, url: str, api_key: str | None, facts: dict[str, NodeFacts],
                head_conn: NodeConn, head: NodeContext) -> dict:
    runtime = RUNTIMES[state.get("runtime") or cfg.cluster["runtime"]]
    hf = facts[head.name]
    prov = empty_provenance() | {
        "profile": state["profile"], "cluster": cfg.cluster_name, "config_hash": state.get("hash"),
        "model": state.get("model") or cfg.model["repo"], "revision": cfg.model.get("revision"),
        "served_model_name": state["served_model_name"], "api_url": url,
        "vllm_version": server_version(url, api_key), "runtime": runtime.name,
        "image_id": hf.image_id if runtime.name == "docker" else None,
        "venv_vllm_version": hf.vllm_version if runtime.name == "native" else None,
        "nodes": list(state.get("nodes", [])),
        **layout_provenance(cfg),
        "backend": state.get("backend"),
        "router": state.get("router"),  # layout replicas: what chose the replica of each request
        # As deployed (state.json), not as this command's flags say: `inv bench` without
        # --dummy-weights still marks a random-weight deployment's results.
        **weights_provenance(state.get("weights") or "real"),
    }
    hardware = [hardware_of(name, facts.get(name), cfg.cluster["accelerator"]) for name in prov["nodes"] or [head.name]]
    prov["hardware"] = hardware
    prov["nccl"], prov["nccl_note"] = _nccl(head_conn, head, runtime)
    return prov


def hardware_of(name: str, f: NodeFacts | None, accelerator: str) -> dict:
    """A node's hardware as results record it. memory_gib is the host's (a Spark's one memory);
    gpu_memory_gib the GPUs' own added up (an H200's 140.4 GiB), None where they have none."""
    gpus = f.gpus if f else ()
    own = [g.memory_total_mib for g in gpus if g.memory_total_mib]
    return {"node": name,
            "gpu": ", ".join(g.name for g in gpus) or (f"none ({accelerator})" if f else None),
            "driver": (gpus[0].driver or None) if gpus else None,
            "memory_gib": round(f.memory_gib, 1) if f and f.memory_gib else None,
            "gpu_memory_gib": round(sum(own) / 1024, 1) if own else None}


def _nccl(head_conn: NodeConn, head: NodeContext, runtime: Runtime) -> tuple[dict | None, str]:
    try:
        res = head_conn.run(runtime.log_argv(head, "vllm", NCCL_LOG_LINES), timeout=60)
    except Exception as exc:  # a log we cannot read must not stop the benchmark
        return None, f"could not read the head's log: {type(exc).__name__}: {exc}"
    text = res.stdout + res.stderr
    if not res.ok:
        return None, f"could not read the head's log (exit {res.rc})"
    if not re.search(r"\bNCCL\b", text):
        return None, (f"no NCCL lines in the last {NCCL_LOG_LINES} lines of the head's vLLM log (single node or "
                      "CPU: no NCCL; or NCCL_DEBUG is not INFO)")
    rep = parse_nccl_log(text)
    note = "from the head's vLLM log"
    if rep.fell_back_to_socket:
        note += ": NCCL FELL BACK TO SOCKETS (TCP), multi-node numbers are not RDMA numbers"
    return {"transports": sorted(rep.transports), "fell_back_to_socket": rep.fell_back_to_socket,
            "ib_devices": list(rep.ib_devices), "gdr": rep.gdr, "nccl_version": rep.nccl_version}, note
