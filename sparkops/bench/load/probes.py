"""What a sweep asks the server before it measures: the latency estimate llama-benchy takes off
every prefill, the context limit, and how many tokens a chat request's messages make."""
from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlsplit

import requests

from sparkops.apply.ready import headers
from sparkops.base.errors import SparkopsError
from sparkops.bench.load.target import Target
from sparkops.bench.load.tokens import Tokens

LATENCY_SAMPLES = 3  # as llama-benchy: the mean of three


def measure_latency(target: Target, mode: str) -> float:
    """llama-benchy's latency estimate in seconds: api = a /v1/models round trip, generation =
    the first body bytes of a 1-token streamed request, none = 0; the mean of three, on a
    connection opened beforehand (as llama-benchy's session would have it). http.client rather
    than requests: the estimate is taken off every prompt's processing time, so a client
    library's own overhead must not be in it (requests adds ~1 ms, 4% of a 25 ms prefill)."""
    if mode == "none":
        return 0.0
    u = urlsplit(target.url)
    cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    conn = cls(u.hostname or "127.0.0.1", u.port, timeout=120)
    hdrs = headers(target.api_key) | {"Content-Type": "application/json"}
    prefix = u.path.rstrip("/")
    body = json.dumps({"model": target.model, "messages": [{"role": "user", "content": "hello"}],
                       "max_tokens": 1, "stream": True})
    samples = []
    try:
        conn.connect()
        for _ in range(LATENCY_SAMPLES):
            t0 = time.perf_counter()
            if mode == "api":
                conn.request("GET", f"{prefix}/v1/models", headers=hdrs)
                conn.getresponse().read()
                samples.append(time.perf_counter() - t0)
            else:
                conn.request("POST", f"{prefix}/v1/chat/completions", body=body, headers=hdrs)
                r = conn.getresponse()
                r.read1()
                samples.append(time.perf_counter() - t0)
                r.read()
    except (OSError, http.client.HTTPException) as exc:
        raise SparkopsError(f"latency probe ({mode}) of {target.url} failed: {exc}", step="bench") from None
    finally:
        conn.close()
    return sum(samples) / len(samples)


def max_model_len(target: Target) -> int | None:
    if target.cfg is not None:
        return int(target.cfg.serving["max_model_len"])
    try:
        r = requests.get(f"{target.url}/v1/models", headers=headers(target.api_key), timeout=10)
        for m in r.json().get("data", []):
            if m.get("id") == target.model and isinstance(m.get("max_model_len"), int):
                return int(m["max_model_len"])
    except (requests.RequestException, ValueError, AttributeError):
        pass
    return None


def chat_prompt_tokens(target: Target, tokens: Tokens, messages: list[dict]) -> int | None:
    """The server's prompt tokens for these messages: /tokenize, else a 1-token request's usage."""
    got = tokens.count_chat(messages)
    if got is not None:
        return got
    body = {"model": target.model, "messages": messages, "max_tokens": 1, "temperature": 0.0}
    try:
        r = requests.post(f"{target.url}/v1/chat/completions", json=body, headers=headers(target.api_key),
                          timeout=120)
        return int(r.json()["usage"]["prompt_tokens"])
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return None
