"""Native runtime: vLLM (and Ray) from a virtualenv on each node, detached by service.sh."""
from __future__ import annotations

import posixpath
from importlib import resources

from sparkops.plan.context import NodeContext
from sparkops.plan.steps import Run, WriteFile

name = "native"


def _script(ctx: NodeContext) -> str:
    return posixpath.join(ctx.run_dir, "service.sh")


def program(ctx: NodeContext, argv: list[str]) -> list[str]:
    """`vllm` and `ray` come from the cluster's virtualenv on the node."""
    return [posixpath.join(ctx.venv, "bin", argv[0]), *argv[1:]]


def litellm(ctx: NodeContext) -> str:
    """LiteLLM's proxy (a stack's router), from its own virtualenv on the node."""
    return posixpath.join(ctx.path(ctx.cfg.cluster["litellm_venv"]), "bin", "litellm")


def service_env(ctx: NodeContext) -> dict[str, str]:
    return {"HF_HOME": ctx.hf_home, "VLLM_CACHE_ROOT": posixpath.join(ctx.cache_dir, "vllm"),
            "PATH": f"{posixpath.join(ctx.venv, 'bin')}:/usr/local/bin:/usr/bin:/bin"}


def prepare(ctx: NodeContext) -> list:
    text = resources.files("sparkops.node_scripts").joinpath("service.sh").read_text()
    return [Run(("mkdir", "-p", ctx.run_dir, ctx.log_dir, ctx.hf_home, ctx.cache_dir), 30),
            WriteFile(_script(ctx), text, 0o755)]


def start(ctx: NodeContext, service: str, argv: list[str]) -> list:
    return [Run(("sh", _script(ctx), "start", service, ctx.run_dir, ctx.log_file(service), "--",
                 *program(ctx, argv)), 60)]


def stop(ctx: NodeContext, service: str) -> Run:
    # 2 (dash) / 127 (bash): no service.sh yet, so sparkops never started anything on this node.
    return Run(("sh", _script(ctx), "stop", service, ctx.run_dir, "20"), 60, ok_exit=(0, 2, 127))


def status_argv(ctx: NodeContext, service: str) -> tuple[str, ...]:
    return ("sh", _script(ctx), "status", service, ctx.run_dir)


def exec_argv(ctx: NodeContext, service: str, argv: list[str]) -> tuple[str, ...]:
    return tuple(program(ctx, argv))


def log_argv(ctx: NodeContext, service: str, lines: int, follow: bool = False) -> tuple[str, ...]:
    return ("tail", "-n", str(lines), *(("-F",) if follow else ()), ctx.log_file(service))


def tool_argv(ctx: NodeContext, argv: list[str]) -> tuple[str, ...]:
    return tuple(program(ctx, list(argv)))
