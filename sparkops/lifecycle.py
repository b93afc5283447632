"""`up`, `down`, `switch`: the verbs that start and stop a deployment on every node."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

from .apply import apply, run_step_on_nodes
from .config import Config
from .checks.deploy import model_problem
from .config.memfit import nodes_needed
from .errors import ConnectError, SparkopsError
from .facts.gather import facts_from_sections, model_dir_name
from .facts.node import NodeFacts
from .facts.probe import argv as probe_argv
from .facts.probe import split_sections
from .plan import api_url, contexts, plan_down, plan_up
from .preflight import preflight
from .progress import Progress
from .readiness import serving_model
from .remote.connection import CommandTimeout
from .remote.group import NodeGroup


def connect(cfg: Config, names: list[str] | None = None) -> NodeGroup:
    nodes = [n for n in cfg.nodes if names is None or n["name"] in names]
    return NodeGroup.for_nodes(nodes, cfg.cluster["ssh"])


def gather(cfg: Config, group: NodeGroup) -> tuple[dict[str, NodeFacts], dict[str, SparkopsError]]:
    """Facts from every node at once; nodes that cannot be reached come back as errors."""
    c = cfg.cluster

    def one(conn):
        def where(path: str) -> str:
            # Before facts there is no home to resolve '~/' with: an SSH command starts in the
            # home directory, so a relative path does; this machine expands it itself.
            if not path.startswith("~/"):
                return path
            return os.path.expanduser(path) if conn.is_local else path[2:]

        res = conn.run(probe_argv(where(c["paths"]["hf_home"]), model_dir_name(cfg.model["repo"]),
                                  where(c["venv"]), c["image"], c["runtime"]),
                       timeout=c["ssh"]["command_timeout_s"])
        return facts_from_sections(conn.name, split_sections(res.stdout))

    results = group.map(one)
    facts, down = {}, {}
    for name, result in results.items():
        if isinstance(result, NodeFacts):
            facts[name] = result
        elif isinstance(result, SparkopsError):
            down[name] = result
        elif isinstance(result, CommandTimeout):
            down[name] = ConnectError(f"reading facts timed out after {result.timeout:.0f}s",
                                      host=name, step="facts")
        else:
            raise result
    return facts, down


def read_state(cfg: Config, group: NodeGroup, facts: dict[str, NodeFacts]) -> dict | None:
    head = contexts(cfg, facts, all_nodes=True)[0]
    res = group[head.name].run(["cat", f"{head.run_dir}/state.json"], timeout=30)
    if not res.ok:
        return None
    try:
        return json.loads(res.stdout)
    except ValueError:
        return None


def _require_reachable(down: dict[str, SparkopsError], needed: list[str]) -> None:
    missing = [down[n] for n in needed if n in down]
    if missing:
        first = missing[0]
        first.details.extend(f"also unreachable: {e.host}: {e.message}" for e in missing[1:])
        raise first


@dataclass
class UpResult:
    url: str
    model: str
    already: bool
    seconds: float


def up(cfg: Config, *, replace: bool = False, progress: Progress, sync_model: bool = False) -> UpResult:
    start = time.monotonic()
    needed = [n["name"] for n in cfg.nodes[:nodes_needed(cfg.doc)]]
    group = connect(cfg)
    try:
        progress.say(f"reading facts from {len(group.conns)} node(s)")
        facts, down = gather(cfg, group)
        _require_reachable(down, needed if not replace else list(group.names()))
        state = read_state(cfg, group, facts) if cfg.nodes[0]["name"] in facts else None
        if state:
            listed = serving_model(state["api_url"], cfg.secrets.get("api_key"))
            if state.get("hash") == cfg.config_hash() and listed and cfg.served_model_name in listed:
                progress.say(f"already serving {state['profile']} (config {state['hash']}) at {state['api_url']}")
                return UpResult(state["api_url"], cfg.served_model_name, True, time.monotonic() - start)
            if not replace:
                raise SparkopsError(
                    f"profile {state['profile']!r} (config {state['hash']}) is already "
                    + ("serving" if listed else "deployed but not answering") + f" on cluster {cfg.cluster_name!r}",
                    step="up", fix=f"`inv switch --profile {cfg.profile}` (or `inv up --replace`) stops it "
                                  f"first; `inv down` stops it")
        if replace or state:
            progress.say("stopping the current deployment first")
            stop(cfg, group, facts, progress)
            facts, down = gather(cfg, group)
        if sync_model and any(facts[n].model_present is False
                              or model_problem(facts[n], facts[needed[0]], n == needed[0])
                              for n in needed):
            from .models.sync import ensure_model
            ensure_model(cfg, group, facts, progress)
            facts, down = gather(cfg, group)
        found = preflight(cfg, facts, profile_flag=f"--profile {cfg.profile} --cluster {cfg.cluster_name}",
                          group=group)
        for warning in (c for c in found if c.status == "warn"):
            progress.say(f"warning: {warning.render()}")
        problems = [c for c in found if c.status == "fail"]
        if problems:
            raise SparkopsError(f"preflight found {len(problems)} problem(s); nothing was started",
                                step="preflight",
                                details=[line for p in problems for line in p.render().splitlines()])
        plan = plan_up(cfg, facts)
        apply(plan, group, progress=progress, api_key=cfg.secrets.get("api_key"))
        return UpResult(api_url(cfg), cfg.served_model_name, False, time.monotonic() - start)
    finally:
        group.close()


def stop(cfg: Config, group: NodeGroup, facts: dict[str, NodeFacts], progress: Progress) -> list[str]:
    """Stop sparkops services on every reachable node; returns per-node problems."""
    plan = plan_down(cfg, facts, only=list(facts))
    problems = []
    for step in plan.steps:
        try:
            run_step_on_nodes(group.subset(facts), step, progress)
        except SparkopsError as exc:
            problems.append(exc.render())
    return problems


def down(cfg: Config, *, progress: Progress) -> list[str]:
    """Stop everything on every node; unreachable nodes are reported, the rest still cleaned."""
    group = connect(cfg)
    try:
        facts, unreachable = gather(cfg, group)
        problems = [e.render() for e in unreachable.values()]
        if facts:
            problems += stop(cfg, group, facts, progress)
        return problems
    finally:
        group.close()
