"""The start-up timeline parser against vLLM logs recorded on an H200 (vLLM 0.26.0, 2026-12-03,
benchmarks/gpu/driver.sh). Expected values are read off the logs by hand: timestamps to the
second, GiB and tokens as vLLM printed them."""
from pathlib import Path

import pytest

from sparkops.facts.vllm_startup import last_start

LOGS = Path(__file__).parent / "data" / "vllm_logs"


def _start(name):
    return last_start((LOGS / f"h200-{name}-startup.log").read_text())


def test_dense_model_every_phase_in_order():
    s = _start("qwen2.5-7b-dummy")
    assert s.version == "0.26.0" and s.architecture == "Qwen2ForCausalLM"
    assert s.phases == [("config", 22), ("engine process", 18), ("weights", 3), ("torch.compile", 23),
                        ("KV cache", 2), ("CUDA graphs", 6), ("engine ready", 15), ("API up", 1)]
    assert s.total_s == 90
    assert (s.weights_gib, s.kv_cache_gib, s.kv_cache_tokens) == (14.29, 103.19, 1_932_208)
    assert (s.cuda_graphs_gib, s.compile_s) == (0.89, 21.67)
    assert s.line().startswith("vLLM 0.26.0 start-up 90s: config 22s, engine process 18s, weights 3s")
    assert "KV cache 103.2 GiB (1,932,208 tokens)" in s.line()


def test_moe_model_memory():
    s = _start("mixtral-8x7b-dummy")
    assert s.architecture == "MixtralForCausalLM" and s.total_s == 117
    assert (s.weights_gib, s.kv_cache_gib, s.kv_cache_tokens) == (87.0, 29.19, 239_088)
    assert dict(s.phases)["CUDA graphs"] == 25 and s.compile_s == 26.66


def test_eager_model_leaves_out_what_did_not_happen():
    s = _start("smoke-eager")
    names = [n for n, _ in s.phases]
    assert names == ["config", "engine process", "weights", "KV cache", "engine ready", "API up"]
    assert s.compile_s is None and s.cuda_graphs_gib is None
    assert "CUDA graphs" not in s.line() and "torch.compile" not in s.line()
    assert s.as_dict()["phases"][-1] == {"phase": "API up", "seconds": 21.0}


def test_the_last_of_several_starts_counts():
    qwen = (LOGS / "h200-qwen2.5-7b-dummy-startup.log").read_text()
    mixtral = (LOGS / "h200-mixtral-8x7b-dummy-startup.log").read_text()
    assert last_start(qwen + mixtral).architecture == "MixtralForCausalLM"
    assert last_start(mixtral + qwen).architecture == "Qwen2ForCausalLM"


@pytest.mark.parametrize("text", ["", "no vLLM here\n", "INFO 12-03 21:25:28 [x.py:1] FlashAttention version 3\n"])
def test_no_start_no_timeline(text):
    assert last_start(text) is None


def test_a_start_cut_short_has_only_the_phases_it_reached():
    lines = (LOGS / "h200-qwen2.5-7b-dummy-startup.log").read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if "Model loading took" in line)
    s = last_start("\n".join(lines[:cut + 1]))
    assert [n for n, _ in s.phases] == ["config", "engine process", "weights"]
    assert s.kv_cache_gib is None and s.total_s == 43
