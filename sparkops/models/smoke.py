"""`inv smoke-model`: build the tiny smoke model into every node's Hugging Face cache.

The generator is deterministic (fixed seeds, fixed corpus), so every node builds the very
same files offline; it runs with the Python that serves vLLM (the virtualenv, or the image).
"""
from __future__ import annotations

import posixpath

from sparkops.apply.run import run_step_on_nodes
from sparkops.base.progress import Progress
from sparkops.config import Config
from sparkops.config.image import local_name
from sparkops.facts.node import NodeFacts
from sparkops.facts.session import cluster_session
from sparkops.node_scripts import source
from sparkops.node_scripts.smoke_model import REPO_ID
from sparkops.plan import runtime_docker
from sparkops.plan.context import CONTAINER_HF_HOME, CONTAINER_HOME, contexts
from sparkops.plan.steps import Action, Plan, Run, Step, WriteFile

# The builder and the cache layout it writes with, side by side in one folder on the node.
SCRIPTS = ("smoke_model.py", "hf_cache.py")
CONTAINER_SCRIPTS = "/tmp/sparkops-smoke"


def plan_smoke_model(cfg: Config, facts: dict[str, NodeFacts]) -> Plan:
    actions: dict[str, tuple[Action, ...]] = {}
    for ctx in contexts(cfg, facts, all_nodes=True):
        folder = posixpath.join(ctx.run_dir, "smoke-model")
        mounted: tuple[str, ...] = ()
        if cfg.cluster["runtime"] == "docker":
            mounted = (ctx.container_home, *(posixpath.join(ctx.cache_dir, d) for d in runtime_docker.CACHES))
            # As the node's user, like the services: the cache it writes stays that user's.
            build: tuple[str, ...] = (
                "docker", "run", "--rm", "--network", "none", *runtime_docker.user_flags(ctx),
                "-e", f"HOME={CONTAINER_HOME}", *runtime_docker.cache_mounts(ctx),
                "-v", f"{folder}:{CONTAINER_SCRIPTS}:ro",
                *(a for m in cfg.cluster["docker"]["mounts"] for a in ("-v", m)),
                "--entrypoint", "python3", local_name(cfg.cluster["image"]), f"{CONTAINER_SCRIPTS}/smoke_model.py",
                "--hf-home", CONTAINER_HF_HOME, "--repo-id", REPO_ID)
        else:
            build = (posixpath.join(ctx.venv, "bin", "python"), posixpath.join(folder, "smoke_model.py"),
                     "--hf-home", ctx.hf_home, "--repo-id", REPO_ID)
        actions[ctx.name] = (Run(("mkdir", "-p", folder, ctx.hf_home, *mounted), 30),
                             *(WriteFile(posixpath.join(folder, name), source(name), 0o644) for name in SCRIPTS),
                             Run(build, 600))
    step = Step("smoke-model", f"build {REPO_ID} into each node's Hugging Face cache", actions)
    return Plan("smoke-model", cfg.profile, cfg.cluster_name, cfg.config_hash(),
                {n: f.source for n, f in facts.items()}, (step,))


def build_everywhere(cfg: Config, progress: Progress) -> None:
    with cluster_session(cfg) as session:
        session.require()
        plan = plan_smoke_model(cfg, session.facts)
        for step in plan.steps:
            progress.step(1, 1, step.name, step.title)
            run_step_on_nodes(session.group, step, progress)
