"""sparkops.node_scripts.smoke_model: cache layout with the controller's Python, the real build in the venv."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from sparkops.node_scripts import hf_cache, smoke_model


def _fake_build(model_dir: Path) -> None:
    """A 'model' with a valid manifest, to test the cache layout without torch."""
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text('{"model_type": "llama"}')
    (model_dir / "model.safetensors").write_bytes(b"\0" * 64)
    files = {p.name: hf_cache.sha256_file(p) for p in sorted(model_dir.iterdir())}
    manifest = {"recipe": smoke_model.RECIPE_VERSION, "files": files}
    (model_dir / smoke_model.MANIFEST).write_text(json.dumps(manifest))


def test_manifest_detects_damage(tmp_path):
    _fake_build(tmp_path / "m")
    assert smoke_model.read_manifest(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{}")
    assert smoke_model.read_manifest(tmp_path / "m") is None
    assert smoke_model.read_manifest(tmp_path / "absent") is None


def test_hf_cache_layout(tmp_path):
    _fake_build(tmp_path / "m")
    snapshot = smoke_model.install_into_hf_cache(tmp_path / "m", tmp_path / "hf")
    repo = tmp_path / "hf" / "hub" / "models--sparkops--smoke-tiny-llama"
    rev = (repo / "refs" / "main").read_text()
    assert snapshot == repo / "snapshots" / rev and len(rev) == 40
    for name in ("config.json", "model.safetensors"):
        link = snapshot / name
        digest = hf_cache.sha256_file(tmp_path / "m" / name)
        assert os.readlink(link) == f"../../blobs/{digest}"
        assert link.read_bytes() == (tmp_path / "m" / name).read_bytes()
    assert not (snapshot / smoke_model.MANIFEST).exists()
    # Installing again changes nothing.
    assert smoke_model.install_into_hf_cache(tmp_path / "m", tmp_path / "hf") == snapshot


def test_corpus_is_deterministic():
    assert smoke_model.corpus_lines(50) == smoke_model.corpus_lines(50)


def _build(venv: Path, hf_home: Path) -> Path:
    out = subprocess.run(smoke_model.build_command(venv / "bin" / "python", hf_home),
                         capture_output=True, text=True, timeout=300, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.mark.timing
@pytest.mark.vllm
def test_build_is_deterministic_idempotent_and_small(vllm_venv, tmp_path):
    first = _build(vllm_venv, tmp_path / "a")
    assert first.name == _build(vllm_venv, tmp_path / "b").name  # same bytes, same revision
    blobs = first.parent.parent / "blobs"
    before = {p: p.stat().st_mtime_ns for p in blobs.iterdir()}
    start = time.monotonic()
    assert _build(vllm_venv, tmp_path / "a") == first
    assert time.monotonic() - start < 2  # no torch import when already built
    assert {p: p.stat().st_mtime_ns for p in blobs.iterdir()} == before
    assert sum(p.stat().st_size for p in before) < 1_000_000


@pytest.mark.vllm
def test_resolves_offline_by_repo_id(vllm_venv, tmp_path):
    snapshot = _build(vllm_venv, tmp_path)
    check = (
        "from huggingface_hub import snapshot_download\n"
        "from transformers import AutoConfig, AutoTokenizer\n"
        "rid = 'sparkops/smoke-tiny-llama'\n"
        "print(snapshot_download(rid))\n"
        "tok = AutoTokenizer.from_pretrained(rid)\n"
        "assert AutoConfig.from_pretrained(rid).head_dim == 32\n"
        "text = tok.apply_chat_template([{'role': 'user', 'content': 'hi'}],\n"
        "                               tokenize=False, add_generation_prompt=True)\n"
        "assert text == '<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n', text\n"
        "assert tok.eos_token == '<|im_end|>' and tok.pad_token == '<|endoftext|>'\n"
        "assert tok.decode(tok.encode('héllo 42 ✓')) == 'héllo 42 ✓'\n"
    )
    env = dict(os.environ, HF_HOME=str(tmp_path), HF_HUB_OFFLINE="1")
    out = subprocess.run([str(vllm_venv / "bin" / "python"), "-c", check], check=False, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == str(snapshot)


@pytest.mark.vllm
def test_transformers_5_gives_a_qwen2_model_qwen2s_tokenizer_whatever_its_config_says(vllm_venv, tmp_path):
    """The quirk docs/benchmarks-and-report.md's random-weight screening warns of, with the runtime's transformers:
    for a model_type such as qwen2, AutoTokenizer loads the model type's own tokenizer class and
    ignores tokenizer_config's. A stand-in word-level tokenizer then encodes nothing (it works for
    a llama); a byte-level BPE (what the smoke model has) round-trips under either."""
    check = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from tokenizers import Tokenizer, models, pre_tokenizers, ByteLevelBPETokenizer\n"
        "from transformers import AutoTokenizer, PreTrainedTokenizerFast\n"
        "root = Path(sys.argv[1])\n"
        "words = Tokenizer(models.WordLevel({f'w{i}': i for i in range(100)} | {'[UNK]': 100}, unk_token='[UNK]'))\n"
        "words.pre_tokenizer = pre_tokenizers.Whitespace()\n"
        "bpe = ByteLevelBPETokenizer()\n"
        "bpe.train_from_iterator(['the quick brown fox jumps over the lazy dog'] * 20, vocab_size=300)\n"
        "out = {}\n"
        "for kind, tok in (('wordlevel', words), ('bpe', bpe._tokenizer)):\n"
        "    for model_type in ('qwen2', 'llama'):\n"
        "        d = root / f'{kind}-{model_type}'\n"
        "        PreTrainedTokenizerFast(tokenizer_object=tok, unk_token='[UNK]').save_pretrained(d)\n"
        "        (d / 'config.json').write_text(json.dumps({'model_type': model_type, 'vocab_size': 300}))\n"
        "        t = AutoTokenizer.from_pretrained(d)\n"
        "        text = 'w1 w2 w3' if kind == 'wordlevel' else 'the lazy fox'\n"
        "        out[f'{kind}-{model_type}'] = [type(t).__name__, t.decode(t.encode(text, add_special_tokens=False))]\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([str(vllm_venv / "bin" / "python"), "-c", check, str(tmp_path)], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["wordlevel-qwen2"][0] == "Qwen2Tokenizer" and seen["wordlevel-qwen2"][1] != "w1 w2 w3"
    assert seen["wordlevel-llama"] == ["TokenizersBackend", "w1 w2 w3"]
    assert seen["bpe-qwen2"] == ["Qwen2Tokenizer", "the lazy fox"] and seen["bpe-llama"][1] == "the lazy fox"
