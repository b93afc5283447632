"""Backend `mp`: vLLM's own multi-node mode. Rank 0 on the head serves the API; every
worker runs the same command with its rank and `--headless`. Workers start first and wait
for the head at the rendezvous address. A headless worker does not always exit when its head
dies (seen with vLLM 0.32), so `down` and every rollback stop each node's services explicitly."""
from __future__ import annotations

from sparkops.plan.context import NodeContext
from sparkops.plan.steps import Step
from sparkops.plan.vllm_args import serve_argv

name = "mp"
SERVICES = ("vllm",)
SPANS_NODES = True  # its engine(s) talk over the cable


def launch(ctxs: list[NodeContext], roce: dict, runtime, env_of) -> list[Step]:
    cfg = ctxs[0].cfg
    start = runtime.start
    base = serve_argv(cfg)
    if len(ctxs) == 1:
        head = ctxs[0]
        return [Step("start-head", "start vLLM on the head", {head.name: tuple(start(head, "vllm", base))},
                     env={head.name: env_of(head, "vllm")}, service="vllm")]
    head_ip = roce[ctxs[0].name].ip
    multi = ["--distributed-executor-backend", "mp", "--nnodes", str(len(ctxs)),
             "--master-addr", head_ip, "--master-port", str(cfg.cluster["ports"]["rendezvous"])]

    def argv(ctx: NodeContext) -> list[str]:
        return base + multi + ["--node-rank", str(ctx.rank)] + ([] if ctx.is_head else ["--headless"])

    workers = ctxs[1:]
    return [
        Step("start-workers", f"start headless vLLM ranks on {len(workers)} worker(s)",
             {w.name: tuple(start(w, "vllm", argv(w))) for w in workers},
             env={w.name: env_of(w, "vllm") for w in workers}, service="vllm"),
        Step("start-head", "start vLLM rank 0 (API) on the head",
             {ctxs[0].name: tuple(start(ctxs[0], "vllm", argv(ctxs[0])))},
             env={ctxs[0].name: env_of(ctxs[0], "vllm")}, service="vllm"),
    ]
