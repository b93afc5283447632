"""llama-benchy's figures (llama_benchy/results.py, version 0.4.0), computed from our records.

The Spark community compares pp and tg tokens/s at context depths, as llama-benchy defines them:
  ttfr      first SSE event with choices - start (ms)
  e2e_ttft  first event with content or reasoning text - start (ms)
  est_ppt   ttfr - the measured latency (ms): the estimated prompt processing time
  pp t/s    prompt tokens / est_ppt, prompt tokens = the server's usage count when within 20%
            of the expected count, else the expected count
  tg t/s    tokens after the first token / (last token time - first token time); token times
            are the usage count spread evenly from the first to the last content event (what
            llama-benchy does when the server sends no token ids)
  peak t/s  the most tokens in any 1 s window (tokens / span when all fall within 1 s)
At concurrency 1 each figure is over the runs' requests; above it, `*_throughput` is the run's
total (pp: all prompt tokens / (latest first token - earliest start); tg: all decode tokens /
(latest last token - earliest first token)) and `*_req_throughput` the per-request figure.
Each is {"mean", "std" (population, as numpy), "values"}. Pure functions, no I/O.
"""
from __future__ import annotations

from collections.abc import Sequence

from sparkops.bench.load.records import RequestRecord
from sparkops.bench.measure.metrics import mean, std

KEYS = ("pp_throughput", "pp_req_throughput", "tg_throughput", "tg_req_throughput", "peak_throughput",
        "peak_req_throughput", "ttfr", "est_ppt", "e2e_ttft")
USAGE_TOLERANCE = 0.2
PEAK_WINDOW_S = 1.0


def stat(values: Sequence[float], multiplier: float = 1.0) -> dict | None:
    if not values:
        return None
    scaled = [v * multiplier for v in values]
    return {"mean": mean(scaled), "std": std(scaled), "values": scaled}


def interpolate(chunk_times: Sequence[float], n: int) -> list[float]:
    """n token times spread evenly from the first to the last chunk (llama-benchy's
    `_interpolate_token_timestamps`)."""
    if n <= 0 or not chunk_times:
        return []
    first, last = chunk_times[0], chunk_times[-1]
    if n == 1 or len(chunk_times) == 1 or last <= first:
        return [first] * n
    step = (last - first) / (n - 1)
    return [first + step * i for i in range(n)]


def token_times(rec: RequestRecord) -> list[float]:
    """Token arrival times on the run's clock."""
    content = [rec.start_s + t for t, has in zip(rec.events_s, rec.text_events) if has]
    n = rec.completion_tokens if rec.completion_tokens is not None else len(content)
    return interpolate(content, n)


def after_first(times: Sequence[float]) -> int:
    return sum(1 for t in times if t > times[0]) if len(times) >= 2 else 0


def peak(times: Sequence[float], window: float = PEAK_WINDOW_S) -> float:
    """Most tokens in any window; a burst shorter than the window counts over its own span."""
    if not times:
        return 0.0
    ts = sorted(times)
    span = ts[-1] - ts[0]
    if 0 < span < window:
        return len(ts) / span
    best, lo = 0, 0
    for hi, t in enumerate(ts):
        while lo < hi and ts[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best / window


def prompt_tokens(rec: RequestRecord, expected: int) -> int:
    got = rec.prompt_tokens or 0
    return got if got > 0 and abs(got - expected) < expected * USAGE_TOLERANCE else expected


class _Acc:
    def __init__(self) -> None:
        self.pp: list[float] = []
        self.tg: list[float] = []
        self.ttfr: list[float] = []
        self.est_ppt: list[float] = []
        self.e2e_ttft: list[float] = []
        self.req_peak: list[float] = []
        self.run_pp: list[float] = []
        self.run_tg: list[float] = []
        self.run_peak: list[float] = []

    def add_run(self, records: Sequence[RequestRecord], expected: int, latency_s: float) -> None:
        ok = [r for r in records if r.success and r.events_s]
        if not ok:
            return
        prompt_sum = decode_sum = 0
        starts, firsts, lasts, every = [], [], [], []
        for r in ok:
            times = token_times(r)
            every += times
            starts.append(r.start_s)
            if times:
                self.req_peak.append(peak(times))
                lasts.append(times[-1])
            n_prompt = prompt_tokens(r, expected)
            prompt_sum += n_prompt
            decode_sum += after_first(times)
            ttfr = r.events_s[0]
            self.ttfr.append(ttfr)
            first = next((t for t, has in zip(r.events_s, r.text_events) if has), None)
            est = 0.0
            if first is not None:
                firsts.append(r.start_s + first)
                est = max(0.0, ttfr - latency_s)
                self.e2e_ttft.append(first)
                self.est_ppt.append(est)
            if est > 0:
                self.pp.append(n_prompt / est)
            if len(times) > 1 and times[-1] > times[0]:
                self.tg.append(after_first(times) / (times[-1] - times[0]))
        if firsts:
            if max(firsts) > min(starts):
                self.run_pp.append(prompt_sum / (max(firsts) - min(starts)))
            span = (max(lasts) if lasts else 0.0) - min(firsts)
            if span > 0 and decode_sum > 0:
                self.run_tg.append(decode_sum / span)
        if every:
            self.run_peak.append(peak(every))


def figures(runs: Sequence[Sequence[RequestRecord]], concurrency: int, expected_tokens: int,
            latency_s: float) -> dict:
    """The nine llama-benchy figures of one cell from its runs (each a list of the records of
    one batch of `concurrency` requests), keyed as llama-benchy's JSON keys them."""
    acc = _Acc()
    for records in runs:
        acc.add_run(records, expected_tokens, latency_s)
    pp = stat(acc.run_pp if concurrency > 1 else acc.pp)
    tg = stat(acc.run_tg if concurrency > 1 else acc.tg)
    return {
        "pp_throughput": pp, "pp_req_throughput": pp if concurrency == 1 else stat(acc.pp),
        "tg_throughput": tg, "tg_req_throughput": tg if concurrency == 1 else stat(acc.tg),
        "peak_throughput": stat(acc.run_peak), "peak_req_throughput": stat(acc.req_peak),
        "ttfr": stat(acc.ttfr, 1000), "est_ppt": stat(acc.est_ppt, 1000), "e2e_ttft": stat(acc.e2e_ttft, 1000),
    }


def counted_prompt_tokens(runs: Sequence[Sequence[RequestRecord]]) -> float | None:
    """Mean of the server's usage.prompt_tokens over the cell's requests."""
    got = [r.prompt_tokens for rs in runs for r in rs if r.success and r.prompt_tokens is not None]
    return mean(got) if got else None
