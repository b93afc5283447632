"""Config and an offline stand-in tokenizer of a preset's architecture, written into a Hugging
Face cache under the preset's repo id, for speed screening with random weights on a machine
that cannot reach the Hub (the GPU proof). A real owner gets the real config and tokenizer with
`inv download --dummy-weights` instead.

    python benchmarks/gpu/stand_in_models.py HF_HOME qwen2.5-7b-instruct mistral-7b-instruct-v0.3 ...

The architecture numbers are the models' published config.json values (layers, widths, heads,
vocabulary, RoPE); what only affects quality is left at its default. The tokenizer is the smoke
model's byte-level BPE (trained offline, sparkops/node_scripts/smoke_model.py) with its
vocabulary padded to the model's vocab_size, so that text encodes through real merges and every
id a random model emits decodes; token counts therefore differ from the real tokenizer's, which
a speed measurement at a given number of tokens does not care about. transformers 5 picks the
tokenizer class by model type for some models (a qwen2 model always gets Qwen2's class): the
files written are a plain fast tokenizer (tokenizer.json), which every such class loads.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sparkops" / "node_scripts"))
import hf_cache  # noqa: E402
import smoke_model  # noqa: E402

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Published config.json values of each preset's model (architecture only).
ARCH = {
    "qwen2.5-7b-instruct": ("Qwen/Qwen2.5-7B-Instruct", {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
        "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
        "num_key_value_heads": 4, "max_position_embeddings": 32768, "max_window_layers": 28,
        "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 131072, "use_sliding_window": False,
        "tie_word_embeddings": False, "vocab_size": 152064}),
    "mistral-7b-instruct-v0.3": ("mistralai/Mistral-7B-Instruct-v0.3", {
        "architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_act": "silu",
        "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 32768, "rms_norm_eps": 1e-05,
        "rope_theta": 1000000.0, "sliding_window": None, "tie_word_embeddings": False, "vocab_size": 32768}),
    "phi-4": ("microsoft/phi-4", {
        "architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_act": "silu",
        "hidden_size": 5120, "intermediate_size": 17920, "num_hidden_layers": 40, "num_attention_heads": 40,
        "num_key_value_heads": 10, "max_position_embeddings": 16384, "original_max_position_embeddings": 16384,
        "rms_norm_eps": 1e-05, "rope_theta": 250000.0, "rope_scaling": None, "sliding_window": None,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attention_dropout": 0.0, "tie_word_embeddings": False,
        "vocab_size": 100352}),
    "mixtral-8x7b-instruct-v0.1": ("mistralai/Mixtral-8x7B-Instruct-v0.1", {
        "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_act": "silu",
        "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "num_local_experts": 8, "num_experts_per_tok": 2,
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
        "router_aux_loss_coef": 0.02, "sliding_window": None, "tie_word_embeddings": False, "vocab_size": 32000}),
}


def stand_in_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    smoke_model.LLAMA_CONFIG["vocab_size"] = 4096  # more merges than the smoke model's own
    spec = json.loads(smoke_model._train_tokenizer().backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    i = 0
    while len(vocab) < vocab_size:
        if f"w{i}" not in vocab:
            vocab[f"w{i}"] = len(vocab)
        i += 1
    assert sorted(vocab.values()) == list(range(vocab_size))
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), bos_token=SPECIALS[0],
                                   eos_token=SPECIALS[2], pad_token=SPECIALS[0],
                                   chat_template=smoke_model.CHAT_TEMPLATE, model_max_length=131072)


def write(hf_home: Path, preset: str) -> Path:
    repo_id, arch = ARCH[preset]
    fast = stand_in_tokenizer(arch["vocab_size"])
    ids = fast.convert_tokens_to_ids(SPECIALS)
    config = {**arch, "bos_token_id": ids[0], "eos_token_id": ids[2], "pad_token_id": ids[0],
              "initializer_range": 0.02, "torch_dtype": "bfloat16", "use_cache": True}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        fast.save_pretrained(out)
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (out / "generation_config.json").write_text(
            json.dumps({"bos_token_id": ids[0], "eos_token_id": ids[2]}) + "\n")
        repo = hf_cache.repo_dir(hf_home, repo_id)
        files = {}
        for p in sorted(out.iterdir()):
            digest, _, _ = hf_cache.write_blob(repo, hf_cache.file_chunks(p))
            files[p.name] = digest
        return hf_cache.link_snapshot(repo, hf_cache.content_commit(files), files)


def main(argv: list[str]) -> int:
    hf_home = Path(argv[0]).expanduser()
    for preset in argv[1:]:
        if preset not in ARCH:  # e.g. smoke in a dry run: its own files are there already
            print(preset, "has no stand-in here: left as it is", flush=True)
            continue
        print(preset, write(hf_home, preset), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
