"""The 2026 presets (profiles for the models Spark owners run at the end of 2026): each validates
on its cluster, its architecture numbers are what profile-new reads from the model's own
config.json (tests/data/hf_configs, sources in SOURCES.md), its settings cite where they come
from, and the memory fit gives the verdict worked out by hand below."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparkops.checks.vllm_flags import known_flags, used_flags
from sparkops.config import load_config
from sparkops.config.memfit import GIB, estimate
from sparkops.facts.recorded import recorded_facts
from sparkops.models.hf_config import parse
from sparkops.plan import plan_up

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "hf_configs"
# preset -> the folder of its model's files
PRESETS = {"gpt-oss-120b": "gpt-oss-120b", "gpt-oss-20b": "gpt-oss-20b",
           "qwen3.6-35b-a3b-nvfp4": "qwen3.6-35b-a3b-nvfp4", "deepseek-v4-flash": "deepseek-v4-flash",
           "minimax-m2.7-nvfp4": "minimax-m2.7-nvfp4",
           "nemotron-3-super-120b-a12b-nvfp4": "nemotron-3-super-120b-a12b-nvfp4"}


def facts(folder: str):
    read = lambda f: json.loads((DATA / folder / f).read_text()) if (DATA / folder / f).is_file() else None  # noqa: E731
    return parse(read("config.json"), read("model.safetensors.index.json"), read("hf_quant_config.json"))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_preset_has_its_model_s_own_architecture_numbers(name, isolated_override):
    cfg = load_config(name, "spark-pair", root=ROOT, environ={})
    assert cfg.model["arch"] == facts(PRESETS[name]).arch
    assert not cfg.model["gated"]  # none of these asks to accept a licence
    assert estimate(cfg.doc).verdict == "fits"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_vllm_knows_every_flag_a_preset_s_plan_gives_it(name, isolated_override):
    # vLLM 0.32's own `vllm serve --help=all` (the version the Spark image builds): a flag it
    # lacks would stop `up` at its preflight (checks/vllm_flags.py).
    known = known_flags((ROOT / "tests" / "data" / "vllm-serve-help-all-0.32.txt").read_text())
    cfg = load_config(name, "spark-pair", root=ROOT, environ={})
    flags = used_flags(plan_up(cfg, recorded_facts(cfg)[0]))
    assert flags and all(used <= known for used in flags.values()), {n: u - known for n, u in flags.items()}


CITED = ("kv_cache_dtype", "max_num_seqs", "gpu_memory_utilization", "speculative_config", "max_num_batched_tokens",
         "extra_args")


@pytest.mark.parametrize("name", sorted(set(PRESETS) - {"gpt-oss-20b"}))
def test_every_community_setting_says_where_it_comes_from(name):
    """Each such setting carries its source on its own line or in the comment block right above
    it (RECIPE: the recipe named at the top; PEERS: the community's collected runs)."""
    lines = (ROOT / "profiles" / f"{name}.toml").read_text().splitlines()
    assert "spark-arena/recipe-registry" in "\n".join(lines) and "tests/data/hf_configs" in "\n".join(lines)
    for i, line in enumerate(lines):
        if line.split("=", 1)[0].strip() not in CITED:
            continue
        above = []
        for prior in reversed(lines[:i]):
            if not prior.startswith("#"):
                break
            above.append(prior)
        said = line.partition("#")[2] + " ".join(above)
        assert "RECIPE" in said or "PEERS" in said, (name, line)


def test_the_mtp_preset_keeps_a_cache_for_its_draft_layer(isolated_override):
    cfg = load_config("qwen3.6-35b-a3b-nvfp4", "spark-pair", root=ROOT, environ={})
    fit = estimate(cfg.doc)
    # TP 2: one KV head a rank, 256 wide, K and V, fp8: 512 bytes a layer and token; 10 full
    # attention layers + the MTP layer keep 262,144 tokens: 512 x 11 x 262,144 = 1.375 GiB.
    assert fit.kv_one_seq_gib == pytest.approx(512 * 11 * 262144 / GIB)
    without = load_config("qwen3.6-35b-a3b-nvfp4", "spark-pair", root=ROOT, environ={},
                          sets=['serving.speculative_config.method="ngram"'])  # no layer of its own
    assert estimate(without.doc).kv_one_seq_gib == pytest.approx(512 * 10 * 262144 / GIB)


def test_a_separate_draft_model_s_weights_count(isolated_override):
    base = load_config("qwen2.5-7b-instruct", "spark-pair", root=ROOT, environ={})
    drafted = load_config("qwen2.5-7b-instruct", "spark-pair", root=ROOT, environ={},
                          sets=["model.draft_weights_gb=2.0"])
    # 2 GB split over two tensor-parallel ranks: 1 GB more on each node.
    assert estimate(drafted.doc).weights_gib - estimate(base.doc).weights_gib == pytest.approx(1e9 / GIB)


def test_the_sliding_window_counts_the_tokens_in_flight(isolated_override):
    cfg = load_config("gpt-oss-120b", "spark-pair", root=ROOT, environ={})
    fit = estimate(cfg.doc)
    # TP 2: 4 KV heads a rank x 64 x 2 (K, V) x 1 byte (fp8) = 512 bytes a layer and token.
    # 18 full layers keep 32,768 tokens; 18 sliding ones 127 + 2 x 8,192 in flight = 16,511,
    # in blocks of 16 and one more: 16,528.
    assert fit.kv_one_seq_gib == pytest.approx(512 * (18 * 32768 + 18 * 16528) / GIB)


def test_numbers_that_only_feed_the_estimate_do_not_make_a_deployment_stale(isolated_override):
    before = load_config("qwen2.5-7b-instruct", "spark-pair", root=ROOT, environ={})
    after = load_config("qwen2.5-7b-instruct", "spark-pair", root=ROOT, environ={},
                        sets=["model.arch.sliding_window=4096", "model.arch.sliding_layers=4",
                              "model.arch.mtp_layers=1", "model.draft_weights_gb=1.5"])
    assert after.config_hash() == before.config_hash()
    served = load_config("qwen2.5-7b-instruct", "spark-pair", root=ROOT, environ={},
                         sets=["serving.kv_cache_dtype=\"fp8\""])
    assert served.config_hash() != before.config_hash()  # what is served still counts
