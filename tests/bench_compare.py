"""Both engines against one server, for the agreement tests (local and sim clusters)."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

from sparkops.plan import api_url

AGREE = 0.10  # the bar: TTFT, TPOT and output throughput within 10%
KEYS = ("mean_ttft_ms", "mean_tpot_ms", "output_throughput")
ROOT = Path(__file__).resolve().parent.parent
# Server-side queueing makes TTFT a server quantity: with 2 sequences in flight and the clients
# keeping more busy, every TTFT includes waiting for a slot (~100 ms on the smoke model). Without
# it TTFT is ~10 ms, and vLLM's aiohttp client alone adds 2-3 ms to each (benchmarks/
# client_overhead.py measures that against known timings): a 25% gap that is the clients' own.
SERVER_SETS = ("serving.max_num_seqs=2",)


def calm_vllm_servers() -> list[int]:
    """Give the CPU vLLM servers' autogroups nice 10, so that their spin-waiting threads
    cannot starve either client on a 2-core machine.

    vLLM's CPU build busy-loops on its shm queues (EngineCore waiting for the worker, the
    worker waiting for work, `sched_yield` in a loop, and 1 s more after each run). With the
    kernel's autogroups (one per session: the server is a daemon, the client is not) a yield
    inside the server's group hands no time to the client's, which then waits up to ~340 ms
    for a CPU: its chunks queue in the socket and get stamped together (measured with
    schedstat; one run in three). Nice only weighs the groups: the server keeps every cycle
    the clients leave idle. Returns the pids whose groups were changed.
    """
    done = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            comm = (proc / "comm").read_text().strip()
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            if comm.startswith("VLLM::") or (b"serve" in cmd and any(a.endswith(b"vllm") for a in cmd[:3])):
                (proc / "autogroup").write_text("10")
                done.append(int(proc.name))
        except OSError:  # gone, or a kernel without autogroups
            continue
    return done


def pin_vllm_servers(cpu: int) -> list[int]:
    """Every thread of the CPU vLLM servers onto `cpu` (the clients then get the others): vLLM's
    CPU build spins its OpenMP threads at each step's barrier, so a client sharing their core
    slows the server itself, and by more for a busier client, so two clients would measure two
    different servers."""
    pids = calm_vllm_servers()
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                os.sched_setaffinity(int(task.name), {cpu})
            except OSError:  # a thread that ended meanwhile
                continue
    return pids


def decode_counters(api: str) -> dict[str, float]:
    """vLLM's own decode accounting (Prometheus): tokens generated, requests, decode seconds."""
    keys = ("vllm:generation_tokens_total", "vllm:request_decode_time_seconds_count",
            "vllm:request_decode_time_seconds_sum")
    out = dict.fromkeys(keys, 0.0)
    for line in requests.get(f"{api}/metrics", timeout=10).text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in out:
            out[name] += float(line.rsplit(" ", 1)[1])
    return out


def server_tg(before: dict[str, float], after: dict[str, float]) -> float:
    """The tokens after each request's first over the decode time vLLM measured itself, for
    the requests finished between two decode_counters() readings."""
    d = {k: after[k] - before[k] for k in after}
    n = d["vllm:request_decode_time_seconds_count"]
    return (d["vllm:generation_tokens_total"] - n) / d["vllm:request_decode_time_seconds_sum"]


def gap(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b))


def _bench_argv(cfg, sets, engine, out, n, c, m, url):
    argv = [sys.executable, "-m", "invoke", "bench", "--profile", cfg.profile, "--cluster", cfg.cluster_name,
            "-n", str(n), "-c", str(c), "-m", str(m), "--engine", engine, "--output", str(out),
            *(["--url", url] if url else [])]
    for s in sets:
        argv += ["--set", s]
    return argv


def _finish(proc: subprocess.Popen, argv: list[str]) -> None:
    try:
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (argv, out[-2000:], err[-3000:])


def served_requests(api: str) -> float:
    """vLLM's count of finished requests (its Prometheus counter, every finish reason)."""
    text = requests.get(f"{api}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:request_success_total"))


def _run_together(cfg, sets, workdir: Path, i: int, n: int, c: int, m: int) -> dict[str, Path]:
    """Both engines at once, each with its own `c` requests in flight: `vllm bench serve`
    first (it spends ~15 s importing vLLM), and ours from the moment its single test request
    has finished, when its measured run begins."""
    api = api_url(cfg)
    outs = {e: workdir / f"{e}-{i}.json" for e in ("vllm", "sparkops")}
    argvs = {e: _bench_argv(cfg, sets, e, outs[e], n, c, m, None) for e in outs}
    before = served_requests(api)
    theirs = subprocess.Popen(argvs["vllm"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while served_requests(api) < before + 1:
            if theirs.poll() is not None:
                _finish(theirs, argvs["vllm"])  # a failure: its exit status and output say why
                raise AssertionError("vllm bench serve ended before its measured run")
            assert time.monotonic() < deadline, "vllm bench serve finished no request within 300 s"
            time.sleep(0.02)
        _finish(subprocess.Popen(argvs["sparkops"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True), argvs["sparkops"])
    except BaseException:
        theirs.kill()
        raise
    _finish(theirs, argvs["vllm"])
    return outs


def compare_engines(cfg, sets: list[str], workdir: Path, *, n: int, c: int, m: int, rounds: int = 2,
                    url: str | None = None, together: bool = False) -> dict:
    """`inv bench` with sparkops' client and with `--engine vllm`, `rounds` times each, on the
    same server, prompts, concurrency and max_tokens; compare means. Both run as `inv bench`
    processes, as a user runs them.

    In turn (alternating who goes first) against a server of fixed speed (the synthetic one).
    `together` against real vLLM: on this 2-CPU VM the server's own speed moves by +-10% from
    one run to the next with what the hypervisor takes (a run with 2 s of steal time in 13 s
    had a 30% longer TPOT), so runs in turn would compare two different servers. Run at once,
    both clients measure the same server at the same moments, after a round that is not
    counted."""
    docs = {"sparkops": [], "vllm": []}
    if together:
        # One round first, not counted: the first time a real vLLM sees both clients' load it
        # is still warming up (new batch shapes); in one CI run every TTFT of that round was
        # 25 % longer than the next's, and one client's TPOT 24 % longer than the other's.
        _run_together(cfg, sets, workdir, -1, n, c, m)
    for i in range(rounds):
        if together:
            outs = _run_together(cfg, sets, workdir, i, n, c, m)
        else:
            outs = {}
            for engine in (("sparkops", "vllm") if i % 2 == 0 else ("vllm", "sparkops")):
                outs[engine] = workdir / f"{engine}-{i}.json"
                argv = _bench_argv(cfg, sets, engine, outs[engine], n, c, m, url)
                _finish(subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True), argv)
        for engine, out in outs.items():
            docs[engine].append(json.loads(out.read_text()))
    means = {e: {k: statistics.mean(d["metrics"][k] for d in ds) for k in KEYS + ("mean_ttft_content_ms",)
                 if all(d["metrics"].get(k) is not None for d in ds)}
             for e, ds in docs.items()}
    gaps = {k: gap(means["sparkops"][k], means["vllm"][k]) for k in KEYS}
    runs = {e: [{k: round(d["metrics"][k], 2) for k in KEYS} for d in ds] for e, ds in docs.items()}
    print(f"engines on {url or 'the cluster'}{' together' if together else ''}: runs {runs}; "
          f"means {means}; gaps {gaps}")
    return {"docs": docs, "means": means, "gaps": gaps}


def assert_same_work(docs: dict, n: int, m: int) -> None:
    for engine, runs in docs.items():
        for doc in runs:
            assert doc["status"] == "ok", (engine, doc["reason"])
            met = doc["metrics"]
            assert (met["completed"], met["failed"], met["total_output_tokens"]) == (n, 0, n * m), (engine, met)
    for doc in docs["sparkops"]:
        # kernel receive times in use, so a client stall cannot pass for server latency ("mixed":
        # a read whose kernel time was missing or implausible used the loop's; one CI run saw it)
        assert doc["metrics"]["client_timestamps"] in ("kernel", "mixed"), doc["metrics"]
