"""`--engine vllm`: run `vllm bench serve` inside the head's runtime (the container, or the
virtualenv on the head) with the same prompts, and convert its JSON into our metrics.

The prompts travel as a ShareGPT-format file in the head's HF cache directory, which the
container sees at its HF_HOME; `--sharegpt-output-len` gives every prompt the same max_tokens,
`--disable-shuffle --no-oversample` keep the order and count. The API key reaches vLLM's
client through stdin (`read`), never argv.
"""
from __future__ import annotations

import json
import posixpath
import re
import shlex
import uuid

from sparkops.base.errors import SparkopsError
from sparkops.bench.load.client import ENDPOINTS
from sparkops.bench.load.datasets import Dataset, as_sharegpt
from sparkops.bench.load.target import Target
from sparkops.bench.measure.metrics import combine_singles
from sparkops.plan import RUNTIMES
from sparkops.plan.context import CONTAINER_HF_HOME
from sparkops.remote.result import CommandTimeout

PERCENTILES = "50,90,95,99"
METRIC_KEY = re.compile(r"^(mean|median|std|p\d+(\.\d+)?)_(ttft|tpot|itl|e2el)_ms$")
COPIED = ("duration", "completed", "failed", "total_input_tokens", "total_output_tokens",
          "request_throughput", "request_goodput", "output_throughput", "total_token_throughput",
          "request_rate", "burstiness", "max_concurrency", "max_output_tokens_per_s",
          "max_concurrent_requests")
TTFT_NOTE = ("vllm engine: TTFT is vLLM's (the first event with choices, which on the chat "
             "endpoint is the role-only chunk vLLM sends with the first token); no TTFT-to-content")


def _paths(target: Target) -> tuple[str, str]:
    """(directory on the head's file system, the same directory as the runtime sees it)."""
    assert target.head is not None  # run_vllm_bench checked it
    host = posixpath.join(target.head.hf_home, "sparkops-bench")
    runtime = target.provenance["runtime"]
    inside = posixpath.join(CONTAINER_HF_HOME, "sparkops-bench") if runtime == "docker" else host
    return host, inside


def bench_argv(target: Target, dataset: Dataset, settings: dict, inside_dir: str, name: str) -> list[str]:
    cfg = target.cfg
    assert cfg is not None  # run_vllm_bench checked it
    port = cfg.cluster["ports"]["api"]
    # From the head itself (host network in Docker) the API is on loopback.
    given = target.state and target.url != target.state.get("api_url", "").rstrip("/")
    base = target.url if given else f"http://127.0.0.1:{port}"
    rate = settings["request_rate"]
    argv = ["vllm", "bench", "serve",
            "--backend", "openai-chat" if settings["endpoint"] == "chat" else "openai",
            "--endpoint", ENDPOINTS[settings["endpoint"]], "--base-url", base,
            "--model", target.model, "--tokenizer", cfg.model["repo"],
            "--dataset-name", "sharegpt", "--dataset-path", posixpath.join(inside_dir, f"{name}.prompts.json"),
            "--sharegpt-output-len", str(settings["max_tokens"]),
            "--disable-shuffle", "--no-oversample", "--num-prompts", str(len(dataset.prompts)),
            "--temperature", str(settings["temperature"]),
            "--request-rate", "inf" if rate in ("inf", float("inf")) else str(rate),
            "--burstiness", str(settings.get("burstiness", 1.0)), "--seed", str(settings.get("seed", 0)),
            "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", PERCENTILES,
            "--save-result", "--save-detailed", "--result-dir", inside_dir,
            "--result-filename", f"{name}.result.json", "--disable-tqdm", "--ready-check-timeout-sec", "60"]
    if settings["concurrency"]:
        argv += ["--max-concurrency", str(settings["concurrency"])]
    if settings["ignore_eos"]:
        argv.append("--ignore-eos")
    if cfg.serving.get("trust_remote_code"):
        argv.append("--trust-remote-code")
    return argv


def runtime_argv(target: Target, argv: list[str], *, env: dict[str, str] | None = None,
                  key_on_stdin: bool = False) -> list[str]:
    """`argv` (vllm ...) as the runtime runs it on the head, in the serving service's place.
    With key_on_stdin, a shell reads the API key from stdin into OPENAI_API_KEY (what vLLM's
    client reads) and runs it: the key never reaches argv or `ps`."""
    assert target.head is not None  # run_vllm_bench checked it
    runtime = RUNTIMES[target.provenance["runtime"]]
    services = (target.state or {}).get("services", ["vllm"])
    service = "vllm" if "vllm" in services else services[0]
    read_key = ["sh", "-c", 'IFS= read -r OPENAI_API_KEY; export OPENAI_API_KEY; exec "$@"', "sh"]
    if runtime.name == "native":
        # exec_argv finds `vllm` in the virtualenv; the shell around it is the node's own.
        out = list(runtime.exec_argv(target.head, service, argv))
        return ["env", *(f"{k}={v}" for k, v in (env or {}).items()), *(read_key if key_on_stdin else []), *out]
    out = list(runtime.exec_argv(target.head, service, [*read_key, *argv] if key_on_stdin else argv))
    if key_on_stdin:
        out.insert(out.index("exec") + 1, "-i")  # docker exec: keep stdin open
    return out


def run_vllm_bench(target: Target, dataset: Dataset, settings: dict,
                   timeout_s: float) -> tuple[dict, dict | None, dict]:
    """-> (metrics, single-request view over the requests that finished, engine_detail)."""
    if target.head is None or target.cfg is None or target.conn is None:
        raise SparkopsError("--engine vllm needs the cluster's head (a running deployment)", step="bench")
    conn = target.conn
    host_dir, inside_dir = _paths(target)
    name = f"run-{uuid.uuid4().hex[:8]}"
    res = conn.run(["mkdir", "-p", host_dir], timeout=30)
    if not res.ok:
        raise SparkopsError(f"cannot create {host_dir}", host=conn.name, step="bench", log_tail=res.tail())
    wrote = conn.write_file(posixpath.join(host_dir, f"{name}.prompts.json"), as_sharegpt(dataset.prompts), 0o644)
    if not wrote.ok:
        raise SparkopsError(f"cannot write the prompt file: {wrote.stderr}", host=conn.name, step="bench")
    vllm = bench_argv(target, dataset, settings, inside_dir, name)
    env = {"HF_HOME": target.head.hf_home, "HF_HUB_OFFLINE": "1"}
    stdin = None
    if target.api_key:
        stdin = target.api_key + "\n"
    argv = runtime_argv(target, vllm, env=env, key_on_stdin=stdin is not None)
    detail = {"command": shlex.join(argv), "host": conn.name}
    try:
        try:
            res = conn.run(argv, timeout=timeout_s, stdin=stdin)
        except CommandTimeout as exc:
            raise SparkopsError(f"vllm bench serve did not finish within {timeout_s:.0f}s", host=conn.name,
                                step="bench", log_tail=exc.partial.splitlines()[-30:]) from None
        if not res.ok:
            raise SparkopsError(f"vllm bench serve failed (exit {res.rc})", host=conn.name, step="bench",
                                log_tail=res.tail(30), details=[detail["command"]])
        out = conn.run(["cat", posixpath.join(host_dir, f"{name}.result.json")], timeout=60)
        if not out.ok:
            raise SparkopsError("vllm bench serve wrote no result file", host=conn.name, step="bench",
                                log_tail=res.tail(30) + out.tail(5))
        try:
            raw = json.loads(out.stdout)
        except ValueError as exc:
            raise SparkopsError(f"vllm bench serve's result is not JSON: {exc}", host=conn.name,
                                step="bench") from None
    finally:
        rm = ["rm", "-f", *(posixpath.join(inside_dir, f"{name}.{s}.json") for s in ("prompts", "result"))]
        try:
            conn.run(runtime_argv(target, rm) if target.provenance["runtime"] == "docker" else rm, timeout=30)
        except Exception:  # noqa: BLE001 - cleanup of a temp file must not hide the real outcome
            pass
    detail["vllm_date"] = raw.get("date")
    metrics, single = convert(raw, len(dataset.prompts), target.api_key)
    return metrics, single, detail


def convert(raw: dict, sent: int, api_key: str | None = None) -> tuple[dict, dict | None]:
    """vLLM's result JSON -> our metrics dict (same key names) and a single-request view."""
    metrics = {k: raw.get(k) for k in COPIED}
    metrics |= {k: v for k, v in raw.items() if METRIC_KEY.match(k)}
    errors = [e for e in raw.get("errors") or [] if e]
    if api_key:
        errors = [e.replace(api_key, "***") for e in errors]
    kinds: dict[str, int] = {}
    for e in errors:
        first = e.strip().splitlines()[-1] if e.strip() else "unknown"
        kind = first.split(":", 1)[0][:80] or "unknown"
        kinds[kind] = kinds.get(kind, 0) + 1
    metrics["error_counts"] = kinds
    metrics["errors"] = [e.strip().splitlines()[-1][:300] for e in errors[:10]]
    notes = [TTFT_NOTE]
    attempted = (raw.get("completed") or 0) + (raw.get("failed") or 0)
    if attempted != sent:
        notes.append(f"vllm bench serve sent {attempted} of {sent} prompts: its ShareGPT loader drops "
                     "prompts under 4 or over 1024 tokens (by the model's tokenizer)")
    if raw.get("failed"):
        notes.append(f"{raw['failed']} of {attempted} requests failed; see errors")
    metrics["warnings"] = notes
    ttfts, lats, outs = raw.get("ttfts") or [], raw.get("latencies") or [], raw.get("output_lens") or []
    ins, failed = raw.get("input_lens") or [], raw.get("errors") or []
    # A request with an error is not a finished one, whatever figures its slot holds.
    views = [{"success": True, "ttft_ms": t * 1000, "e2el_ms": e * 1000,
              "decode_tok_s": (n - 1) / (e - t) if n > 1 and e > t else None,
              "output_tokens": n, "prompt_tokens": ins[i] if i < len(ins) else None}
             for i, (t, e, n) in enumerate(zip(ttfts, lats, outs)) if e and not (i < len(failed) and failed[i])]
    single = combine_singles(views) if views else None
    return metrics, single
