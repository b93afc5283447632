"""`inv install-vllm`: vLLM's CPU build in the cluster's virtualenv on every node (native
runtime without GPUs: laptops, CI, the test cluster). The installer is one stdlib-only file,
copied to each node and run there; nodes sharing a filesystem install once."""
from __future__ import annotations

import posixpath
from importlib import resources

from .apply import run_step_on_nodes
from .config import Config
from .lifecycle import connect, gather
from .plan import contexts
from .plan.model import Run, Step, WriteFile


def install_vllm_cpu(cfg: Config, progress) -> None:
    source = resources.files("sparkops").joinpath("vllm_cpu.py").read_text()
    group = connect(cfg)
    try:
        facts, down = gather(cfg, group)
        if down:
            raise next(iter(down.values()))
        # One node at a time: nodes that share the venv's filesystem must not race, and the
        # installer is a fast no-op where the venv is already complete.
        ray = ("--with-ray",) if cfg.doc["distributed"]["backend"] == "ray" else ()
        for ctx in contexts(cfg, facts, all_nodes=True):
            script = posixpath.join(ctx.run_dir, "vllm_cpu.py")
            step = Step("install-vllm", f"vLLM CPU build into {ctx.venv}", {ctx.name: (
                Run(("mkdir", "-p", ctx.run_dir), 30), WriteFile(script, source, 0o644),
                Run(("python3", script, "--venv", ctx.venv, *ray), 1800))})
            progress.step(ctx.rank + 1, len(group.conns), step.name, f"{step.title} on {ctx.name}")
            run_step_on_nodes(group, step, progress)
    finally:
        group.close()
