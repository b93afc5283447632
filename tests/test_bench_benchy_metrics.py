"""llama-benchy's figures computed by sparkops (bench/benchy_metrics.py) equal llama-benchy's own
code (llama_benchy.results 0.4.0, a test dependency) on the same recorded requests, and the
cells of a sweep come out of flags and suites as llama-benchy orders them. Pure: no server."""
from __future__ import annotations

import random

import pytest
from llama_benchy.client import LLMClient, RequestResult
from llama_benchy.results import BenchmarkResults

from sparkops.base.errors import SparkopsError
from sparkops.bench.load.records import RequestRecord
from sparkops.bench.measure import benchy_metrics
from sparkops.bench.measure.cells import Cell, depth_plan, int_list, serving_plan, suite_plan
from sparkops.config import defaults_layer


def record(rng: random.Random, start: float, prompt: int, tokens: int, role_chunk: bool = True,
           per_chunk: int = 1) -> RequestRecord:
    """A request as our client records it: a role-only event with the first token (vLLM's chat
    stream), then content events, some carrying several tokens."""
    ttfr = rng.uniform(0.05, 0.4)
    t, events, text = ttfr, [], []
    if role_chunk:
        events.append(t)
        text.append(False)
    chunks = max(1, tokens // per_chunk)
    for _ in range(chunks):
        events.append(t)
        text.append(True)
        t += rng.uniform(0.008, 0.03) * per_chunk
    return RequestRecord(index=0, prompt_id="p", max_tokens=tokens, success=True, start_s=start,
                         events_s=events, text_events=text, prompt_tokens=prompt, completion_tokens=tokens)


def as_benchy(rec: RequestRecord) -> RequestResult:
    """The same request as llama-benchy's client would have recorded it (no token ids from the
    server: the usage count spread over the content chunks)."""
    content = [rec.start_s + t for t, has in zip(rec.events_s, rec.text_events) if has]
    return RequestResult(start_ts=rec.start_s, end_ts=rec.start_s + rec.events_s[-1] + 0.001,
                         first_token_ts=content[0], first_response_ts=rec.start_s + rec.events_s[0],
                         prompt_tokens=rec.prompt_tokens or 0, total_tokens=rec.completion_tokens or 0,
                         token_timestamps=LLMClient._interpolate_token_timestamps(content, rec.completion_tokens))


@pytest.mark.parametrize("concurrency,per_chunk,prompt", [(1, 1, 2048), (4, 1, 2048), (8, 3, 1900), (2, 1, 9000)])
def test_figures_equal_llama_benchy_s_own_code(concurrency, per_chunk, prompt):
    rng = random.Random(concurrency * 10 + per_chunk)
    runs = [[record(rng, rng.uniform(0, 0.002), prompt, rng.choice([32, 64, 128]), per_chunk=per_chunk)
             for _ in range(concurrency)] for _ in range(3)]
    latency, expected = 0.0123, 2048
    ours = benchy_metrics.figures(runs, concurrency, expected, latency)

    theirs = BenchmarkResults()
    theirs.add("m", 2048, 128, 0, concurrency, [[as_benchy(r) for r in rs] for rs in runs], latency, expected)
    run = theirs.runs[0].model_dump()
    for key in benchy_metrics.KEYS:
        assert (ours[key] is None) == (run[key] is None), key
        if ours[key] is not None:
            assert ours[key]["mean"] == pytest.approx(run[key]["mean"], rel=1e-9), key
            assert ours[key]["std"] == pytest.approx(run[key]["std"], rel=1e-9, abs=1e-9), key
            assert ours[key]["values"] == pytest.approx(run[key]["values"], rel=1e-9), key


def test_usage_far_from_the_expected_count_is_not_trusted():
    rec = record(random.Random(1), 0.0, 10, 16)
    assert benchy_metrics.prompt_tokens(rec, 2048) == 2048  # 10 is not within 20% of 2048
    rec.prompt_tokens = 2000
    assert benchy_metrics.prompt_tokens(rec, 2048) == 2000


def test_failed_requests_do_not_count_and_no_data_is_null():
    rec = RequestRecord(index=0, prompt_id="p", max_tokens=8, success=False, error="HTTP 500: boom")
    figs = benchy_metrics.figures([[rec]], 1, 100, 0.0)
    assert all(v is None for v in figs.values())
    assert benchy_metrics.counted_prompt_tokens([[rec]]) is None


def test_peak_of_a_short_burst_counts_over_its_span():
    assert benchy_metrics.peak([0.0, 0.1, 0.2, 0.5]) == pytest.approx(4 / 0.5)
    assert benchy_metrics.peak([0.0, 0.5, 1.0, 1.2, 2.5]) == 3.0  # three within (0.2, 1.2]


def test_depth_cells_follow_llama_benchy_s_loop_order_and_names():
    plan = depth_plan(pp="512,2048", tg="32", depth="0,16k", concurrency="1,8", runs=3)
    assert [c.id for c in plan.cells][:4] == ["pp512_tg32_d0_c1", "pp512_tg32_d0_c8",
                                              "pp2048_tg32_d0_c1", "pp2048_tg32_d0_c8"]
    assert plan.cells[-1].depth == 16384 and plan.cells[-1].prompt_tokens == 16384 + 2048
    assert plan.cells[1].requests == 8


@pytest.mark.parametrize("value,what", [("1,x", "pp"), ("", "tg"), ("0", "concurrency"), ("-1", "depth")])
def test_bad_lists_are_user_errors(value, what):
    with pytest.raises(SparkopsError) as e:
        int_list(value, what)
    assert f"--{what}" in e.value.message


def test_a_cell_longer_than_max_model_len_says_why():
    cell = Cell(tg=128, concurrency=1, requests=1, pp=2048, depth=32768)
    assert cell.too_long(32768) == ("needs 34944 tokens (depth 32768 + pp 2048 + tg 128), max_model_len is 32768")
    assert cell.too_long(65536) is None and cell.too_long(None) is None


def test_built_in_suites():
    bench = defaults_layer().data["bench"]
    board = suite_plan("leaderboard", bench)
    assert {(c.pp, c.tg, c.concurrency) for c in board.cells} == {(2048, 32, 1), (2048, 128, 1)}
    assert sorted({c.depth for c in board.cells}) == [0, 4096, 8192, 16384, 32768] and board.runs == 3
    serving = suite_plan("serving", bench)
    assert serving.kind == "serving" and [c.concurrency for c in serving.cells] == [1, 2, 4, 8, 16, 32, 64]
    assert [c.requests for c in serving.cells] == [16, 16, 16, 16, 32, 64, 128]
    assert suite_plan("quick", bench, runs=5).runs == 5
    with pytest.raises(SparkopsError) as e:
        suite_plan("nope", bench)
    assert "leaderboard" in (e.value.fix or "")


def test_serving_plan_caps_prompts():
    plan = serving_plan(concurrency="1,64", max_tokens=64, runs=2, dataset="d", max_prompts=100)
    assert [c.requests for c in plan.cells] == [16, 100]


def test_tokenizer_falls_back_to_the_cached_tokenizer_then_to_estimates(tmp_path):
    """A server without /tokenize: the model's tokenizer.json from the Hugging Face cache (as
    huggingface_hub lays it out), and without that, the word estimate."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from benchy_compare import word_tokenizer

    from sparkops.bench.load.tokens import pick_tokens

    class NoTokenize(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            self.send_error(404)

        def log_message(self, *args):
            pass

    srv = HTTPServer(("127.0.0.1", 0), NoTokenize)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        snap = tmp_path / "hub" / "models--org--model" / "snapshots" / "abc123"
        snap.mkdir(parents=True)
        (tmp_path / "hub" / "models--org--model" / "refs").mkdir()
        (tmp_path / "hub" / "models--org--model" / "refs" / "main").write_text("abc123")
        word_tokenizer(snap / "tokenizer.json")
        tokens = pick_tokens(url, "m", None, hf_repo="org/model", hf_home=str(tmp_path))
        assert tokens.kind == "huggingface"
        ids = tokens.encode("It was the best of times")
        assert len(ids) == 6 and tokens.decode(ids) == "It was the best of times"
        assert pick_tokens(url, "m", None, hf_repo="org/other", hf_home=str(tmp_path)).kind == "approximate"
    finally:
        srv.shutdown()
