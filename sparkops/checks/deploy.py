"""Checks of one profile on the cluster (pure): the model in every node's cache, and whether
it fits a node's memory. They run when a profile is named (`inv check --profile`, `up`)."""
from __future__ import annotations

from ..config import Config
from ..config.memfit import estimate
from ..plan.context import NodeContext
from .result import CLUSTER, FAIL, OK, WARN, Check


def model(cfg: Config, ctxs: list[NodeContext], profile_flag: str) -> list[Check]:
    repo = cfg.model["repo"]
    out = []
    for c in ctxs:
        present = c.facts.model_present
        if present is False:
            fix = (f"`inv sync {profile_flag}` copies it from the head (`inv download {profile_flag}` "
                   "first if the head lacks it too)" if not c.is_head else f"`inv download {profile_flag}`")
            out.append(Check("model", "deploy", c.name, FAIL, f"model {repo} is not in {c.hf_home}",
                             {"repo": repo, "hf_home": c.hf_home}, fix))
        elif present:
            out.append(Check("model", "deploy", c.name, OK, f"{repo} is in {c.hf_home}",
                             {"repo": repo, "hf_home": c.hf_home}))
    return out


def memory_fit(cfg: Config, ctxs: list[NodeContext]) -> list[Check]:
    memories = [c.facts.memory_gib for c in ctxs if c.facts.memory_gib]
    if not memories or cfg.cluster["accelerator"] != "nvidia":
        return []
    fit = estimate(cfg.doc, min(memories))
    evidence = fit.as_dict()
    if fit.verdict == "does-not-fit":
        return [Check("memory.fit", "deploy", ctxs[0].name, FAIL, f"the model does not fit: {fit.reason}",
                      evidence, "raise tensor_parallel, lower max_model_len, or pick a smaller model")]
    status = WARN if fit.verdict == "tight" else OK
    return [Check("memory.fit", "deploy", CLUSTER, status, f"{cfg.profile}: {fit.verdict}, {fit.reason}",
                  evidence, "lower max_model_len or gpu_memory_utilization" if status == WARN else "")]


def checks(cfg: Config, ctxs: list[NodeContext], profile_flag: str) -> list[Check]:
    return [*model(cfg, ctxs, profile_flag), *memory_fit(cfg, ctxs)]
