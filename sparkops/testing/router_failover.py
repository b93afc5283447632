"""One failover trial of the replicas layout's router: two synthetic replicas (own processes)
behind a router, a few requests through it, one replica killed (SIGKILL: connections refused at
once, as when a replica's vLLM dies), then requests one after the other; which status did each
get? Used by tests/test_router_failover.py and benchmarks/router_failover.py.

`router_argv(workers, port, metrics_port)` is how the router under test starts: the replicas
layout's own (sparkops/node_scripts/router.py) or vllm-router's command with its defaults.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-router-failover"

RouterArgv = Callable[[list[str], int, int], list[str]]


@dataclass(frozen=True)
class Trial:
    killed: int  # which replica (0 or 1 in the router's worker list)
    codes: list[int]  # the status of each request after the kill, in order
    ms: list[int]  # how long each took

    @property
    def failed(self) -> int:
        return sum(code != 200 for code in self.codes)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def own_router(venv: Path, policy: str = "power_of_two") -> RouterArgv:
    """The router as the replicas layout starts it (the key comes from VLLM_API_KEY)."""
    script = (ROOT / "sparkops/node_scripts/router.py").read_text()
    return lambda workers, port, metrics: [
        str(venv / "bin/python3"), "-c", script, "--host", "127.0.0.1", "--port", str(port), "--policy", policy,
        "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics), "--startup-timeout", "60",
        "--health-interval", "5", *workers]


def vllm_router_defaults(venv: Path, policy: str = "power_of_two") -> RouterArgv:
    """vllm-router's own command, its retry and circuit-breaker defaults, the same health checks."""
    return lambda workers, port, metrics: [
        str(venv / "bin/vllm-router"), "--host", "127.0.0.1", "--port", str(port), "--policy", policy,
        "--prometheus-host", "127.0.0.1", "--prometheus-port", str(metrics), "--api-key", KEY,
        "--worker-startup-check-interval", "1", "--health-check-interval-secs", "5",
        "--health-failure-threshold", "2", "--worker-urls", *workers]


def _replica() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "sparkops.testing.synthetic_server", "--port", "0",
                             "--ttft-ms", "5", "--itl-ms", "1"], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout is not None  # stdout=PIPE
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"the synthetic replica did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}"


def _chat(url: str, text: str) -> tuple[int, int]:
    t0 = time.monotonic()
    r = requests.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                      json={"model": "synthetic", "max_tokens": 4, "messages": [{"role": "user", "content": text}]})
    return r.status_code, round((time.monotonic() - t0) * 1000)


def trial(router_argv: RouterArgv, killed: int, requests_after: int = 20) -> Trial:
    replicas = [_replica(), _replica()]
    port, metrics = free_port(), free_port()
    router = subprocess.Popen(router_argv([url for _, url in replicas], port, metrics),
                              env=os.environ | {"VLLM_API_KEY": KEY}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or router.poll() is not None:
                raise RuntimeError("the router did not answer /health within 60 s")
            time.sleep(0.1)
        for i in range(4):  # both replicas in use before one dies
            code, _ = _chat(url, f"warm-up {i}")
            if code != 200:
                raise RuntimeError(f"warm-up request {i} through the router got HTTP {code}")
        proc = replicas[killed][0]
        proc.kill()
        proc.wait()
        # Prompts that share no prefix, as users' do.
        got = [_chat(url, f"{uuid.uuid4().hex} question {i}") for i in range(requests_after)]
        return Trial(killed, [c for c, _ in got], [ms for _, ms in got])
    finally:
        for proc in [router] + [p for p, _ in replicas]:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
