"""Build the tiny random-weight "smoke" model, fully offline and deterministically.

A Llama of a few hundred KB with a byte-level BPE tokenizer and a ChatML chat template:
enough for `vllm serve` to load, tokenize, chat, stream and benchmark it on a CPU, without
the Hugging Face hub. It can also be written into a Hugging Face cache (`HF_HOME`) so that
`vllm serve sparkops/smoke-tiny-llama` with `HF_HUB_OFFLINE=1` resolves it exactly like a
downloaded model.

Building needs torch, transformers and tokenizers, which live in the vLLM virtualenv, not in
the controller's Python: this file imports nothing from sparkops and imports those libraries
only inside the build, so the controller can import it for the pure helpers and run it as a
script with the venv's interpreter (see `build_command`):

    <venv>/bin/python sparkops/smoke_model.py --hf-home DIR
    <venv>/bin/python -m sparkops.node_scripts.smoke_model --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

if __package__:
    from . import hf_cache
else:  # run as a file on a node, beside hf_cache.py (sparkops.models.smoke copies both)
    import hf_cache  # type: ignore[import-not-found, no-redef]

REPO_ID = "sparkops/smoke-tiny-llama"
MANIFEST = "sparkops-smoke.json"
# Bump when the recipe changes, so that existing builds are rebuilt rather than trusted.
RECIPE_VERSION = 1
SEED = 20240601

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# head_dim is set explicitly: vLLM's CPU attention only supports head sizes of 32 and up, and
# hidden 64 / 4 heads would give 16. Attention is then 4 x 32 = 128 wide, projected back to 64
# (Llama allows this). Heads (4), KV heads (2) and the MLP width split evenly for TP 2.
LLAMA_CONFIG = {
    "vocab_size": 1024,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}

_WORDS = (  # split in corpus_lines
    "the a an and or but of to in on at by for with from into over under about after before "
    "cluster node nodes spark server model token tokens batch cache memory network cable link "
    "throughput latency request requests stream prompt answer question tensor parallel rank "
    "worker head port host hosts engine run runs ran fast slow small large first last next "
    "time times second seconds minute value values number numbers test tests data result "
    "results is are was were be been has have had will would can could should may might "
    "we you they it this that these those one two three four five six seven eight nine ten "
    "hello world good bad new old red green blue light dark day night water fire stone tree "
    "river mountain city road house door window book page line word letter story song music"
)


def corpus_lines(n: int = 4000) -> list[str]:
    """Deterministic pseudo-English, plus digits and punctuation, to train the tokenizer on."""
    rng = random.Random(SEED)
    vocabulary = _WORDS.split()
    punct = [".", ",", "?", "!", ":", ";"]
    lines = []
    for i in range(n):
        words = [rng.choice(vocabulary) for _ in range(rng.randint(4, 16))]
        words[0] = words[0].capitalize()
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 99999)))
        lines.append(" ".join(words) + rng.choice(punct) + ("\n" if i % 7 == 0 else ""))
    return lines


def _train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=LLAMA_CONFIG["vocab_size"],
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any byte stays encodable
        show_progress=False,
    )
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=LLAMA_CONFIG["max_position_embeddings"],
    )


def _write_model(out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _train_tokenizer()
    tokenizer.save_pretrained(out)
    ids = tokenizer.convert_tokens_to_ids
    config = LlamaConfig(
        **LLAMA_CONFIG,
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|im_end|>"),
        pad_token_id=ids("<|endoftext|>"),
        torch_dtype="bfloat16",
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)


def read_manifest(model_dir: Path) -> dict | None:
    """The manifest of a complete build in `model_dir`, or None if it is missing or stale."""
    try:
        manifest = json.loads((model_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("recipe") != RECIPE_VERSION:
        return None
    for name, digest in manifest.get("files", {}).items():
        path = model_dir / name
        if not path.is_file() or hf_cache.sha256_file(path) != digest:
            return None
    return manifest if manifest.get("files") else None


def build_smoke_model(out_dir: Path, *, force: bool = False) -> Path:
    """Write the smoke model to `out_dir` unless a complete build is already there."""
    out_dir = Path(out_dir)
    if not force and read_manifest(out_dir):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and swap it in, so a crash never leaves a half model behind.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        _write_model(tmp)
        files = {p.name: hf_cache.sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {"recipe": RECIPE_VERSION, "repo_id": REPO_ID, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def install_into_hf_cache(model_dir: Path, hf_home: Path, repo_id: str = REPO_ID) -> Path:
    """Lay out a built model as huggingface_hub's cache does (hf_cache); return the snapshot
    dir. Its commit id derives from the file hashes: same files, same revision."""
    manifest = read_manifest(Path(model_dir))
    if manifest is None:
        raise ValueError(f"{model_dir} holds no complete smoke model")
    repo = hf_cache.repo_dir(hf_home, repo_id)
    for name, digest in manifest["files"].items():
        blob = repo / "blobs" / digest
        if not blob.is_file() or hf_cache.sha256_file(blob) != digest:
            hf_cache.write_blob(repo, hf_cache.file_chunks(Path(model_dir) / name))
    return hf_cache.link_snapshot(repo, hf_cache.content_commit(manifest["files"]), manifest["files"])


def build_smoke_model_into_hf_cache(
    hf_home: Path, repo_id: str = REPO_ID, *, force: bool = False
) -> Path:
    """Build (if needed) and install the smoke model into `hf_home`; return the snapshot dir."""
    staging = Path(hf_home) / "sparkops-build" / repo_id.replace("/", "--")
    build_smoke_model(staging, force=force)
    return install_into_hf_cache(staging, hf_home, repo_id)


def build_command(python: str | os.PathLike, hf_home: Path, repo_id: str = REPO_ID) -> list[str]:
    """argv that runs this file with another interpreter (the vLLM venv's) to fill `hf_home`."""
    return [str(python), str(Path(__file__).resolve()), "--hf-home", str(hf_home),
            "--repo-id", repo_id]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="write the model files to this directory")
    where.add_argument("--hf-home", type=Path, help="install into this Hugging Face cache")
    parser.add_argument("--repo-id", default=REPO_ID, help="repo id in the cache")
    parser.add_argument("--force", action="store_true", help="rebuild even if complete")
    args = parser.parse_args(argv)
    if args.out:
        print(build_smoke_model(args.out, force=args.force))
    else:
        print(build_smoke_model_into_hf_cache(args.hf_home, args.repo_id, force=args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
