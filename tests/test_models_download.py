"""`inv download`: the real hub client failing offline, the gated check, and `--local-dir`
import read back by huggingface_hub itself with no network."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparkops.base.errors import SparkopsError
from sparkops.base.progress import Silent
from sparkops.config import load_config
from sparkops.models.download import download

ROOT = Path(__file__).resolve().parent.parent
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def config(tmp_path, profile="gpt-oss-120b", *sets):
    return load_config(profile, "spark-pair", environ={},
                       sets=[f'cluster.paths.hf_home="{tmp_path / "hf"}"', *sets])


def test_offline_download_fails_with_the_fix(tmp_path, isolated_override):
    """The real `inv download`, its hub unreachable (a closed local port stands in for "no
    internet" on any machine): a clear error naming `--local-dir` and the pre-seeded cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "SPARKOPS_"))}
    env |= {"HOME": str(tmp_path), "SPARKOPS_LOCAL": str(isolated_override), "HF_ENDPOINT": "http://127.0.0.1:9"}
    res = subprocess.run([sys.executable, "-m", "invoke", "download", "--profile", "gpt-oss-120b"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stderr
    assert "cannot reach the Hugging Face hub" in res.stderr
    assert "--local-dir DIR" in res.stderr and "--exclude 'original/*'" in res.stderr
    assert "models--openai--gpt-oss-120b" in res.stderr and "Traceback" not in res.stderr


def test_offline_download_of_random_weights_asks_only_for_config_and_tokenizer(tmp_path, isolated_override):
    """`inv download --dummy-weights`: the fix it prints fetches only the config and tokenizer
    files (the profile's exclusions still apply), never the weights."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "SPARKOPS_"))}
    env |= {"HOME": str(tmp_path), "SPARKOPS_LOCAL": str(isolated_override), "HF_ENDPOINT": "http://127.0.0.1:9"}
    res = subprocess.run([sys.executable, "-m", "invoke", "download", "--profile", "gpt-oss-20b", "--dummy-weights"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "--include config.json" in res.stderr and "--include 'tokenizer*'" in res.stderr
    assert "--exclude 'original/*'" in res.stderr and "safetensors" not in res.stderr
    assert "--dummy-weights --local-dir DIR" in res.stderr


# The files of openai/gpt-oss-20b, Qwen/Qwen2.5-7B-Instruct and mistralai/Mistral-7B-Instruct-v0.3
# as their hub pages list them: what random weights need of each, and what they do not.
REPO_FILES = {
    "gpt-oss-20b": [".gitattributes", "LICENSE", "README.md", "USAGE_POLICY", "chat_template.jinja", "config.json",
                    "generation_config.json", "metal/model.bin", "model-00000-of-00002.safetensors",
                    "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                    "model.safetensors.index.json", "original/config.json", "original/dtypes.json",
                    "original/model.safetensors", "special_tokens_map.json", "tokenizer.json",
                    "tokenizer_config.json"],
    "qwen2.5-7b-instruct": [".gitattributes", "LICENSE", "README.md", "config.json", "generation_config.json",
                            "merges.txt", "model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors",
                            "model-00003-of-00004.safetensors", "model-00004-of-00004.safetensors",
                            "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json", "vocab.json"],
    "mistral-7b-instruct-v0.3": [".gitattributes", "README.md", "config.json", "consolidated.safetensors",
                                 "generation_config.json", "model-00001-of-00003.safetensors",
                                 "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors",
                                 "model.safetensors.index.json", "params.json", "special_tokens_map.json",
                                 "tokenizer.json", "tokenizer.model", "tokenizer.model.v3", "tokenizer_config.json"],
}
WEIGHTLESS = {
    "gpt-oss-20b": {"chat_template.jinja", "config.json", "generation_config.json", "special_tokens_map.json",
                    "tokenizer.json", "tokenizer_config.json"},
    "qwen2.5-7b-instruct": {"config.json", "generation_config.json", "merges.txt", "tokenizer.json",
                            "tokenizer_config.json", "vocab.json"},
    "mistral-7b-instruct-v0.3": {"config.json", "generation_config.json", "params.json", "special_tokens_map.json",
                                 "tokenizer.json", "tokenizer.model", "tokenizer.model.v3", "tokenizer_config.json"},
}


@pytest.mark.parametrize("profile", sorted(REPO_FILES))
def test_random_weights_download_only_config_and_tokenizer(profile, tmp_path):
    """The patterns `download` hands huggingface_hub with --dummy-weights, applied the way the
    hub applies them, take each repo's config and tokenizer files and no weights; without it,
    the profile's own patterns take the weights."""
    from huggingface_hub.utils import filter_repo_objects

    from sparkops.config.weights import download_patterns
    dummy = config(tmp_path, profile, 'model.weights="dummy"').doc
    allow, ignore = download_patterns(dummy)
    assert set(filter_repo_objects(REPO_FILES[profile], allow_patterns=allow, ignore_patterns=ignore)) == \
        WEIGHTLESS[profile]
    allow, ignore = download_patterns(config(tmp_path, profile).doc)
    assert any(f.endswith(".safetensors") for f in filter_repo_objects(REPO_FILES[profile], allow_patterns=allow,
                                                                        ignore_patterns=ignore))


def test_local_dir_import_of_random_weights_takes_no_weights(tmp_path):
    src = make_model_dir(tmp_path / "src")
    result = download(config(tmp_path, "gpt-oss-120b", 'model.weights="dummy"'), local_dir=str(src), progress=Silent())
    snapshot = Path(result.snapshot)
    assert sorted(p.name for p in snapshot.iterdir()) == ["config.json"]  # nested/tokenizer.json: not vLLM's
    assert result.bytes == len('{"model_type": "llama"}')


def test_gated_model_without_token_names_the_model_page(tmp_path):
    cfg = load_config("llama-3.1-8b-instruct", "spark-pair", environ={},
                      sets=[f'cluster.paths.hf_home="{tmp_path}"'])
    with pytest.raises(SparkopsError) as err:
        download(cfg, progress=Silent())
    assert "https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct" in err.value.render()


def test_the_smoke_model_is_not_downloaded_but_generated(tmp_path):
    with pytest.raises(SparkopsError) as err:
        download(config(tmp_path, "smoke"), progress=Silent())
    assert "not downloaded" in err.value.message
    assert err.value.fix == "`inv smoke-model --cluster spark-pair`"
    assert not (tmp_path / "hf").exists()


def test_download_refuses_when_the_head_is_not_this_machine(tmp_path):
    cfg = load_config("smoke", "sim", environ={})
    with pytest.raises(SparkopsError, match="download runs on the head"):
        download(cfg, progress=Silent())


def make_model_dir(path: Path) -> Path:
    (path / "original").mkdir(parents=True)
    (path / "nested").mkdir()
    (path / ".cache" / "huggingface").mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "llama"}')
    (path / "model.safetensors").write_bytes(os.urandom(3_000_000))
    (path / "nested" / "tokenizer.json").write_text('{"v": 1}')
    (path / "original" / "consolidated.pth").write_bytes(b"skipped by the profile's ignore_patterns")
    (path / ".cache" / "huggingface" / "download.metadata").write_text("hub bookkeeping")
    return path


@pytest.mark.parametrize("revision", [None, COMMIT])
def test_local_dir_import_is_read_back_offline_by_the_hub(tmp_path, monkeypatch, revision):
    src = make_model_dir(tmp_path / "src")
    cfg = config(tmp_path, "gpt-oss-120b", *([f'model.revision="{revision}"'] if revision else []))
    result = download(cfg, local_dir=str(src), progress=Silent())
    assert result.imported and result.bytes == 3_000_000 + len('{"model_type": "llama"}') + len('{"v": 1}')

    from huggingface_hub import snapshot_download
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = Path(snapshot_download("openai/gpt-oss-120b", revision=revision, local_files_only=True,
                                      cache_dir=str(tmp_path / "hf" / "hub")))
    assert snapshot == Path(result.snapshot)
    assert (snapshot / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    assert (snapshot / "nested" / "tokenizer.json").read_text() == '{"v": 1}'
    assert os.readlink(snapshot / "nested" / "tokenizer.json").startswith("../../../blobs/")
    assert not (snapshot / "original").exists() and not (snapshot / ".cache").exists()
    repo = tmp_path / "hf" / "hub" / "models--openai--gpt-oss-120b"
    assert (snapshot.name == COMMIT) == bool(revision)
    assert (repo / "refs" / "main").exists() != bool(revision)
    again = download(cfg, local_dir=str(src), progress=Silent())
    assert again.snapshot == result.snapshot


def test_local_dir_without_config_is_refused(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "weights.bin").write_bytes(b"x")
    with pytest.raises(SparkopsError, match="no config.json"):
        download(config(tmp_path), local_dir=str(tmp_path / "src"), progress=Silent())
