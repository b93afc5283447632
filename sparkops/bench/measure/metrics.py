"""Per-request records -> the metrics `vllm bench serve` reports, under the same names.

Definitions follow vllm/benchmarks/serve.py `calculate_metrics` and the request functions in
vllm/benchmarks/lib/endpoint_request_func.py; where we add something (TTFT to the first
content token, ITL without the role-only gap, client queue time) it gets its own key so that
the vLLM-named keys keep vLLM's meaning. Pure functions only: no I/O, no numpy.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from sparkops.bench.load.records import BenchRun, RequestRecord

DEFAULT_PERCENTILES = (50, 90, 95, 99)
# A client event-loop stall this long (or longer) is reported: it delays every timestamp taken
# meanwhile by up to as much, which is several ITLs on a fast server.
STALL_WARN_MS = 10.0
SLO_NAMES = ("ttft", "tpot", "e2el")


# --- statistics, bit-for-bit the numpy defaults vLLM uses --------------------------------------

def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def std(values: Sequence[float]) -> float:
    """Population standard deviation (numpy's default ddof=0, which vLLM uses)."""
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / len(values))


def percentile(values: Sequence[float], p: float) -> float:
    """numpy.percentile(values, p) with its default 'linear' method, same rounding."""
    s = sorted(values)
    virtual = (len(s) - 1) * (p / 100)
    lo = math.floor(virtual)
    hi = min(lo + 1, len(s) - 1)
    t = virtual - lo
    a, b = s[lo], s[hi]
    diff = b - a
    # numpy's _lerp switches formula at t >= 0.5 so that t == 1 returns b exactly.
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


def _family(name: str, values_s: list[float], percentiles: Iterable[float]) -> dict[str, Any]:
    """mean/median/std/pXX of a list of seconds, in ms, keyed the way serve.py keys them.

    vLLM reports 0 for an empty list (`np.mean(x or 0)`); we report None so that "no data"
    can never be read as "zero latency".
    """
    out: dict[str, Any] = {}
    has = bool(values_s)
    out[f"mean_{name}_ms"] = mean(values_s) * 1000 if has else None
    out[f"median_{name}_ms"] = median(values_s) * 1000 if has else None
    out[f"std_{name}_ms"] = std(values_s) * 1000 if has else None
    for p in percentiles:
        word = str(int(p)) if int(p) == p else str(p)
        out[f"p{word}_{name}_ms"] = percentile(values_s, p) * 1000 if has else None
    return out


# --- per-request quantities ----------------------------------------------------------------------

def ttft_s(rec: RequestRecord) -> float:
    """vLLM's TTFT: the first event with non-empty `choices`, role-only chunks included."""
    return rec.events_s[0]


def ttft_content_s(rec: RequestRecord) -> float | None:
    """TTFT to the first event carrying content or reasoning text (pitfall 1)."""
    for t, has_text in zip(rec.events_s, rec.text_events):
        if has_text:
            return t
    return None


def e2el_s(rec: RequestRecord) -> float:
    """Last choice-bearing event minus start; the usage event and [DONE] do not count."""
    return rec.events_s[-1]


def itls_s(rec: RequestRecord) -> list[float]:
    ev = rec.events_s
    return [ev[i] - ev[i - 1] for i in range(1, len(ev))]


def itls_content_s(rec: RequestRecord) -> list[float]:
    """Gaps between text-bearing events only: no near-zero role->content gap."""
    ev = [t for t, has_text in zip(rec.events_s, rec.text_events) if has_text]
    return [ev[i] - ev[i - 1] for i in range(1, len(ev))]


def output_tokens(rec: RequestRecord) -> int:
    """usage.completion_tokens; without usage, the count of text-bearing events.

    vLLM falls back to re-tokenising the text with the model's tokenizer (or 1 without one);
    we have no tokenizer, and summarize() warns whenever this fallback was used.
    """
    if rec.completion_tokens is not None:
        return rec.completion_tokens
    return sum(rec.text_events)


def tpot_s(rec: RequestRecord) -> float | None:
    """(E2EL - TTFT) / (output_tokens - 1), defined only when output_tokens > 1."""
    n = output_tokens(rec)
    if n <= 1:
        return None
    return (e2el_s(rec) - ttft_s(rec)) / (n - 1)


def validate_slos(slos: dict[str, float] | None) -> dict[str, float]:
    """SLOs in ms keyed ttft/tpot/e2el, as `vllm bench serve --goodput ttft:500 tpot:50`."""
    slos = dict(slos or {})
    for key, value in slos.items():
        if key not in SLO_NAMES:
            raise ValueError(f"unknown SLO {key!r}: expected one of {', '.join(SLO_NAMES)}")
        if value < 0:
            raise ValueError(f"SLO {key} must be non-negative, got {value}")
    return slos


def _is_good(rec: RequestRecord, slos: dict[str, float]) -> bool:
    # serve.py counts tpot as 0 for single-token outputs when checking the TPOT SLO.
    observed = {"ttft": ttft_s(rec), "tpot": tpot_s(rec) or 0.0, "e2el": e2el_s(rec)}
    return all(observed[k] <= v / 1000 for k, v in slos.items())


def _peaks(records: list[RequestRecord]) -> tuple[float, int]:
    """serve.py's max_output_tokens_per_s (choice events per 1 s bucket) and the exact peak
    number of requests in flight (sweep over half-open [start, end) intervals)."""
    if not records:
        return 0.0, 0
    t_min = min(r.start_s for r in records)
    t_max = max(r.start_s + e2el_s(r) for r in records)
    buckets = [0] * (math.ceil(t_max - t_min) + 1)
    for r in records:
        for t in r.events_s:
            b = int(r.start_s + t - t_min)
            if 0 <= b < len(buckets):
                buckets[b] += 1
    events = sorted([(r.start_s, 1) for r in records] + [(r.start_s + e2el_s(r), -1) for r in records])
    peak = cur = 0
    for _, delta in events:
        cur += delta
        peak = max(peak, cur)
    return float(max(buckets)), peak


def _error_kind(message: str) -> str:
    return message.split(":", 1)[0].strip() or "unknown"


# --- the summary ---------------------------------------------------------------------------------

def summarize(
    run: BenchRun,
    slos: dict[str, float] | None = None,
    percentiles: Iterable[float] = DEFAULT_PERCENTILES,
    max_errors: int = 10,
) -> dict[str, Any]:
    """The vLLM-named result dict (plus ours) for a finished run."""
    slos = validate_slos(slos)
    percentiles = tuple(percentiles)
    ok = [r for r in run.records if r.success]
    failed = [r for r in run.records if not r.success]
    dur = run.duration_s
    out_lens = [output_tokens(r) for r in ok]
    in_lens = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    s = run.settings
    rate = s.get("request_rate", math.inf)

    result: dict[str, Any] = {
        "duration": dur,
        "completed": len(ok),
        "failed": len(failed),
        "total_input_tokens": sum(in_lens),
        "total_output_tokens": sum(out_lens),
        "request_throughput": len(ok) / dur if dur > 0 else None,
        "request_goodput": (sum(_is_good(r, slos) for r in ok) / dur) if slos and dur > 0 else None,
        "output_throughput": sum(out_lens) / dur if dur > 0 else None,
        "total_token_throughput": (sum(in_lens) + sum(out_lens)) / dur if dur > 0 else None,
        "request_rate": "inf" if rate == math.inf else rate,
        "burstiness": s.get("burstiness", 1.0),
        "max_concurrency": s.get("max_concurrency"),
    }
    result["max_output_tokens_per_s"], result["max_concurrent_requests"] = _peaks(ok)
    result |= _family("ttft", [ttft_s(r) for r in ok], percentiles)
    result |= _family("tpot", [t for r in ok if (t := tpot_s(r)) is not None], percentiles)
    result |= _family("itl", [g for r in ok for g in itls_s(r)], percentiles)
    result |= _family("e2el", [e2el_s(r) for r in ok], percentiles)
    result |= _family(
        "ttft_content", [t for r in ok if (t := ttft_content_s(r)) is not None], percentiles
    )
    result |= _family("itl_content", [g for r in ok for g in itls_content_s(r)], percentiles)
    queue = [r.client_queue_s for r in ok]
    result["mean_client_queue_ms"] = mean(queue) * 1000 if queue else None
    if s.get("max_concurrency") is not None:
        # serve.py's names for the same quantity, reported only with a concurrency cap.
        result |= _family("client_queue_time", queue, (99,))

    client = run.client or {}
    result["client_max_stall_ms"] = client.get("max_stall_ms")
    result["client_cpu_wait_ms"] = client.get("cpu_wait_ms")
    result["client_timestamps"] = client.get("timestamps")  # "kernel", "event loop", "mixed"
    result["slos_ms"] = slos or None
    result["error_counts"] = dict(Counter(_error_kind(r.error) for r in failed))
    result["errors"] = [f"#{r.index} {r.prompt_id}: {r.error}" for r in failed[:max_errors]]
    result["warnings"] = _warnings(run, ok, failed)
    return result


def _warnings(run: BenchRun, ok: list[RequestRecord], failed: list[RequestRecord]) -> list[str]:
    notes = []
    if failed:
        notes.append(f"{len(failed)} of {len(run.records)} requests failed; see errors")
    if not ok:
        notes.append("no request succeeded: every latency metric is null")
    stall = (run.client or {}).get("max_stall_ms")
    if stall is not None and stall >= STALL_WARN_MS:
        wait = run.client.get("cpu_wait_ms")
        why = f" ({wait:.0f} ms in all spent waiting for a CPU)" if wait else ""
        if run.client.get("timestamps") == "kernel":
            effect = ("chunk times come from the kernel and are unaffected, but requests were "
                      "sent late meanwhile, so throughput may be understated")
        else:
            effect = ("chunks that arrived meanwhile were timestamped late, so TTFT, ITL and "
                      "TPOT include client delay, and throughput may be understated")
        notes.append(
            f"the benchmark client was held up for as long as {stall:.0f} ms during the run{why}: "
            f"{effect}. Re-run where the client has a CPU core to itself (on a small machine "
            "the server's spin-waiting threads can take them all)")
    no_usage = sum(r.completion_tokens is None for r in ok)
    if no_usage:
        notes.append(
            f"{no_usage} requests returned no usage.completion_tokens; their output tokens were "
            "counted from text-bearing chunks, which undercounts with speculative decoding"
        )
    no_prompt = sum(r.prompt_tokens is None for r in ok)
    if no_prompt:
        notes.append(f"{no_prompt} requests returned no usage.prompt_tokens; input totals omit them")
    return notes


def single_request_summary(rec: RequestRecord) -> dict[str, Any]:
    """The llama-benchy-style view of one request: TTFT to first content, decode rate, E2EL."""
    if not rec.success:
        return {"success": False, "error": rec.error}
    ttft = ttft_content_s(rec)
    n = output_tokens(rec)
    e2el = e2el_s(rec)
    decode = None
    if ttft is not None and n > 1 and e2el > ttft:
        decode = (n - 1) / (e2el - ttft)
    return {
        "success": True,
        "ttft_ms": ttft * 1000 if ttft is not None else None,
        "decode_tok_s": decode,
        "e2el_ms": e2el * 1000,
        "prompt_tokens": rec.prompt_tokens,
        "output_tokens": n,
    }


SINGLE_FIGURES = ("ttft_ms", "decode_tok_s", "e2el_ms")


def single_summary(records: Sequence[RequestRecord]) -> dict[str, Any]:
    """`--single`: sequential requests, each seen as single_request_summary sees it; each figure
    as the mean (under its old key, so one request reads as before), std, median and values."""
    return combine_singles([single_request_summary(r) for r in records])


def combine_singles(views: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-request views (single_request_summary's shape) -> mean, std, median, values."""
    ok = [v for v in views if v["success"]]
    if not ok:
        return views[0] if views else {"success": False, "error": "no request"}
    out: dict[str, Any] = {"success": True, "runs": len(ok), "failed": len(views) - len(ok),
                           "output_tokens": ok[0]["output_tokens"], "prompt_tokens": ok[0]["prompt_tokens"]}
    for key in SINGLE_FIGURES:
        vals = [v[key] for v in ok if v[key] is not None]
        out[key] = mean(vals) if vals else None
        out[f"{key}_std"] = std(vals) if vals else None
        out[f"{key}_median"] = median(vals) if vals else None
        out[f"{key}_values"] = vals
    return out
