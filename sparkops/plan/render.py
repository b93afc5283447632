"""Showing a plan to people (text) and programs (JSON), with every secret masked."""
from __future__ import annotations

import json

from sparkops.base.errors import SparkopsError
from sparkops.config import MASK, Config
from sparkops.config.memfit import nodes_needed
from sparkops.facts.node import NodeFacts
from sparkops.facts.roce import copy_route, lan_allowed
from sparkops.plan.steps import Plan, WriteFile

SECRET_KEYS = {"VLLM_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"}


def scrub(value, secrets: list[str]):
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {k: (MASK if k in SECRET_KEYS and v else scrub(v, secrets)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, secrets) for v in value]
    return value


def plan_json(plan: Plan, secrets: list[str]) -> str:
    data = plan.as_dict()
    for step in data["steps"] + data["undo"]:
        for actions in step["actions"].values():
            for action in actions:
                if action["kind"] == "write" and action["secret"]:
                    action["content"] = "\n".join(
                        f"{line.split('=', 1)[0]}={MASK}" if line.split("=", 1)[0] in SECRET_KEYS else line
                        for line in action["content"].splitlines())
    return json.dumps(scrub(data, secrets), indent=1)


def plan_text(plan: Plan, secrets: list[str]) -> str:
    out = [f"plan: {plan.verb} profile {plan.profile!r} on cluster {plan.cluster!r} "
           f"(config {plan.config_hash})"]
    out += [f"  {node} (host {plan.hosts.get(node, '?')}): facts {src}"
            for node, src in plan.facts_source.items()]
    out += [f"  {note}" for note in plan.notes]
    for number, step in enumerate(plan.steps, 1):
        out.append(f"\n{number}. {step.name}: {step.title}")
        for node, actions in step.actions.items():
            for action in actions:
                text = action.render()
                if isinstance(action, WriteFile) and action.secret:
                    text += "  [secret file]"
                out.append(f"   [{node}] {text}")
        for node, env in step.env.items():
            shown = scrub(env, secrets)
            out.append(f"   [{node}] env: " + " ".join(f"{k}={v}" for k, v in sorted(shown.items())))
        for action in step.controller:
            out.append(f"   [controller] {action.render()}")
    if plan.undo:
        out.append("\non failure or Ctrl-C, undo:")
        for step in plan.undo:
            for node, actions in step.actions.items():
                out += [f"   [{node}] {a.render()}" for a in actions]
    return scrub("\n".join(out), secrets)


def copy_route_lines(cfg: Config, facts: dict[str, NodeFacts]) -> list[str]:
    """Where `inv sync` and `inv build` would send each worker its copies, or why they won't."""
    nodes = cfg.nodes[:nodes_needed(cfg.doc)]
    if len(nodes) < 2:
        return []
    head, lan = nodes[0]["name"], lan_allowed(cfg.cluster)
    out = ["copies to the workers (inv sync, inv build):"]
    for node in nodes[1:]:
        if node["name"] not in facts:
            out.append(f"  {head} -> {node['name']}: unknown (no facts)")
            continue
        try:
            route = copy_route(facts[node["name"]], node, cfg.cluster["network"], over_lan=lan)
        except SparkopsError as exc:
            out.append(f"  {head} -> {node['name']}: refused: {exc.message}\n    fix: {exc.fix}")
            continue
        note = " (over the LAN: cluster.sync.over_lan)" if route.over_lan else ""
        out.append(f"  {head} -> {node['name']}: {route.address}, {route.why}{note}")
    return out
