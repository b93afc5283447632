"""Speculative decoding measured honestly: a sweep of a server that speculates records, per
cell, what vLLM's own counters moved by during the measured runs (drafts, draft tokens, accepted,
per position), and reports accepted tokens per step beside tok/s, because such tok/s depend on
the prompts' content.

The counters' names and meaning are vLLM's (vllm/v1/spec_decode/metrics.py in the CPU build
0.32: `vllm:spec_decode_num_{drafts,draft_tokens,accepted_tokens}_total` and
`..._accepted_tokens_per_pos_total{position=}`). The server here is the synthetic one with
counters of a known truth: 3 drafts a step, the first 2 accepted, so every step emits 3 tokens."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_bench_sweep import sweep

from sparkops.apply.vllm_metrics import samples, spec_decode_counters
from sparkops.bench.measure.spec_decode import figures
from sparkops.bench.measure.sweep import render_sweep
from sparkops.bench.report.report import report
from sparkops.bench.results.files import validate
from sparkops.testing.synthetic_server import ServerConfig, SyntheticServer

# vLLM's exposition (one engine; a second engine's lines are summed).
TEXT = """# HELP vllm:spec_decode_num_drafts_total Number of spec decoding drafts.
# TYPE vllm:spec_decode_num_drafts_total counter
vllm:spec_decode_num_drafts_total{engine="0",model_name="m"} 100.0
vllm:spec_decode_num_drafts_total{engine="1",model_name="m"} 20.0
vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="m"} 300.0
vllm:spec_decode_num_draft_tokens_total{engine="1",model_name="m"} 60.0
vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="m"} 150.0
vllm:spec_decode_num_accepted_tokens_total{engine="1",model_name="m"} 30.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="0"} 80.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="1"} 50.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="2"} 20.0
vllm:generation_tokens_total{engine="0",model_name="m"} 999.0
"""


def test_counters_are_read_summed_over_engines_and_none_without_speculation():
    c = spec_decode_counters(TEXT)
    assert c == {"drafts": 120.0, "draft_tokens": 360.0, "accepted": 180.0,
                 "per_position": {0: 80.0, 1: 50.0, 2: 20.0}}
    assert spec_decode_counters('vllm:generation_tokens_total{engine="0"} 5.0\n') is None


def test_figures_are_the_deltas_by_vllm_s_definitions():
    before = {"drafts": 100.0, "draft_tokens": 300.0, "accepted": 150.0, "per_position": {0: 80.0, 1: 50.0}}
    after = {"drafts": 140.0, "draft_tokens": 420.0, "accepted": 210.0, "per_position": {0: 110.0, 1: 70.0, 2: 10.0}}
    f = figures(before, after)
    # 40 drafts, 120 draft tokens, 60 accepted: rate 0.5; length 1 + 60/40 = 2.5; per position
    # (30, 20, 10) / 40.
    assert f == {"drafts": 40, "draft_tokens": 120, "accepted": 60, "acceptance_rate": 0.5,
                 "mean_acceptance_length": 2.5, "per_position": [0.75, 0.5, 0.25]}
    assert figures(before, before)["mean_acceptance_length"] is None  # nothing drafted in between
    assert figures(None, after) is None and figures(before, None) is None


@pytest.fixture(scope="module")
def speculating():
    cfg = ServerConfig(ttft_s=0.005, itl_s=0.001, spec_tokens=3, spec_accepted=2, max_model_len=8192)
    with SyntheticServer(cfg, process=True) as srv:
        yield srv


def test_a_sweep_records_acceptance_per_cell_and_the_report_shows_it(speculating, tmp_path):
    doc, path = sweep(speculating.base_url, tmp_path, pp="64", tg="30", depth="0", concurrency="1,2", runs=2)
    validate(json.loads(path.read_text()))
    for cell in doc["cells"]:
        spec = cell["spec_decode"]
        requests_measured = 2 * cell["requests_per_run"]
        # 30 tokens a request in steps of 3: 10 drafts of 3 tokens, 20 accepted, per measured request.
        assert (spec["drafts"], spec["draft_tokens"], spec["accepted"]) == (
            10 * requests_measured, 30 * requests_measured, 20 * requests_measured), cell["id"]
        assert spec["mean_acceptance_length"] == 3.0 and spec["acceptance_rate"] == pytest.approx(2 / 3, abs=1e-4)
        assert spec["per_position"] == [1.0, 1.0, 0.0]
    text = render_sweep(doc, path)
    assert "accepted/step" in text and "3.00" in text and "speculative decoding" in text
    df, _, _ = report(tmp_path / "results", tmp_path / "report")
    compare = (tmp_path / "report" / "compare.md").read_text()
    assert "accepted_per_step" in compare and "3.00" in compare and "move with the content" in compare


def test_a_server_that_does_not_speculate_records_none(tmp_path):
    with SyntheticServer(ServerConfig(ttft_s=0.005, itl_s=0.001, max_model_len=8192), process=True) as srv:
        doc, _ = sweep(srv.base_url, tmp_path, pp="64", tg="8", depth="0", runs=1)
    assert [c["spec_decode"] for c in doc["cells"]] == [None]
    assert "accepted/step" not in render_sweep(doc)


# --- a real vLLM that speculates --------------------------------------------------------------
# Recorded on vLLM 0.32.0's CPU build serving the smoke model with n-gram speculation (k = 3):
#   vllm serve sparkops/smoke-tiny-llama --max-model-len 2048 \
#     --speculative-config '{"method":"ngram","num_speculative_tokens":3,"prompt_lookup_max":4,"prompt_lookup_min":2}'
# /metrics before and after a sweep (`bench --url ... --pp 128 --tg 64 --depth 0 --concurrency 1,2
# --runs 2`, replies of exactly 64 tokens), trimmed to the series read here; the sweep's result
# as it was written (tests/data/bench/ngram-cpu-0.32-sweep.json).
RECORDED = Path(__file__).resolve().parent / "data"


def recorded(name: str) -> str:
    return (RECORDED / "vllm_metrics" / f"ngram-cpu-0.32-{name}.txt").read_text()


def total(text: str, series: str) -> float:
    return sum(value for name, _, value in samples(text) if name == series)


def holds_vllm_s_invariants(f: dict, k: int = 3) -> None:
    # n-gram drafts up to k tokens (fewer near the end of a match); a draft token is accepted
    # only when every one before it was: per position the share cannot grow.
    assert 0 < f["drafts"] and f["drafts"] <= f["draft_tokens"] <= k * f["drafts"]
    assert f["accepted"] <= f["draft_tokens"]
    assert len(f["per_position"]) == k
    assert all(a >= b for a, b in zip(f["per_position"], f["per_position"][1:])), f["per_position"]
    assert sum(f["per_position"]) * f["drafts"] == pytest.approx(f["accepted"], abs=k * f["drafts"] * 5e-5)
    assert f["mean_acceptance_length"] == pytest.approx(1 + f["accepted"] / f["drafts"], abs=1e-4)


def test_a_real_vllm_s_counters_are_read_as_it_defines_them():
    before, after = recorded("before"), recorded("after")
    f = figures(spec_decode_counters(before), spec_decode_counters(after))
    holds_vllm_s_invariants(f)
    # Known from the client's side: every request got 64 tokens; the first comes from the
    # prefill, each later step emits 1 + what it accepted, and a step drafts at most once.
    done = total(after, "vllm:request_success_total") - total(before, "vllm:request_success_total")
    generated = total(after, "vllm:generation_tokens_total") - total(before, "vllm:generation_tokens_total")
    assert done > 0 and generated == 64 * done
    steps = generated - done - f["accepted"]
    assert f["drafts"] <= steps


def test_a_real_vllm_s_sweep_shows_its_acceptance_in_the_result_and_the_report(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    shutil.copy(RECORDED / "bench" / "ngram-cpu-0.32-sweep.json", results / "ngram.json")
    doc = json.loads((results / "ngram.json").read_text())
    validate(doc)
    assert doc["provenance"]["vllm_version"] == "0.32.0"
    before, after = spec_decode_counters(recorded("before")), spec_decode_counters(recorded("after"))
    whole = figures(before, after)
    for cell in doc["cells"]:
        holds_vllm_s_invariants(cell["spec_decode"])
    # The cells count only their measured runs: together at most what the server did in all.
    assert sum(c["spec_decode"]["drafts"] for c in doc["cells"]) <= whole["drafts"]
    assert sum(c["spec_decode"]["accepted"] for c in doc["cells"]) <= whole["accepted"]
    text = render_sweep(doc, results / "ngram.json")
    first = doc["cells"][0]["spec_decode"]["mean_acceptance_length"]
    assert "accepted/step" in text and f"{first:.2f}" in text
    report(results, tmp_path / "report")
    compare = (tmp_path / "report" / "compare.md").read_text()
    assert "accepted_per_step" in compare and "move with the content" in compare
