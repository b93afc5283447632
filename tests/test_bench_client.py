"""sparkops.bench.load.client against the synthetic server: timings and faults we injected."""

import json
import math
import os
import socket
import time

import pytest

from sparkops.bench.load import http
from sparkops.bench.load.client import BenchmarkError, arrival_offsets, run_benchmark
from sparkops.bench.load.prompts import Prompt
from sparkops.bench.load.records import BenchRun
from sparkops.bench.measure.metrics import summarize
from sparkops.testing.synthetic_server import ServerConfig, SyntheticServer

# Generous enough for a loaded CI runner; benchmarks/client_overhead.py measures the real
# error on a quiet core.
TOL_MS = 8.0


def prompts(n, max_tokens=12, directive=""):
    return [Prompt(f"p{i}", f"Prompt {i}. {directive}", max_tokens) for i in range(n)]


@pytest.fixture(scope="module")
def server():
    # Its own process: in a thread of ours it would hold the GIL while the client's event loop
    # wants to stamp a chunk (event-loop stamps then run up to ~10 ms late on a busy runner).
    with SyntheticServer(ServerConfig(ttft_s=0.05, itl_s=0.01), process=True) as srv:
        yield srv


@pytest.mark.timing
@pytest.mark.parametrize("stamps", ["kernel", "event loop"])
def test_measured_ttft_and_itl_match_injected(server, stamps, monkeypatch):
    # https and non-Linux hosts stamp in the event loop: the same numbers either way.
    monkeypatch.setattr(http, "KERNEL_STAMPS", stamps == "kernel")
    run = run_benchmark(server.base_url, "m", prompts(8, 12), concurrency=4, timeout_s=10)
    s = summarize(run)
    assert (s["completed"], s["failed"]) == (8, 0)
    assert 50 <= s["median_ttft_ms"] <= 50 + TOL_MS
    assert 50 <= s["p99_ttft_content_ms"] <= 50 + TOL_MS
    assert s["median_itl_content_ms"] == pytest.approx(10, abs=1.0)
    assert s["mean_tpot_ms"] == pytest.approx(10, abs=2.0)
    assert s["median_e2el_ms"] == pytest.approx(50 + 11 * 10, abs=TOL_MS)
    assert s["total_output_tokens"] == 8 * 12  # from usage, not from chunk counts
    assert s["total_input_tokens"] == 8 * 2
    assert run.warmup is not None and run.warmup.success
    assert s["client_timestamps"] == stamps
    # vLLM's role-only first chunk (sent with the first token) is a choice event
    assert all(r.text_events[0] is False and len(r.events_s) == 13 for r in run.records)


@pytest.mark.timing
def test_a_client_that_was_held_up_says_so(server):
    """Chunks that arrive while the client's event loop is blocked are stamped late: the run
    measures how long that was and warns, instead of reporting client delay as server latency."""
    def slow_progress(done, total, rec):
        if done == 1:
            time.sleep(0.06)  # a 60 ms stall, as when another process hogs the CPU
    run = run_benchmark(server.base_url, "m", prompts(4, 12), concurrency=2, timeout_s=10,
                        progress=slow_progress)
    s = summarize(run)
    assert s["completed"] == 4
    assert s["client_max_stall_ms"] >= 50
    assert s["client_cpu_wait_ms"] is not None  # Linux schedstat
    assert run.client["timestamps"] == "kernel"  # plain http on Linux
    assert any("held up for as long as" in w and "unaffected" in w for w in s["warnings"])
    # kernel receive times: the stall does not show up as latency
    assert s["p99_ttft_ms"] <= 50 + TOL_MS and s["p99_itl_content_ms"] <= 10 + TOL_MS
    assert BenchRun.from_dict(json.loads(json.dumps(run.to_dict()))).client == run.client


def test_server_workers_share_the_port_and_report_every_stream():
    """benchmarks/client_overhead.py runs the server as several processes: every stream the
    client saw must come back from one of them, with ids that do not collide, and stop()
    ends them all."""
    cfg = ServerConfig(ttft_s=0.02, itl_s=0.005, output_tokens=6)
    with SyntheticServer(cfg, process=True, workers=3) as srv:
        run = run_benchmark(srv.base_url, "m", prompts(24, 6), concurrency=12, timeout_s=10)
        recs = srv.records()
        assert srv.records() == []  # returned once
        pgid = srv.process_group
        assert pgid is not None
    assert sum(r.success for r in run.records) == 24
    assert {r.response_id for r in run.records} <= {r["id"] for r in recs}
    assert len(recs) == len({r["id"] for r in recs}) == 25  # and the warm-up
    assert all(r["id"].startswith(("cmpl-0-", "cmpl-1-", "cmpl-2-")) for r in recs)
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)


@pytest.mark.timing
def test_role_chunk_sent_early_shows_the_ttft_pitfall(server):
    run = run_benchmark(server.base_url, "m", prompts(3, 5, "[[sparkops: role=immediate]]"),
                        concurrency=3, timeout_s=10)
    s = summarize(run)
    assert s["median_ttft_ms"] < 10  # vLLM's definition: the role-only chunk
    assert 50 <= s["median_ttft_content_ms"] <= 50 + TOL_MS
    assert s["median_itl_content_ms"] == pytest.approx(10, abs=1.0)


def test_reasoning_tokens_count_as_first_token(server):
    run = run_benchmark(server.base_url, "m", prompts(2, 6, "[[sparkops: reasoning=3]]"),
                        timeout_s=10)
    s = summarize(run)
    assert 50 <= s["median_ttft_content_ms"] <= 50 + TOL_MS
    assert s["total_output_tokens"] == 12


def test_completions_endpoint(server):
    run = run_benchmark(server.base_url, "m", prompts(3, 4), endpoint="completions",
                        timeout_s=10)
    s = summarize(run)
    assert s["completed"] == 3 and s["total_output_tokens"] == 12
    assert all(r.text_events == [True] * 4 for r in run.records)  # no role chunk here


def test_every_fault_is_counted_with_its_message(server):
    ps = prompts(4, 6)
    ps += [Prompt("f500", "[[sparkops: fault=http500]]", 6),
           Prompt("ferr", "[[sparkops: fault=error_event at=2]]", 6),
           Prompt("fstall", "[[sparkops: fault=stall at=2]]", 6),
           Prompt("fdrop", "[[sparkops: fault=drop at=3]]", 6)]
    done = []
    run = run_benchmark(server.base_url, "m", ps, concurrency=8, timeout_s=1.5,
                        progress=lambda i, n, rec: done.append((i, n, rec.prompt_id)))
    s = summarize(run)
    assert (s["completed"], s["failed"]) == (4, 4)
    errors = {r.prompt_id: r.error for r in run.records if not r.success}
    assert errors["f500"].startswith("HTTP 500: ") and "synthetic server failure" in errors["f500"]
    assert errors["ferr"] == "error event: synthetic mid-stream failure after 3 events"
    assert errors["fstall"] == "timeout: no complete response within 1.5 s"
    assert errors["fdrop"].startswith("connection dropped: mid-response")
    assert s["error_counts"] == {"HTTP 500": 1, "error event": 1, "timeout": 1,
                                 "connection dropped": 1}
    assert s["warnings"][0] == "4 of 8 requests failed; see errors"
    assert len(done) == 8 and done[-1][:2] == (8, 8)
    # the latency metrics describe the successful requests only
    assert 50 <= s["median_ttft_ms"] <= 50 + TOL_MS


def test_failed_warmup_stops_the_run_loudly():
    with (SyntheticServer(ServerConfig(fault="http500")) as srv,
          pytest.raises(BenchmarkError, match="warm-up request .* failed: HTTP 500")):
        run_benchmark(srv.base_url, "m", prompts(2), timeout_s=5)


def test_unreachable_server_is_recorded_not_raised():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    run = run_benchmark(f"http://127.0.0.1:{port}", "m", prompts(3), warmup=False, timeout_s=2)
    summary = summarize(run)
    assert summary["failed"] == 3
    assert all(r.error.startswith("connection error: ") for r in run.records)


def test_api_key_is_sent_but_never_stored(server):
    key = "sk-secret-123"
    run = run_benchmark(server.base_url, "m", prompts(1), api_key=key, timeout_s=5)
    dumped = json.dumps(run.to_dict()) + json.dumps(summarize(run))
    assert key not in dumped
    assert run.settings["api_key_set"] is True


@pytest.mark.timing
def test_concurrency_cap_records_client_queue_time(server):
    run = run_benchmark(server.base_url, "m", prompts(3, 3), concurrency=1, timeout_s=10)
    queues = [r.client_queue_s for r in run.records]
    assert queues[0] < 0.005 and queues[2] > queues[1] > 0.05  # each waits for the previous
    s = summarize(run)
    assert s["max_concurrency"] == 1 and s["mean_client_queue_time_ms"] > 50


@pytest.mark.timing
def test_request_rate_spreads_dispatches(server):
    run = run_benchmark(server.base_url, "m", prompts(5, 2), request_rate=20,
                        burstiness=math.inf, timeout_s=10)
    dispatched = [r.dispatched_s for r in run.records]
    assert dispatched == sorted(dispatched)
    assert dispatched[-1] == pytest.approx(0.25, abs=0.02)
    assert summarize(run)["request_rate"] == 20


def test_arrival_offsets_follow_serve_py():
    assert arrival_offsets(4, math.inf, 1.0, 0) == [0.0] * 4
    assert arrival_offsets(4, 2.0, math.inf, 0) == pytest.approx([0.5, 1.0, 1.5, 2.0])
    poisson = arrival_offsets(1000, 10.0, 1.0, 0)
    assert poisson[-1] == pytest.approx(100.0)  # rescaled to n / rate, as vLLM does
    assert poisson == arrival_offsets(1000, 10.0, 1.0, 0)  # seeded
    assert poisson != arrival_offsets(1000, 10.0, 1.0, 1)
    with pytest.raises(ValueError):
        arrival_offsets(3, 1.0, 0.0, 0)
