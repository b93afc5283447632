"""Is the API really serving? /health alone can stay green while the engine is deadlocked,
so ready means: /health answers 200, /v1/models lists the model, and one short completion
comes back. `wait_ready` waits for that while watching every started service stay alive."""
from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests

from sparkops.apply.vllm_metrics import per_engine, router_served
from sparkops.base.errors import StepError
from sparkops.base.progress import Progress
from sparkops.facts.service_log import explain
from sparkops.plan.steps import WaitReady
from sparkops.remote.group import NodeGroup


@dataclass(frozen=True)
class Probe:
    ready: bool
    stage: str  # "health", "models", "completion" or "ready"
    detail: str


def headers(api_key: str | None) -> dict:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def probe(url: str, model: str, api_key: str | None = None, timeout: float = 10.0,
          completion_timeout: float | None = None, health_path: str = "/health") -> Probe:
    """`completion_timeout` (default max(timeout, 60)): how long the 1-token request may take;
    `watch` sets it short, since an engine that hangs is what it must notice. `health_path`:
    where the server says it is alive without a key (vLLM's /health; a stack's router's other)."""
    stage = "health"
    try:
        health = requests.get(f"{url}{health_path}", timeout=timeout)
        if health.status_code != 200:
            return Probe(False, "health", f"{health_path} answered {health.status_code}")
        stage = "models"
        models = requests.get(f"{url}/v1/models", headers=headers(api_key), timeout=timeout)
        if models.status_code != 200:
            return Probe(False, "models", f"/v1/models answered {models.status_code}: {models.text[:200]}")
        ids = [m.get("id") for m in models.json().get("data", [])]
        if model not in ids:
            return Probe(False, "models", f"/v1/models lists {ids}, not {model!r}")
        stage = "completion"
        limit = completion_timeout or max(timeout, 60)
        t0 = time.monotonic()
        done = requests.post(f"{url}/v1/completions", headers=headers(api_key), timeout=limit,
                             json={"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0})
        if done.status_code != 200 or not done.json().get("choices"):
            return Probe(False, "completion", f"a 1-token completion answered {done.status_code}: {done.text[:200]}")
    except requests.Timeout:
        if stage == "completion":
            # /health and /v1/models answered: the engine, not the server, is what does not.
            return Probe(False, "completion", f"/health 200 and the model listed, but a 1-token completion "
                                              f"did not finish in {time.monotonic() - t0:.0f}s")
        return Probe(False, stage, f"no answer yet (timeout at {stage})")
    except requests.RequestException as exc:
        return Probe(False, stage, f"no answer yet ({type(exc).__name__})")
    except ValueError as exc:  # not JSON
        return Probe(False, stage, f"unexpected answer: {exc}")
    return Probe(True, "ready", "health 200, model listed, completion ok")


def serving_model(url: str, api_key: str | None = None, timeout: float = 2.0) -> list[str] | None:
    """The model ids an API lists, or None when nothing answers."""
    try:
        models = requests.get(f"{url}/v1/models", headers=headers(api_key), timeout=timeout)
        if models.status_code != 200:
            return None
        return [m.get("id") for m in models.json().get("data", [])]
    except (requests.RequestException, ValueError):
        return None


# The least time given to every replica to serve once the API is up (vLLM registers a headless
# replica before the API answers, so a healthy one takes seconds).
REPLICA_WAIT_S = 120.0


def wait_ready(group: NodeGroup, wait: WaitReady, api_key: str | None, progress: Progress) -> None:
    deadline = time.monotonic() + wait.timeout_s
    start = time.monotonic()
    last_said = 0.0
    while True:
        last = probe(wait.url, wait.model, api_key, health_path=wait.health_path)
        if last.ready:
            progress.say(f"      API ready after {time.monotonic() - start:.1f}s: {last.detail}")
            for model in wait.models:
                _serves(wait, model, api_key, progress, max(deadline, time.monotonic() + REPLICA_WAIT_S))
            if wait.replicas:
                _each_replica_serves(group, wait, api_key, progress, max(deadline, time.monotonic() + REPLICA_WAIT_S))
            return
        for item in wait.watch:
            res = group[item.node].run(item.status_argv, timeout=30)
            if not (res.ok and res.stdout.strip().startswith("running")):
                log = group[item.node].run(item.log_argv, timeout=30)
                raise StepError(f"{item.service} on {item.node} stopped while waiting for the API",
                                host=item.node, step="ready", **explain(log.stdout + log.stderr))
        now = time.monotonic()
        if now - last_said > 15:
            head = wait.watch[0]
            log = group[head.node].run(head.log_argv, timeout=30)
            tail = (log.stdout + log.stderr).rstrip().splitlines()[-1:]
            progress.say(f"      waiting {now - start:4.0f}s ({last.detail})"
                         + (f"  | {tail[0][:100]}" if tail else ""))
            last_said = now
        if now > deadline:
            head = wait.watch[0]
            log = group[head.node].run(head.log_argv, timeout=30)
            found = explain(log.stdout + log.stderr)
            found["fix"] = found["fix"] or ("raise serving.ready_timeout_s if the model is still "
                                            "loading; see `inv logs`")
            raise StepError(f"the API at {wait.url} was not ready within {wait.timeout_s:.0f}s "
                            f"(last check: {last.detail})", host=head.node, step="ready", **found)
        time.sleep(1.0)


def _serves(wait: WaitReady, model: str, api_key: str | None, progress: Progress, deadline: float) -> None:
    """A stack's other model, through the same API: listed, and a 1-token completion back."""
    while True:
        last = probe(wait.url, model, api_key, health_path=wait.health_path)
        if last.ready:
            progress.say(f"      {model!r} serves through {wait.url}: {last.detail}")
            return
        if time.monotonic() > deadline:
            raise StepError(f"the API at {wait.url} serves {wait.model!r} but not {model!r} ({last.detail})",
                            step="ready", fix="see `inv logs` (the router's, and that model's)")
        time.sleep(1.0)


def replica_requests(url: str, api_key: str | None = None) -> dict[int, float]:
    """Requests each data-parallel replica has finished (engine index -> count), from the
    API server's /metrics; {} when it does not answer."""
    try:
        text = requests.get(f"{url}/metrics", headers=headers(api_key), timeout=10).text
    except requests.RequestException:
        return {}
    return per_engine(text, "vllm:request_success_total")


def served_by_replica(wait: WaitReady, api_key: str | None = None) -> dict[int, float]:
    """Requests each replica of `wait` has answered (its index -> count): vLLM's per-engine
    counter (data parallel), or the router's per-replica one (layout replicas)."""
    if not wait.router_metrics:
        return replica_requests(wait.url, api_key)
    try:
        text = requests.get(wait.router_metrics, timeout=10).text
    except requests.RequestException:
        return {}
    by_url = router_served(text)
    return {index: by_url[url] for (index, _), url in zip(wait.replicas, wait.replica_urls) if url in by_url}


def _each_replica_serves(group: NodeGroup, wait: WaitReady, api_key: str | None, progress: Progress,
                         deadline: float) -> None:
    """Bursts of short completions, all at once so that vLLM's balancer spreads them, until
    every replica's own counter has moved: an API that answers could otherwise hide a worker
    whose replica never registered or cannot serve."""
    def one(i: int) -> None:
        try:
            # Prompts that share no prefix: a cache-aware router sends a request where its prefix
            # is cached, and would send a burst of alike prompts all to one replica.
            requests.post(f"{wait.url}/v1/completions", headers=headers(api_key), timeout=60,
                          json={"model": wait.model, "prompt": f"{uuid.uuid4().hex} replica check {i}",
                                "max_tokens": 1})
        except requests.RequestException:
            pass  # counted (or not) by the replica's counter, which is what is checked

    burst = 2 * len(wait.replicas)
    # Counted from now: a replica started again behind a router that kept running has the
    # count of its earlier life there.
    before = served_by_replica(wait, api_key)
    while True:
        served = served_by_replica(wait, api_key)
        idle = [(rank, node) for rank, node in wait.replicas if served.get(rank, 0) <= before.get(rank, 0)]
        if not idle:
            progress.say("      every replica served: " + ", ".join(
                f"{'replica' if wait.router_metrics else 'engine'} {rank} on {node} "
                f"{served[rank] - before.get(rank, 0):.0f} request(s)"
                for rank, node in wait.replicas))
            return
        if time.monotonic() > deadline:
            rank, node = idle[0]
            item = next((w for w in wait.watch if w.node == node and w.service.startswith("vllm")), wait.watch[0])
            log = group[item.node].run(item.log_argv, timeout=30)
            found = explain(log.stdout + log.stderr)
            found["fix"] = found["fix"] or (
                f"see `inv logs --node {node}`; " + (
                    f"the router on the head must reach the replica at {wait.replica_urls[rank]} "
                    "(`inv check --network`)"
                    if wait.router_metrics else
                    f"the replica on {node} must reach the head's data-parallel RPC port (`inv check`)"))
            raise StepError("the API answers, but replica(s) " + ", ".join(f"{r} on {n}" for r, n in idle)
                            + f" served none of the requests sent ({dict(sorted(served.items()))} by replica)",
                            host=node, step="ready", **found)
        with ThreadPoolExecutor(burst) as pool:
            list(pool.map(one, range(burst)))
        time.sleep(0.5)  # vLLM's balancer hears each engine's load every 100 ms
