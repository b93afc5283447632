"""Is the API really serving? /health alone can stay green while the engine is deadlocked,
so ready means: /health answers 200, /v1/models lists the model, and one short completion
comes back."""
from __future__ import annotations

from dataclasses import dataclass

import requests


@dataclass(frozen=True)
class Probe:
    ready: bool
    stage: str  # "health", "models", "completion" or "ready"
    detail: str


def headers(api_key: str | None) -> dict:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def probe(url: str, model: str, api_key: str | None = None, timeout: float = 10.0) -> Probe:
    try:
        health = requests.get(f"{url}/health", timeout=timeout)
        if health.status_code != 200:
            return Probe(False, "health", f"/health answered {health.status_code}")
        models = requests.get(f"{url}/v1/models", headers=headers(api_key), timeout=timeout)
        if models.status_code != 200:
            return Probe(False, "models", f"/v1/models answered {models.status_code}: {models.text[:200]}")
        ids = [m.get("id") for m in models.json().get("data", [])]
        if model not in ids:
            return Probe(False, "models", f"/v1/models lists {ids}, not {model!r}")
        done = requests.post(f"{url}/v1/completions", headers=headers(api_key), timeout=max(timeout, 60),
                             json={"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0})
        if done.status_code != 200 or not done.json().get("choices"):
            return Probe(False, "completion", f"a 1-token completion answered {done.status_code}: {done.text[:200]}")
    except requests.RequestException as exc:
        return Probe(False, "health", f"no answer yet ({type(exc).__name__})")
    except ValueError as exc:  # not JSON
        return Probe(False, "models", f"unexpected answer: {exc}")
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
