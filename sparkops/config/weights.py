"""Random weights for speed screening (`model.weights = "dummy"`, `--dummy-weights`).

vLLM's `--load-format dummy` builds the model from its config.json and fills every weight with
random values: the same shapes, the same memory, the same kernels, so the same speed, without
the weights' download. Only the files vLLM reads besides the weights are fetched (the config,
the generation config, the tokenizer, and the code of a trust_remote_code model). The replies
are noise: every result of such a deployment is marked SPEED_ONLY, and nothing may read its
output as quality.
"""
from __future__ import annotations

from collections.abc import Mapping

SPEED_ONLY = "speed only: random weights"
SPEED_ONLY_NOTE = (f"{SPEED_ONLY} (model.weights = \"dummy\", vLLM's --load-format dummy): the model's "
                   "architecture, sizes and kernels with random values; throughput and latency are the "
                   "architecture's on this hardware, the replies are noise (no output-quality figure applies)")

# What vLLM reads of a model folder when it does not load the weights. The tokenizer comes in
# whichever of its forms the repo has (tokenizer.json, tokenizer.model(.v3), vocab.json +
# merges.txt, vocab.txt, *.tiktoken, Mistral's tekken.json); *.py is the config and tokenizer
# code of a trust_remote_code model. All of them together are a few MB.
WEIGHTLESS_PATTERNS = (
    "config.json", "generation_config.json", "params.json", "hf_quant_config.json",
    "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt",
    "*.tiktoken", "tekken.json", "chat_template.jinja", "chat_template.json",
    "preprocessor_config.json", "processor_config.json", "*.py",
)


def dummy_weights(doc: Mapping) -> bool:
    """Whether this configuration serves random weights: model.weights = "dummy", or
    serving.load_format = "dummy" set by hand (the way it was done before the key existed)."""
    return doc.get("model", {}).get("weights") == "dummy" or doc.get("serving", {}).get("load_format") == "dummy"


def load_format(doc: Mapping) -> str:
    """vLLM's --load-format of this configuration."""
    return "dummy" if dummy_weights(doc) else str(doc["serving"]["load_format"])


def download_patterns(doc: Mapping) -> tuple[list[str] | None, list[str] | None]:
    """(allow_patterns, ignore_patterns) of what `download` fetches: the profile's own, or with
    random weights only the weightless files (the profile's ignore patterns still apply)."""
    m = doc["model"]
    if dummy_weights(doc):
        return list(WEIGHTLESS_PATTERNS), m.get("ignore_patterns") or None
    return m.get("allow_patterns") or None, m.get("ignore_patterns") or None


def download_size_gb(doc: Mapping) -> float | None:
    """GB that `download` writes into the cache (the disk check's need): None with random weights,
    whose few MB do not count."""
    return None if dummy_weights(doc) else doc["model"].get("download_gb")


def weights_label(weights: str | None) -> str:
    """How a table shows a result's weights: SPEED_ONLY for random ones, "real", or "" when the
    result does not say (benched by URL without a profile, older results, llama-benchy files)."""
    return SPEED_ONLY if weights == "dummy" else weights or ""
