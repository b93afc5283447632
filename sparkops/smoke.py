"""`inv smoke-model`: build the tiny smoke model into every node's Hugging Face cache.

The generator is deterministic (fixed seeds, fixed corpus), so every node builds the very
same files offline; it runs with the Python that serves vLLM (the virtualenv, or the image).
"""
from __future__ import annotations

import posixpath
from importlib import resources

from .config import Config
from .facts.node import NodeFacts
from .plan import contexts
from .plan.context import CONTAINER_HF_HOME
from .plan.model import Plan, Run, Step, WriteFile

REPO_ID = "sparkops/smoke-tiny-llama"


def plan_smoke_model(cfg: Config, facts: dict[str, NodeFacts]) -> Plan:
    source = resources.files("sparkops").joinpath("smoke_model.py").read_text()
    actions = {}
    for ctx in contexts(cfg, facts, all_nodes=True):
        script = posixpath.join(ctx.run_dir, "smoke_model.py")
        if cfg.cluster["runtime"] == "docker":
            build = ("docker", "run", "--rm", "--network", "none",
                     "-v", f"{ctx.hf_home}:{CONTAINER_HF_HOME}", "-v", f"{script}:/tmp/smoke_model.py:ro",
                     *(a for m in cfg.cluster["docker"]["mounts"] for a in ("-v", m)),
                     "--entrypoint", "python3", cfg.cluster["image"], "/tmp/smoke_model.py",
                     "--hf-home", CONTAINER_HF_HOME, "--repo-id", REPO_ID)
        else:
            build = (posixpath.join(ctx.venv, "bin", "python"), script, "--hf-home", ctx.hf_home,
                     "--repo-id", REPO_ID)
        actions[ctx.name] = (Run(("mkdir", "-p", ctx.run_dir, ctx.hf_home), 30),
                             WriteFile(script, source, 0o644), Run(build, 600))
    step = Step("smoke-model", f"build {REPO_ID} into each node's Hugging Face cache", actions)
    return Plan("smoke-model", cfg.profile, cfg.cluster_name, cfg.config_hash(),
                {n: f.source for n, f in facts.items()}, (step,))


def build_everywhere(cfg: Config, progress) -> None:
    from .apply import run_step_on_nodes
    from .lifecycle import connect, gather
    group = connect(cfg)
    try:
        facts, down = gather(cfg, group)
        if down:
            raise next(iter(down.values()))
        plan = plan_smoke_model(cfg, facts)
        for step in plan.steps:
            progress.step(1, 1, step.name, step.title)
            run_step_on_nodes(group, step, progress)
    finally:
        group.close()
