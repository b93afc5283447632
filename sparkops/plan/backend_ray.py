"""Backend `ray`: a Ray cluster (head, then workers), a wait until every node has joined,
then `vllm serve --distributed-executor-backend ray` on the head as a Ray driver."""
from __future__ import annotations

import posixpath

from sparkops.plan.context import NodeContext
from sparkops.plan.steps import Poll, Step
from sparkops.plan.vllm_args import serve_argv

name = "ray"
SERVICES = ("vllm", "ray")
SPANS_NODES = True  # its engine(s) talk over the cable

# Ray puts unix sockets at <temp-dir>/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store and
# refuses a path over 107 bytes (AF_UNIX): with a 7-digit pid that leaves the temp dir 43.
RAY_TEMP_DIR_MAX = 107 - len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")


def ray_temp_dir(ctx: NodeContext) -> str:
    """<work_dir>/ray, per node (nodes sharing a filesystem must not share Ray's sockets); where
    that is too long for Ray's sockets (a long home), a directory in the node's own /tmp."""
    path = posixpath.join(ctx.work_dir, "ray")
    if len(path.encode()) <= RAY_TEMP_DIR_MAX:
        return path
    user = ctx.node.get("user") or posixpath.basename(ctx.facts.home or "") or "user"
    return f"/tmp/sparkops-ray-{user}"[:RAY_TEMP_DIR_MAX]


def launch(ctxs: list[NodeContext], roce: dict, runtime, env_of) -> list[Step]:
    cfg = ctxs[0].cfg
    start = runtime.start
    head = ctxs[0]
    port = cfg.cluster["ports"]["ray"]
    head_ip = roce[head.name].ip if head.name in roce else "127.0.0.1"
    address = f"{head_ip}:{port}"

    def ray_argv(ctx: NodeContext) -> list[str]:
        # `--block`: `ray start` stays the service's process (service.sh tracks and stops its session).
        common = ["--node-ip-address", roce[ctx.name].ip if ctx.name in roce else "127.0.0.1",
                  "--temp-dir", ray_temp_dir(ctx), "--block"]
        if ctx.is_head:
            return ["ray", "start", "--head", "--port", str(port), "--dashboard-host", "127.0.0.1",
                    "--dashboard-port", str(cfg.cluster["ports"]["ray_dashboard"]), *common]
        return ["ray", "start", "--address", address, *common]

    def ray_env(ctx: NodeContext) -> dict:
        return env_of(ctx, "ray")

    steps = [Step("start-ray-head", "start the Ray head", {head.name: tuple(start(head, "ray", ray_argv(head)))},
                  env={head.name: ray_env(head)}, service="ray")]
    workers = ctxs[1:]
    if workers:
        steps.append(Step("start-ray-workers", f"join {len(workers)} worker(s) to Ray",
                          {w.name: tuple(start(w, "ray", ray_argv(w))) for w in workers},
                          env={w.name: ray_env(w) for w in workers}, service="ray"))
    status = runtime.exec_argv(head, "ray", ["ray", "status", "--address", address])
    steps.append(Step("wait-ray", f"wait until Ray counts {len(ctxs)} node(s)",
                      {head.name: (Poll(tuple(status), "ray-nodes", len(ctxs), 180, 2),)}))
    argv = serve_argv(cfg) + ["--distributed-executor-backend", "ray"]
    env = env_of(head, "vllm") | {"RAY_ADDRESS": address}
    steps.append(Step("start-vllm", "start vLLM on the head as a Ray driver",
                      {head.name: tuple(start(head, "vllm", argv))}, env={head.name: env}, service="vllm"))
    return steps
