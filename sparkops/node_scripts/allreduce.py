#!/usr/bin/env python3
"""All-reduce bandwidth across ranks with torch.distributed (stdlib + torch only).

Copied to each node and run there by `inv check --nccl`, inside the cluster's runtime (the
virtualenv's python, or the image via `docker run --rm`), with the environment `up` uses.
One rank per node (RANK/WORLD_SIZE/LOCAL_RANK from the flags or the environment, as torchrun
sets them), or `--local-ranks K` to start K ranks on this host (one per GPU). Rendezvous is
MASTER_ADDR:MASTER_PORT (flags or environment).

Rank 0 prints one JSON line, {"sparkops_allreduce": 1, ...}: per message size the slowest
rank's mean time, algbw = bytes / time and busbw = algbw * 2(n-1)/n (nccl-tests' definitions,
GB/s = 1e9 bytes/s), and whether the sums were right. NCCL's own INFO lines (which transport
carried the data) go wherever NCCL_DEBUG sends them, stdout by default.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import timedelta

MARK = "sparkops_allreduce"
ENV_MARK = "sparkops_allreduce_env"
DTYPES = {"float32": 4, "float16": 2, "bfloat16": 2}


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def sizes_between(low: int, high: int, factor: int) -> list[int]:
    out, size = [], low
    while size <= high:
        out.append(size)
        size *= factor
    return out


def bus_factor(world: int) -> float:
    return 2 * (world - 1) / world if world > 1 else 0.0


def options(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=("auto", "nccl", "gloo"), default="auto",
                   help="nccl on NVIDIA GPUs, gloo on CPU; auto picks by torch.cuda.is_available()")
    p.add_argument("--min-bytes", default="1M", help="smallest message (default 1M)")
    p.add_argument("--max-bytes", default="256M", help="largest message (default 256M)")
    p.add_argument("--factor", type=int, default=4, help="size multiplier between steps (default 4)")
    p.add_argument("--iters", type=int, default=20, help="timed iterations per size (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed iterations per size (default 5)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--rank", type=int, help="this process's rank (default $RANK)")
    p.add_argument("--world-size", type=int, help="ranks in all (default $WORLD_SIZE)")
    p.add_argument("--local-rank", type=int, help="GPU index on this host (default $LOCAL_RANK)")
    p.add_argument("--master-addr", help="rank 0's address (default $MASTER_ADDR)")
    p.add_argument("--master-port", type=int, help="rendezvous port (default $MASTER_PORT)")
    p.add_argument("--local-ranks", type=int, default=0,
                   help="start this many ranks here, one per GPU (with --node-rank/--nnodes)")
    p.add_argument("--node-rank", type=int, default=0, help="with --local-ranks: this host's index")
    p.add_argument("--nnodes", type=int, default=1, help="with --local-ranks: hosts in all")
    p.add_argument("--timeout", type=float, default=120,
                   help="seconds for rendezvous and each collective (default 120)")
    p.add_argument("--deadline", type=float, default=900,
                   help="exit after this many seconds whatever happens (default 900)")
    p.add_argument("--echo-env", default="",
                   help="comma-separated variable names: each rank prints their values as it sees "
                        "them (proof that the environment it was given reached it)")
    return p.parse_args(argv)


def spawn_local(opts: argparse.Namespace, argv: list[str]) -> int:
    """--local-ranks K: K copies of this script, ranks node_rank*K .. node_rank*K+K-1."""
    k = opts.local_ranks
    child_argv, skip = [], False
    for item in argv:  # the children get every flag but --local-ranks
        if skip or item.startswith("--local-ranks="):
            skip = False
            continue
        if item == "--local-ranks":
            skip = True
            continue
        child_argv.append(item)
    procs = []
    for local in range(k):
        env = dict(os.environ, RANK=str(opts.node_rank * k + local), LOCAL_RANK=str(local),
                   WORLD_SIZE=str(opts.nnodes * k), LOCAL_WORLD_SIZE=str(k))
        procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), *child_argv], env=env))
    worst = 0
    pending = list(procs)
    while pending:
        for proc in list(pending):
            rc = proc.poll()
            if rc is None:
                continue
            pending.remove(proc)
            if rc != 0:  # one rank died: the others would wait for it until their timeout
                worst = worst or rc
                for other in pending:
                    other.terminate()
        time.sleep(0.05)
    return worst


def main(argv: list[str]) -> int:
    opts = options(argv)
    signal.signal(signal.SIGALRM, lambda *_: os._exit(124))
    signal.alarm(max(1, int(opts.deadline)))
    for flag, var in (("master_addr", "MASTER_ADDR"), ("master_port", "MASTER_PORT")):
        if getattr(opts, flag) is not None:
            os.environ[var] = str(getattr(opts, flag))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29501")
    if opts.local_ranks:
        return spawn_local(opts, argv)
    rank = opts.rank if opts.rank is not None else int(os.environ.get("RANK", "0"))
    if opts.echo_env:
        names = [n for n in opts.echo_env.split(",") if n]
        print(json.dumps({ENV_MARK: 1, "rank": rank, "hostname": platform.node(),
                          "env": {n: os.environ.get(n) for n in names}}), flush=True)

    import torch
    import torch.distributed as dist

    world = opts.world_size if opts.world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    local = opts.local_rank if opts.local_rank is not None else int(os.environ.get("LOCAL_RANK", "0"))
    backend = opts.backend
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    dtype = getattr(torch, opts.dtype)
    if backend == "nccl":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    started = time.time()
    kwargs = {"backend": backend, "init_method": "env://", "rank": rank, "world_size": world,
              "timeout": timedelta(seconds=opts.timeout)}
    if backend == "nccl":
        kwargs["device_id"] = device  # eager NCCL init: a broken transport shows up here
    try:
        dist.init_process_group(**kwargs)
    except TypeError:  # torch older than 2.3: no device_id
        kwargs.pop("device_id", None)
        dist.init_process_group(**kwargs)
    rendezvous_s = time.time() - started

    results = []
    try:
        for size in sizes_between(parse_size(opts.min_bytes), parse_size(opts.max_bytes), opts.factor):
            count = max(1, size // DTYPES[opts.dtype])
            nbytes = count * DTYPES[opts.dtype]
            data = torch.full((count,), float(rank + 1), dtype=dtype, device=device)
            dist.all_reduce(data)
            sync()
            expected = world * (world + 1) / 2
            correct = bool(torch.all(data == expected).item())
            for _ in range(opts.warmup):
                dist.all_reduce(data)
            sync()
            dist.barrier()
            t0 = time.perf_counter()
            for _ in range(opts.iters):
                dist.all_reduce(data)
            sync()
            mean = (time.perf_counter() - t0) / max(1, opts.iters)
            slowest = torch.tensor([mean], dtype=torch.float64, device=device)
            dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
            seconds = float(slowest.item())
            ok = torch.tensor([1 if correct else 0], dtype=torch.int32, device=device)
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
            algbw = nbytes / seconds / 1e9
            results.append({"bytes": nbytes, "count": count, "iters": opts.iters,
                            "time_us": round(seconds * 1e6, 2), "algbw_gbps": round(algbw, 4),
                            "busbw_gbps": round(algbw * bus_factor(world), 4),
                            "correct": bool(ok.item())})
            del data
    finally:
        done = time.time()
        dist.destroy_process_group()

    if rank == 0:
        nccl = None
        if backend == "nccl":
            try:
                nccl = ".".join(str(v) for v in torch.cuda.nccl.version())
            except Exception:  # noqa: BLE001 - the version is evidence, not a requirement
                nccl = None
        env = {k: v for k, v in sorted(os.environ.items())
               if k.startswith(("NCCL_", "GLOO_", "MASTER_", "TORCH_NCCL", "CUDA_VISIBLE"))}
        print(json.dumps({
            MARK: 1, "backend": backend, "world_size": world, "dtype": opts.dtype,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "hostname": platform.node(), "torch": torch.__version__, "nccl_version": nccl,
            "master": f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
            "rendezvous_s": round(rendezvous_s, 3), "seconds": round(done - started, 3),
            "warmup": opts.warmup, "iters": opts.iters, "env": env, "results": results,
            "peak_busbw_gbps": max((r["busbw_gbps"] for r in results), default=0.0),
        }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
