"""inv tune's pure parts: the search space, the SLOs and scores, the noise rule, coordinate
descent against a known response surface, goodput's bisection, and --write into the local
override (tomlkit, comments kept, 0600)."""
from __future__ import annotations

import itertools
import json
import os
import stat

import pytest

from sparkops.base.errors import SparkopsError
from sparkops.config import load_config
from sparkops.tune import objective as obj
from sparkops.tune.search import Trial, grid_size, key, next_step
from sparkops.tune.space import candidate_sets, check_safe, parse_search, split_values
from sparkops.tune.write import applied_lines, write_winner


def test_search_values_parse_as_toml_and_bad_searches_are_refused():
    dims = parse_search(["serving.max_num_seqs=4,8,16", 'serving.kv_cache_dtype="auto","fp8"',
                         "serving.enforce_eager=false,true", "serving.cudagraph_capture_sizes=[1,2,4],[1,2,4,5,10]",
                         "layout=tp,dp"])
    assert [d.values for d in dims] == [(4, 8, 16), ("auto", "fp8"), (False, True), ([1, 2, 4], [1, 2, 4, 5, 10]),
                                        ("tp", "dp")]
    assert split_values('"a,b",c') == ["a,b", "c"]
    for bad, said in (("serving.max_num_seqs", "expected KEY=V1"), ("model.repo=a,b", "cannot be tuned"),
                      ("secrets.api_key=x,y", "cannot be tuned"), ("layout=tp,ring", "unknown layout"),
                      ("serving.max_num_seqs=4,4", "given twice"), ("serving.max_num_seqs=", "expected KEY=V1"),
                      ("serving.x;rm -rf /=1", "cannot be tuned")):
        with pytest.raises(SparkopsError, match=said):
            parse_search([bad])
    with pytest.raises(SparkopsError, match="twice"):
        parse_search(["serving.max_num_seqs=4", "serving.max_num_seqs=8"])


def test_gpu_memory_utilization_above_the_safe_cap_is_refused():
    check_safe(parse_search(["serving.gpu_memory_utilization=0.8,0.9"]), 0.90)
    with pytest.raises(SparkopsError, match="above the safe maximum 0.9") as exc:
        check_safe(parse_search(["serving.gpu_memory_utilization=0.85,0.95"]), 0.90)
    assert "0.95" in exc.value.message and "tune.max_gpu_memory_utilization" in exc.value.fix


def test_candidate_sets_load_as_the_profile_with_those_values():
    sets = candidate_sets({"layout": "solo", "serving.max_num_seqs": 8, "serving.enforce_eager": True}, 2, 1)
    cfg = load_config("smoke", "local", sets=sets, environ={})
    assert cfg.serving["max_num_seqs"] == 8 and cfg.serving["enforce_eager"] is True
    assert cfg.serving["tensor_parallel"] == 1


def test_slos_parse_and_misses_name_the_figure():
    slos = obj.parse_slos("p99_itl_ms<=30, p50_ttft_ms<=500")
    assert [str(s) for s in slos] == ["p99_itl_ms<=30", "median_ttft_ms<=500"]
    cell = {"metrics": {"p99_itl_ms": 31.5, "median_ttft_ms": 200.0}}
    assert obj.slo_misses(cell, slos) == ["p99_itl_ms 31.5 > 30"]
    assert obj.slo_misses({"metrics": {}}, slos[:1]) == ["p99_itl_ms not measured"]
    for bad in ("p99_itl<=30", "p99_itl_ms<30", "p99_itl_ms<=x", "rm -rf"):
        with pytest.raises(SparkopsError, match="not an SLO"):
            obj.parse_slos(bad)


def _cell(c, tok_s, std, itl):
    return {"id": f"serving_tg128_c{c}", "status": "ok", "concurrency": c,
            "spread": {"output_throughput": {"mean": tok_s, "std": std}}, "metrics": {"p99_itl_ms": itl}}


def test_throughput_is_the_best_cell_within_the_slos_with_its_spread():
    doc = {"cells": [_cell(1, 50, 1, 10), _cell(8, 300, 9, 25), _cell(32, 600, 20, 60)]}
    s = obj.score([doc], "throughput", obj.parse_slos("p99_itl_ms<=30"))
    assert (s.value, s.std) == (300, 9) and "serving_tg128_c8" in s.detail and "c32" in s.detail
    assert obj.score([doc], "throughput", []).value == 600
    assert obj.score([doc], "throughput", obj.parse_slos("p99_itl_ms<=5")).value is None
    assert obj.score([doc], "goodput", obj.parse_slos("p99_itl_ms<=30")).value == 8


def test_a_lead_counts_only_beyond_both_spreads():
    inc = obj.Score(100.0, 5.0, "tok/s", "")
    assert not obj.beats(obj.Score(109.0, 5.0, "tok/s", ""), inc)  # 104 < 105: a tie, the incumbent stays
    assert obj.beats(obj.Score(111.0, 5.0, "tok/s", ""), inc)  # 106 > 105
    assert not obj.beats(obj.Score(None, 0.0, "", ""), inc)
    assert obj.beats(obj.Score(1.0, 0.5, "", ""), obj.Score(None, 0.0, "", ""))
    g = obj.gain(obj.Score(120.0, 6.0, "", ""), obj.Score(100.0, 5.0, "", ""))
    # 1.2 x hypot(5 %, 5 %) = 8.5 %
    assert g["percent"] == 20.0
    assert g["std_percent"] == pytest.approx(1.2 * (0.05 ** 2 + 0.05 ** 2) ** 0.5 * 100, abs=0.1)


# A known response surface: throughput peaks at max_num_seqs 16 with fp8 and CUDA graphs; eager
# halves it; 64 sequences do not fit (infeasible).
def surface(c: dict) -> Trial:
    seqs = c["serving.max_num_seqs"]
    if seqs == 64:
        return Trial(c, "infeasible", obj.Score(None, 0.0, "", "did not start"), "did not start: out of memory")
    base = {4: 100, 8: 180, 16: 250, 32: 240}[seqs]
    value = base * (1.2 if c["serving.kv_cache_dtype"] == "fp8" else 1.0) * (0.5 if c["serving.enforce_eager"] else 1)
    return Trial(c, "ok", obj.Score(value, value * 0.02, "tok/s", "x"))


def run_search(dims, start, measure):
    trials, order = {}, []
    while True:
        step = next_step(dims, start, trials)
        if step.candidate is None:
            return step, order
        trials[key(step.candidate)] = measure(step.candidate)
        order.append(step.candidate)


def test_coordinate_descent_finds_the_known_best_in_fewer_trials_than_the_grid():
    dims = parse_search(["serving.max_num_seqs=4,8,16,32,64", 'serving.kv_cache_dtype="auto","fp8"',
                         "serving.enforce_eager=true,false"])
    start = {"serving.max_num_seqs": 4, "serving.kv_cache_dtype": "auto", "serving.enforce_eager": True}
    step, order = run_search(dims, start, surface)
    best = max((dict(zip([d.key for d in dims], v)) for v in itertools.product(*[d.values for d in dims])),
               key=lambda c: surface(c).score.value or 0)
    assert step.incumbent == best == {"serving.max_num_seqs": 16, "serving.kv_cache_dtype": "fp8",
                                      "serving.enforce_eager": False}
    assert grid_size(dims, start) == 20
    assert len(order) < 20 and len(order) == len({key(c) for c in order})  # nothing measured twice
    # the first pass (start, 4 more max_num_seqs, fp8, not eager), then a second over the settings
    # before the last change (max_num_seqs' other 4 and auto beside the new values): the grid's 20 at 12
    assert len(order) == 1 + 4 + 1 + 1 + 4 + 1
    assert any("INFEASIBLE (did not start: out of memory)" in d for d in step.decisions)
    assert all("±" in d for d in step.decisions)  # every decision with its numbers


def test_a_tie_within_the_spread_keeps_the_profile_s_own_value():
    dims = parse_search(["serving.max_num_seqs=8,16"])
    noisy = {8: obj.Score(100.0, 6.0, "tok/s", ""), 16: obj.Score(108.0, 6.0, "tok/s", "")}
    step, order = run_search(dims, {"serving.max_num_seqs": 8},
                             lambda c: Trial(c, "ok", noisy[c["serving.max_num_seqs"]]))
    assert step.incumbent == {"serving.max_num_seqs": 8} and len(order) == 2
    assert "keep serving.max_num_seqs=8" in step.decisions[0]


def test_a_start_that_does_not_run_is_replaced_by_the_first_that_does():
    dims = parse_search(["serving.max_num_seqs=64,8"])
    step, _ = run_search(dims, {"serving.max_num_seqs": 64},
                         lambda c: surface(c | {"serving.kv_cache_dtype": "auto", "serving.enforce_eager": False}))
    assert step.incumbent == {"serving.max_num_seqs": 8}


def test_replaying_a_partial_record_asks_for_the_next_unmeasured_trial_only():
    dims = parse_search(["serving.max_num_seqs=4,8,16", "serving.enforce_eager=true,false"])
    start = {"serving.max_num_seqs": 4, "serving.enforce_eager": True}
    full = lambda c: surface(c | {"serving.kv_cache_dtype": "auto"})  # noqa: E731
    _, order = run_search(dims, start, full)
    for cut in range(len(order)):
        kept = {key(c): full(c) for c in order[:cut]}
        assert next_step(dims, start, kept).candidate == order[cut]


def test_goodput_bisects_the_levels():
    levels = [1, 2, 4, 8, 16, 32, 64]
    for limit in (0, 1, 4, 8, 64):
        meets_all = {c: c <= limit for c in levels}
        measured: dict[int, bool] = {}
        while True:
            nxt = obj.bisection_order(levels, measured.get)[-1]
            if nxt in measured:
                break
            measured[nxt] = meets_all[nxt]
        best = max([c for c, ok in measured.items() if ok], default=0)
        assert best == limit and len(measured) <= 4, (limit, measured)


def _summary(tmp_path, changed=True):
    return {"id": "20261204-101500-smoke", "profile": "smoke", "cluster": "local", "objective": "throughput",
            "slos": ["p99_itl_ms<=30"], "created_at": "2026-12-04T10:15:00+00:00",
            "finished_at": "2026-12-04T10:45:00+00:00",
            "winner": {"changed": {"serving.max_num_seqs": 16} if changed else {},
                       "sets": ["serving.max_num_seqs=16", "serving.enforce_eager=false"],
                       "gain": {"percent": 23.4, "std_percent": 3.1}, "vllm_version": "0.26.0"}}


def test_write_keeps_the_user_s_file_and_up_loads_the_winner(tmp_path, monkeypatch):
    path = tmp_path / "sparkops.local.toml"
    path.write_text('# my cluster, do not lose this\n[secrets]\napi_key = "k"  # the key\n\n'
                    "[profiles.smoke.serving]\nmax_model_len = 512  # mine\n")
    keys = write_winner(_summary(tmp_path), path, tmp_path / "summary.json")
    assert keys == ["serving.max_num_seqs"]  # enforce_eager was not changed: not written
    text = path.read_text()
    assert "# my cluster, do not lose this" in text and 'api_key = "k"  # the key' in text and "# mine" in text
    assert "max_num_seqs = 16 # inv tune 20261204-101500-smoke: throughput +23.4 % ± 3.1" in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    monkeypatch.setenv("SPARKOPS_LOCAL", str(path))
    cfg = load_config("smoke", "local", environ={})
    assert cfg.serving["max_num_seqs"] == 16 and cfg.serving["max_model_len"] == 512
    lines = applied_lines(cfg.doc)
    assert "tuned by `inv tune` 20261204-101500-smoke" in lines[0] and "+23.4 % ± 3.1" in lines[0]
    assert lines[1] == "  serving.max_num_seqs = 16"
    # the record of a tune serves nothing: the same deployment's hash with or without it
    path.with_name("empty.toml").write_text("")
    monkeypatch.setenv("SPARKOPS_LOCAL", str(path.with_name("empty.toml")))
    assert cfg.config_hash() == load_config("smoke", "local", sets=["serving.max_num_seqs=16",
                                                                     "serving.max_model_len=512",
                                                                     'secrets.api_key="k"'],
                                            environ={}).config_hash()
    assert write_winner(_summary(tmp_path, changed=False), path, tmp_path / "s.json") == []


def test_new_serving_keys_reach_vllm_serve():
    from sparkops.plan.vllm_args import serve_argv
    cfg = load_config("smoke", "local", environ={}, sets=[
        "serving.max_num_batched_tokens=4096", "serving.cudagraph_capture_sizes=[10,1,2,5]",
        'serving.speculative_config={method="mtp", num_speculative_tokens=2}'])
    argv = serve_argv(cfg)
    assert argv[argv.index("--max-num-batched-tokens") + 1] == "4096"
    assert json.loads(argv[argv.index("--compilation-config") + 1]) == {"cudagraph_capture_sizes": [1, 2, 5, 10]}
    assert json.loads(argv[argv.index("--speculative-config") + 1]) == {"method": "mtp", "num_speculative_tokens": 2}
    with pytest.raises(SparkopsError):
        load_config("smoke", "local", environ={}, sets=["serving.cudagraph_capture_sizes=[0]"])
