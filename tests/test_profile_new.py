"""`inv profile-new`: a profile from a model's own files. Real config.json files of five
architectures (tests/data/hf_configs, each with its source in SOURCES.md): a dense model
(Qwen2.5-7B-Instruct), an MoE (Qwen3-30B-A3B), an MLA model (DeepSeek-V3), an NVFP4 checkpoint
(nvidia/MiniMax-M2.5-NVFP4, ModelOpt) and an MXFP4 one (gpt-oss-20b, sliding-window layers).
The numbers each yields, and the KV cache the memory fit computes from them, are checked
against values worked out by hand from the files (in the comments)."""
from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import tomlkit

from sparkops.base.errors import ConfigError, SparkopsError
from sparkops.config import load_config
from sparkops.config.memfit import GIB, estimate, kv_bytes_one_sequence
from sparkops.models.hf_config import parse
from sparkops.models.profile_new import profile_document, profile_new

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "hf_configs"


def facts(name: str):
    folder = DATA / name
    read = lambda f: json.loads((folder / f).read_text()) if (folder / f).is_file() else None  # noqa: E731
    return parse(read("config.json"), read("model.safetensors.index.json"), read("hf_quant_config.json"))


def test_dense_gqa_model():
    f = facts("qwen2.5-7b-instruct")
    # hidden_size 3584 / 28 heads = head_dim 128; 4 KV heads; 28 layers.
    assert f.arch == {"num_layers": 28, "num_kv_heads": 4, "head_dim": 128, "max_position_embeddings": 32768,
                      "moe": False}
    assert (f.quantization, f.dtype, f.architecture) == (None, "bfloat16", "Qwen2ForCausalLM")
    # K and V: 2 x 28 layers x 4 heads x 128 x 2 bytes = 57,344 bytes a token; 32,768 tokens: 1,879,048,192.
    assert kv_bytes_one_sequence(f.arch, 32768, 2) == 1_879_048_192
    assert kv_bytes_one_sequence(f.arch, 32768, 2, tp=2) == 1_879_048_192 / 2  # 2 KV heads a rank
    assert kv_bytes_one_sequence(f.arch, 32768, 1) == 1_879_048_192 / 2  # fp8 KV cache halves it
    assert "weights' size is unknown" in " ".join(f.notes)  # no index here: said, not guessed


def test_moe_model():
    f = facts("qwen3-30b-a3b")
    assert f.arch["moe"] and (f.arch["num_experts"], f.arch["experts_per_token"]) == (128, 8)
    assert (f.arch["num_layers"], f.arch["num_kv_heads"], f.arch["head_dim"]) == (48, 4, 128)
    # 2 x 48 x 4 x 128 x 2 = 98,304 bytes a token; 1,000 tokens take 63 whole blocks of 16.
    assert kv_bytes_one_sequence(f.arch, 1000, 2) == 98_304 * 1008


def test_mla_model_keeps_one_compressed_latent_per_token():
    f = facts("deepseek-v3")
    assert (f.arch["attention"], f.arch["kv_lora_rank"], f.arch["qk_rope_head_dim"]) == ("mla", 512, 64)
    assert "num_kv_heads" not in f.arch and f.arch["num_layers"] == 61 and f.arch["num_experts"] == 256
    assert f.quantization == "fp8"  # its quantization_config: fp8, block-wise
    # 61 layers x (512 + 64) x 2 bytes = 70,272 bytes a token; the same on every tensor-parallel rank.
    assert kv_bytes_one_sequence(f.arch, 4096, 2) == 70_272 * 4096
    assert kv_bytes_one_sequence(f.arch, 4096, 2, tp=2) == 70_272 * 4096
    # The 128 heads' K and V (192 and 128 wide) it replaces would be 61 x 128 x 320 x 2 = 4,997,120 bytes.
    assert kv_bytes_one_sequence(f.arch, 16, 2) / 16 < 4_997_120 / 70


def test_nvfp4_modelopt_checkpoint():
    f = facts("minimax-m2.5-nvfp4")
    assert f.quantization == "nvfp4" and f.architecture == "MiniMaxM2ForCausalLM"
    assert f.arch["moe"] and f.arch["num_experts"] == 256
    # kv_cache_quant_algo FP8 in hf_quant_config.json (and kv_cache_scheme 8-bit float in
    # config.json): its profile serves an fp8 KV cache; a checkpoint without scales keeps vLLM's.
    assert f.kv_cache_fp8 and not facts("gpt-oss-20b").kv_cache_fp8 and not facts("deepseek-v3").kv_cache_fp8
    cfg = json.loads((DATA / "minimax-m2.5-nvfp4" / "config.json").read_text())
    assert parse(cfg).kv_cache_fp8  # config.json alone says it too
    written = tomlkit.dumps(profile_document("nvidia/MiniMax-M2.5-NVFP4", f, "x"))
    assert 'kv_cache_dtype = "fp8" # the checkpoint ships FP8 KV-cache scales' in written
    assert "kv_cache_dtype" not in tomlkit.dumps(profile_document("openai/gpt-oss-20b", facts("gpt-oss-20b"), "x"))


def test_mxfp4_model_with_sliding_window_layers():
    f = facts("gpt-oss-20b")
    assert f.quantization == "mxfp4"
    assert (f.arch["sliding_window"], f.arch["sliding_layers"], f.arch["num_layers"]) == (128, 12, 24)
    assert f.weights_gb == 13.8  # 13,761,264,768 bytes in its safetensors index
    # 2 x 8 heads x 64 x 2 bytes = 2,048 bytes a layer and token; 12 full layers keep 32,768
    # tokens; 12 sliding ones the window less one (127) in whole blocks of 16, and one block
    # more (the window need not start at a block's edge): 9 blocks, 144 tokens.
    # 2,048 x (12 x 32,768 + 12 x 144) = 808,845,312.
    assert kv_bytes_one_sequence(f.arch, 32768, 2) == 808_845_312
    # With 16,384 tokens in flight (two batches of 8,192: vLLM's default on a Spark, async
    # scheduling) a sliding layer holds 127 + 16,384 = 16,511 tokens: 1,032 + 1 blocks, 16,528.
    assert kv_bytes_one_sequence(f.arch, 32768, 2, in_flight=16384) == 2048 * (12 * 32768 + 12 * 16528)
    # Shorter than the window: full layers 7 blocks (112 tokens), sliding ones 7 + 1 (128).
    assert kv_bytes_one_sequence(f.arch, 100, 2) == 2048 * (12 * 112 + 12 * 128)


def test_linear_and_hybrid_layers_are_left_out_of_the_cache_and_said():
    base = json.loads((DATA / "qwen3-30b-a3b" / "config.json").read_text())
    linear = parse({**base, "layer_types": ["linear_attention"] * 36 + ["full_attention"] * 12})
    assert linear.arch["linear_layers"] == 36 and "fixed-size state" in " ".join(linear.notes)
    assert kv_bytes_one_sequence(linear.arch, 1000, 2) == 98_304 * 1008 / 4  # 12 of 48 layers
    hybrid = parse({**base, "num_hidden_layers": 8, "hybrid_override_pattern": "M-M*M-M*"})
    assert hybrid.arch["linear_layers"] == 6 and "hybrid model: 2 of 8" in " ".join(hybrid.notes)
    with pytest.raises(ValueError, match="layer count"):
        parse({"architectures": ["X"], "hidden_size": 64})


def test_impossible_arch_numbers_are_refused_by_the_profile_checks(isolated_override):
    with pytest.raises(ConfigError, match="exceed num_layers"):
        load_config("smoke", "spark-pair", root=ROOT, environ={},
                    sets=["model.arch.sliding_window=128", "model.arch.sliding_layers=3"])
    with pytest.raises(ConfigError, match="kv_lora_rank"):
        load_config("smoke", "spark-pair", root=ROOT, environ={}, sets=['model.arch.attention="mla"'])


@pytest.fixture
def root(tmp_path) -> Path:
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    return tmp_path


def test_a_folder_becomes_a_profile_that_validates_and_fits(root, isolated_override):
    def validate(n):
        return load_config(n, "spark-pair", root=root, environ={})
    path = profile_new(root, str(DATA / "gpt-oss-20b"), repo="openai/gpt-oss-20b", name="oss20", validate=validate)
    assert path == root / "profiles" / "oss20.toml"
    cfg = validate("oss20")
    assert cfg.model["repo"] == "openai/gpt-oss-20b" and cfg.model["weights_gb"] == 13.8
    assert cfg.model["arch"]["sliding_layers"] == 12 and cfg.serving["max_model_len"] == 32768
    fit = estimate(cfg.doc)
    # The KV cache of one 32,768-token sequence at TP 2 (spark-pair): 4 KV heads a rank, 1,024
    # bytes a layer and token; the sliding layers hold 16,528 tokens (see above).
    assert fit.kv_one_seq_gib == pytest.approx(1024 * (12 * 32768 + 12 * 16528) / GIB)
    assert fit.verdict == "fits"
    shipped = (root / "profiles" / "gpt-oss-20b.toml").read_text()
    with pytest.raises(SparkopsError, match="exists"):  # never over a profile (the preset), unless --force
        profile_new(root, str(DATA / "gpt-oss-20b"), repo="openai/gpt-oss-20b", validate=validate)
    assert (root / "profiles" / "gpt-oss-20b.toml").read_text() == shipped


def test_refusals_lose_nothing(root, isolated_override, tmp_path):
    with pytest.raises(SparkopsError, match="does not say which Hugging Face repo"):
        profile_new(root, str(DATA / "qwen3-30b-a3b"))
    with pytest.raises(SparkopsError, match="neither a folder nor"):
        profile_new(root, "../../etc/passwd")
    with pytest.raises(ConfigError, match="not allowed"):
        profile_new(root, str(DATA / "qwen3-30b-a3b"), repo="Qwen/Qwen3-30B-A3B", name="x;rm -rf ~")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(SparkopsError, match="not JSON"):
        profile_new(root, str(bad), repo="a/b")
    # A profile that does not validate is removed again; one replaced with --force comes back.
    before = (root / "profiles" / "smoke.toml").read_text()

    def refuse(n):
        raise ConfigError("does not fit")
    with pytest.raises(ConfigError):
        profile_new(root, str(DATA / "deepseek-v3"), repo="deepseek-ai/DeepSeek-V3", name="smoke", force=True,
                    validate=refuse)
    assert (root / "profiles" / "smoke.toml").read_text() == before
    with pytest.raises(ConfigError):
        profile_new(root, str(DATA / "deepseek-v3"), repo="deepseek-ai/DeepSeek-V3", validate=refuse)
    assert not (root / "profiles" / "deepseek-v3.toml").exists()


def test_from_the_hugging_face_cache_on_the_command_line(root, tmp_path):
    """A repo id, offline: its files from the Hugging Face cache (the layout huggingface_hub
    writes), through `inv profile-new` as a user runs it."""
    snapshot = tmp_path / "hub" / "models--Qwen--Qwen3-30B-A3B" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    shutil.copy(DATA / "qwen3-30b-a3b" / "config.json", snapshot / "config.json")
    (tmp_path / "hub" / "models--Qwen--Qwen3-30B-A3B" / "refs").mkdir()
    (tmp_path / "hub" / "models--Qwen--Qwen3-30B-A3B" / "refs" / "main").write_text("0123abcd")
    shutil.copy(ROOT / "tasks.py", root / "tasks.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARKOPS_", "HF_"))}
    env |= {"SPARKOPS_HOME": str(root), "SPARKOPS_LOCAL": str(tmp_path / "none.toml"),
            "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "invoke", "profile-new", "Qwen/Qwen3-30B-A3B"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "wrote" in done.stdout and "memory fit on spark-pair as written" in done.stdout
    written = (root / "profiles" / "qwen3-30b-a3b.toml").read_text()
    assert 'repo = "Qwen/Qwen3-30B-A3B"' in written and "num_experts = 128" in written
    missing = subprocess.run([sys.executable, "-m", "invoke", "profile-new", "Qwen/Qwen3-8B"], cwd=root, env=env,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "not in the Hugging Face cache" in missing.stderr


class _Hub(http.server.BaseHTTPRequestHandler):
    """The Hub's model-info route (GET /api/models/ORG/NAME) for two repos; 404 for others."""
    asked: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).asked.append(self.path)
        gated = {"/api/models/org/licensed": "manual", "/api/models/org/open": False}
        if self.path not in gated:
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.end_headers()
            return
        body = json.dumps({"id": self.path.split("/api/models/")[1], "sha": "0" * 40, "private": False,
                           "gated": gated[self.path], "siblings": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_whether_a_repo_is_gated_is_asked_of_the_hub(tmp_path):
    """huggingface_hub's own model_info against a stand-in for the Hub's route (HF_ENDPOINT):
    "manual" is gated, false is not, and a repo it does not know, or no Hub at all (offline),
    leaves the answer unknown: the profile then says so."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        def ask(repo: str, **extra: str) -> str:
            env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
            env |= {"HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "HF_HOME": str(tmp_path)} | extra
            done = subprocess.run([sys.executable, "-c", "from sparkops.models.profile_new import gated_on_hub; "
                                   f"print(gated_on_hub({repo!r}, None))"], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            return done.stdout.strip()
        assert ask("org/licensed") == "True" and ask("org/open") == "False" and ask("org/missing") == "None"
        asked = len(_Hub.asked)
        assert ask("org/licensed", HF_HUB_OFFLINE="1") == "None" and len(_Hub.asked) == asked  # not even asked
    finally:
        server.shutdown()
    facts = parse(json.loads((DATA / "qwen2.5-7b-instruct" / "config.json").read_text()))
    licensed = profile_document("org/licensed", facts, "org/licensed", gated=True)
    assert licensed["model"]["gated"] is True and "accept the license" in tomlkit.dumps(licensed)
    unknown = tomlkit.dumps(profile_document("org/x", facts, "org/x", gated=None))
    assert "gated = false # not known" in unknown
