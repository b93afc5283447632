"""vLLM's Prometheus `/metrics`, the few series `watch` reads: requests running and waiting, KV
cache use, tokens generated so far. Pure: text in, numbers out (summed over every label set:
one engine, or one per data-parallel rank); and vllm-router's count per replica (layout replicas)."""
from __future__ import annotations

# Our name -> the series that carry it, newest vLLM first (V1 renamed the cache gauge).
SERIES = {
    "running": ("vllm:num_requests_running",),
    "waiting": ("vllm:num_requests_waiting",),
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    "generation_tokens": ("vllm:generation_tokens_total",),
    "prompt_tokens": ("vllm:prompt_tokens_total",),
}


def samples(text: str):
    """(series name, the line, value) of every sample line of Prometheus text."""
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        try:
            value = float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
        yield line.split("{", 1)[0].split(" ", 1)[0], line, value


def parse_metrics(text: str) -> dict[str, float | None]:
    seen: dict[str, float] = {}
    for name, _, value in samples(text):
        seen[name] = seen.get(name, 0.0) + value
    out: dict[str, float | None] = {}
    for key, names in SERIES.items():
        out[key] = next((seen[n] for n in names if n in seen), None)
    return out


def per_engine(text: str, name: str) -> dict[int, float]:
    """One series summed per engine (vLLM's `engine` label: the data-parallel rank)."""
    out: dict[int, float] = {}
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        labels = line[len(name) + 1:line.rfind("}")]
        engine = next((part.split("=", 1)[1].strip('"') for part in labels.split(",")
                       if part.split("=", 1)[0].strip() == "engine"), None)
        try:
            rank, value = int(engine or "0"), float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
        out[rank] = out.get(rank, 0.0) + value
    return out


# vllm-router's count of each replica's answered requests: its circuit breaker's "success"
# outcomes (a request that failed there and was retried elsewhere counts only where it succeeded).
ROUTER_SUCCESS = "vllm_router_cb_outcomes_total"


def router_served(text: str) -> dict[str, float]:
    """Replica URL -> requests it answered, from vllm-router's Prometheus text."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(ROUTER_SUCCESS + "{"):
            continue
        labels = dict(part.split("=", 1) for part in line[len(ROUTER_SUCCESS) + 1:line.rfind("}")].split(",")
                      if "=" in part)
        if labels.get("outcome", "").strip('"') != "success":
            continue
        try:
            value = float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
        worker = labels.get("worker", "").strip('"')
        out[worker] = out.get(worker, 0.0) + value
    return out


# Speculative decoding (vllm/v1/spec_decode/metrics.py): drafts proposed, draft tokens, those
# accepted, and accepted per draft position (label `position`, 0 first).
SPEC = {"drafts": "vllm:spec_decode_num_drafts_total", "draft_tokens": "vllm:spec_decode_num_draft_tokens_total",
        "accepted": "vllm:spec_decode_num_accepted_tokens_total"}
SPEC_PER_POS = "vllm:spec_decode_num_accepted_tokens_per_pos_total"


def spec_decode_counters(text: str) -> dict | None:
    """vLLM's speculative-decoding counters, summed over engines: {"drafts", "draft_tokens",
    "accepted", "per_position": {position: accepted}}; None when the server speculates not."""
    totals = {key: 0.0 for key in SPEC}
    per_pos: dict[int, float] = {}
    seen = False
    for name, line, value in samples(text):
        if not name.startswith("vllm:spec_decode_"):
            continue
        for key, series in SPEC.items():
            if name == series:
                totals[key] += value
                seen = True
        if name == SPEC_PER_POS and "{" in line:
            labels = line[line.index("{") + 1:line.rfind("}")]
            pos = next((p.split("=", 1)[1].strip('"') for p in labels.split(",") if p.split("=", 1)[0].strip()
                        == "position"), None)
            if pos is not None and pos.isdigit():
                per_pos[int(pos)] = per_pos.get(int(pos), 0.0) + value
    return {**totals, "per_position": per_pos} if seen else None
