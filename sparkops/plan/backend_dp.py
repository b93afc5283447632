"""Layout `dp`: replicas of the model, each inside one node (vLLM's data parallel). The head
runs the API server, its own replica(s) and vLLM's load balancer; every other node runs its
replicas `--headless` and registers with the head at the data-parallel RPC address. One API
on the head's port sends each request to one replica (the least loaded).

For a dense model the replicas are independent engines. For a mixture-of-experts model vLLM
keeps the ranks in step and shares the expert layers over the cluster's network (each step
of one replica waits for the others), which is not the same as separate servers.
"""
from __future__ import annotations

from sparkops.config.memfit import replicas_per_node
from sparkops.plan.context import NodeContext
from sparkops.plan.steps import Step
from sparkops.plan.vllm_args import serve_argv

name = "dp"
SERVICES = ("vllm",)
SPANS_NODES = True  # its engine(s) talk over the cable


def replica_ranks(ctxs: list[NodeContext]) -> dict[str, list[int]]:
    """Node name -> the data-parallel ranks (vLLM's engine indexes) it runs, head first."""
    doc = ctxs[0].cfg.doc
    dp, per = doc["serving"]["data_parallel"], replicas_per_node(doc)
    return {c.name: list(range(i * per, min(dp, (i + 1) * per))) for i, c in enumerate(ctxs)}


def launch(ctxs: list[NodeContext], roce: dict, runtime, env_of) -> list[Step]:
    cfg = ctxs[0].cfg
    start = runtime.start
    ranks = replica_ranks(ctxs)
    head = ctxs[0]
    # Single node: the replicas are local, vLLM needs no address.
    address = (["--data-parallel-address", roce[head.name].ip,
                "--data-parallel-rpc-port", str(cfg.cluster["ports"]["rendezvous"])] if len(ctxs) > 1 else [])

    def argv(ctx: NodeContext) -> list[str]:
        mine = ranks[ctx.name]
        out = serve_argv(cfg) + ["--data-parallel-size", str(cfg.serving["data_parallel"]),
                                 "--data-parallel-size-local", str(len(mine))] + address
        return out if ctx.is_head else out + ["--data-parallel-start-rank", str(mine[0]), "--headless"]

    workers = ctxs[1:]
    steps = [Step("start-workers", f"start headless replicas on {len(workers)} worker(s)",
                  {w.name: tuple(start(w, "vllm", argv(w))) for w in workers},
                  env={w.name: env_of(w, "vllm") for w in workers}, service="vllm")] if workers else []
    # Workers first, as in the mp backend: a headless replica connects to the head's RPC
    # address and waits for it (vLLM allows minutes), and `up` then watches the head first.
    return steps + [Step("start-head", f"start vLLM's API and replica(s) {ranks[head.name]} on the head",
                         {head.name: tuple(start(head, "vllm", argv(head)))},
                         env={head.name: env_of(head, "vllm")}, service="vllm")]
