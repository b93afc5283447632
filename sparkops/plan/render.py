"""Showing a plan to people (text) and programs (JSON), with every secret masked."""
from __future__ import annotations

import json

from sparkops.config import MASK
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
