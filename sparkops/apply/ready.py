"""Is the API really serving? /health alone can stay green while the engine is deadlocked,
so ready means: /health answers 200, /v1/models lists the model, and one short completion
comes back. `wait_ready` waits for that while watching every started service stay alive."""
from __future__ import annotations

import time
from dataclasses import dataclass

import requests

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
          completion_timeout: float | None = None) -> Probe:
    """`completion_timeout` (default max(timeout, 60)): how long the 1-token request may take;
    `watch` sets it short, since an engine that hangs is what it must notice."""
    stage = "health"
    try:
        health = requests.get(f"{url}/health", timeout=timeout)
        if health.status_code != 200:
            return Probe(False, "health", f"/health answered {health.status_code}")
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


def wait_ready(group: NodeGroup, wait: WaitReady, api_key: str | None, progress: Progress) -> None:
    deadline = time.monotonic() + wait.timeout_s
    start = time.monotonic()
    last_said = 0.0
    while True:
        last = probe(wait.url, wait.model, api_key)
        if last.ready:
            progress.say(f"      API ready after {time.monotonic() - start:.1f}s: {last.detail}")
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
