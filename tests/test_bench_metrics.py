"""sparkops.bench.measure.metrics from hand-computed records (no server, no clock)."""

import math
import random

import numpy as np
import pytest

from sparkops.bench.load.records import BenchRun, RequestRecord
from sparkops.bench.measure.metrics import (
    mean,
    median,
    percentile,
    single_request_summary,
    std,
    summarize,
    validate_slos,
)


def rec(index, events, text=None, out=None, prompt=10, success=True, start=0.0, disp=0.0, error=""):
    return RequestRecord(
        index=index, prompt_id=f"p{index}", max_tokens=64, success=success, error=error,
        dispatched_s=disp, start_s=start, events_s=list(events),
        text_events=list(text if text is not None else [True] * len(events)),
        prompt_tokens=prompt, completion_tokens=out,
    )


# A: chat stream whose first chunk is role-only (arrives 0.5 ms before the first content)
A = rec(0, [0.100, 0.1005, 0.120, 0.140], [False, True, True, True], out=3, prompt=10)
# B: a single output token (no TPOT)
B = rec(1, [0.200], out=1, prompt=5, start=0.05, disp=0.01)
# C: failed
C = rec(2, [], success=False, error="HTTP 500: boom", out=None)


def run_of(*records, duration=1.0, **settings):
    return BenchRun(settings={"request_rate": math.inf, "burstiness": 1.0,
                              "max_concurrency": None, **settings},
                    records=list(records), duration_s=duration)


def test_vllm_definitions_by_hand():
    s = summarize(run_of(A, B, C))
    assert (s["completed"], s["failed"]) == (2, 1)
    assert s["total_input_tokens"] == 15 and s["total_output_tokens"] == 4
    assert s["request_throughput"] == 2.0
    assert s["output_throughput"] == 4.0
    assert s["total_token_throughput"] == 19.0
    # TTFT counts the role-only chunk, as vLLM does
    assert s["mean_ttft_ms"] == pytest.approx(150.0)
    assert s["median_ttft_ms"] == pytest.approx(150.0)
    assert s["std_ttft_ms"] == pytest.approx(50.0)
    # TPOT only for A: (0.140 - 0.100) / (3 - 1)
    assert s["mean_tpot_ms"] == pytest.approx(20.0)
    assert s["p99_tpot_ms"] == pytest.approx(20.0)
    # ITL pooled over requests: A's three gaps, B has none
    assert s["mean_itl_ms"] == pytest.approx((0.5 + 19.5 + 20.0) / 3)
    assert s["median_itl_ms"] == pytest.approx(19.5)
    assert s["mean_e2el_ms"] == pytest.approx(170.0)
    assert s["request_rate"] == "inf" and s["max_concurrency"] is None
    assert s["request_goodput"] is None


def test_role_only_first_chunk_pitfall():
    s = summarize(run_of(A))
    assert s["mean_ttft_ms"] == pytest.approx(100.0)
    assert s["mean_ttft_content_ms"] == pytest.approx(100.5)
    # the near-zero role->content gap is in vLLM's ITL but not in ours
    assert s["p50_itl_ms"] == pytest.approx(19.5)
    assert s["mean_itl_content_ms"] == pytest.approx(19.75)


def test_tpot_only_when_more_than_one_token():
    s = summarize(run_of(B))
    assert s["mean_tpot_ms"] is None and s["median_tpot_ms"] is None
    assert s["mean_itl_ms"] is None
    assert s["mean_ttft_ms"] == pytest.approx(200.0)


def test_goodput_follows_serve_py():
    assert summarize(run_of(A, B, C), slos={"ttft": 150})["request_goodput"] == 1.0
    # B's TPOT counts as 0 for the SLO check; A's 20 ms fails tpot <= 10
    assert summarize(run_of(A, B, C), slos={"tpot": 10})["request_goodput"] == 1.0
    assert summarize(run_of(A, B), slos={"e2el": 500, "ttft": 1000})["request_goodput"] == 2.0
    with pytest.raises(ValueError, match="unknown SLO 'itl'"):
        validate_slos({"itl": 5})
    with pytest.raises(ValueError, match="non-negative"):
        validate_slos({"ttft": -1})


def test_client_queue_and_concurrency_keys():
    s = summarize(run_of(A, B, max_concurrency=1))
    assert s["mean_client_queue_ms"] == pytest.approx(20.0)  # B waited 40 ms, A 0
    assert s["mean_client_queue_time_ms"] == pytest.approx(20.0)
    assert s["p99_client_queue_time_ms"] == pytest.approx(39.6)
    assert s["max_concurrency"] == 1
    assert "mean_client_queue_time_ms" not in summarize(run_of(A, B))


def test_all_failed_is_loud_not_zero():
    s = summarize(run_of(C))
    assert s["completed"] == 0 and s["failed"] == 1
    assert s["mean_ttft_ms"] is None and s["p99_e2el_ms"] is None
    assert s["error_counts"] == {"HTTP 500": 1}
    assert s["errors"] == ["#2 p2: HTTP 500: boom"]
    assert any("no request succeeded" in w for w in s["warnings"])


def test_missing_usage_falls_back_to_text_chunks_with_warning():
    r = rec(0, [0.1, 0.1, 0.2, 0.3], [False, True, True, True], out=None, prompt=None)
    s = summarize(run_of(r))
    assert s["total_output_tokens"] == 3
    assert s["mean_tpot_ms"] == pytest.approx(100.0)
    assert any("no usage.completion_tokens" in w for w in s["warnings"])
    assert any("no usage.prompt_tokens" in w for w in s["warnings"])


def test_peaks():
    s = summarize(run_of(A, B))
    assert s["max_concurrent_requests"] == 2
    assert s["max_output_tokens_per_s"] == 5.0


def test_statistics_match_numpy():
    rnd = random.Random(7)
    for n in (1, 2, 3, 10, 101, 1000):
        xs = [rnd.expovariate(1 / 30) for _ in range(n)]
        assert mean(xs) == pytest.approx(float(np.mean(xs)), rel=1e-12)
        assert median(xs) == float(np.median(xs))
        assert std(xs) == pytest.approx(float(np.std(xs)), rel=1e-9, abs=1e-12)
        for p in (0, 1, 25, 50, 90, 95, 99, 99.9, 100):
            assert percentile(xs, p) == float(np.percentile(xs, p)), (n, p)


def test_single_request_summary():
    s = single_request_summary(A)
    assert s["ttft_ms"] == pytest.approx(100.5)
    assert s["decode_tok_s"] == pytest.approx(2 / (0.140 - 0.1005))
    assert s["e2el_ms"] == pytest.approx(140.0)
    assert s["output_tokens"] == 3
    assert single_request_summary(C) == {"success": False, "error": "HTTP 500: boom"}


def test_run_round_trips_through_json():
    run = run_of(A, B, C)
    again = BenchRun.from_dict(run.to_dict())
    assert summarize(again) == summarize(run)
