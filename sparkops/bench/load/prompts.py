"""Prompt sets: the fixed sparkops set, ShareGPT (vLLM's sampling rules), and user JSONL files.

Every source yields `Prompt`s whose `max_tokens` is fixed per prompt and independent of the
model under test, so all models in a comparison matrix get the same requests (pitfall 3).
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SET = "sparkops-prompts-v1"
# A warm-up prompt that is in no prompt set, so its compile/cache effects never touch a
# measured request (pitfall 4).
WARMUP_PROMPT_TEXT = "Warm-up request: reply with the single word ready."
WARMUP_MAX_TOKENS = 16


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    max_tokens: int
    # Earlier context sent before the text, as llama-benchy sends it: a system message (chat) or
    # a prefix (completions). The depth of a pp/tg sweep cell.
    context: str = ""


def warmup_prompt() -> Prompt:
    return Prompt(id="warmup", text=WARMUP_PROMPT_TEXT, max_tokens=WARMUP_MAX_TOKENS)


def default_prompts_path(name: str = DEFAULT_SET) -> Path:
    # The set lives in the repository's data/ so that it is reviewed like code.
    return Path(__file__).resolve().parents[3] / "data" / "prompts" / f"{name}.jsonl"


def load_default_prompts(limit: int | None = None, name: str = DEFAULT_SET) -> list[Prompt]:
    """The fixed sparkops set (first `limit` prompts; its order is already mixed)."""
    prompts = load_jsonl(default_prompts_path(name))
    return prompts[:limit] if limit is not None else prompts


def load_jsonl(path: str | Path, default_max_tokens: int | None = None) -> list[Prompt]:
    """A JSONL file, one `{"prompt": str, "max_tokens": int}` per line (`id` optional).

    Errors name the file and line: a bad prompt file must stop the run, not shrink it.
    """
    path = Path(path)
    prompts: list[Prompt] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                # ValueError, not TypeError: callers catch one error type for any bad line
                raise ValueError(f"{where}: expected an object with prompt and max_tokens")  # noqa: TRY004
            unknown = set(row) - {"id", "prompt", "max_tokens", "category"}
            if unknown:
                raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
            text = row.get("prompt")
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{where}: 'prompt' must be a non-empty string")
            max_tokens = row.get("max_tokens", default_max_tokens)
            if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
                raise ValueError(f"{where}: 'max_tokens' must be a positive integer")
            prompts.append(Prompt(str(row.get("id", f"{path.stem}-{lineno}")), text, max_tokens))
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


_TOKEN_RE = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def approx_tokens(text: str) -> int:
    """A model-independent token count: each punctuation mark is one, each word one per 6
    characters. Near BPE counts for English prose, and the same for every model."""
    return sum(max(1, math.ceil(len(piece) / 6)) for piece in _TOKEN_RE.findall(text))


def load_sharegpt(
    path: str | Path,
    num_prompts: int,
    *,
    seed: int = 0,
    output_len: int | None = None,
    count_tokens=approx_tokens,
) -> list[Prompt]:
    """Sample ShareGPT the way vllm/benchmarks/datasets.py `ShareGPTDataset` does.

    Same: keep conversations with >= 2 turns, shuffle with `random.seed(seed)` (so the order
    equals vLLM's for the same seed), prompt = turn 0, output length = length of turn 1, drop
    prompts < 4 tokens, outputs < 4 tokens (unless `output_len` is given), prompts > 1024
    tokens, prompt + output > 2048 tokens.
    Different: lengths come from `count_tokens` (default `approx_tokens`), not the model's
    tokenizer, so every model gets the same prompts with the same `max_tokens`; vLLM's
    per-model tokenizer gives each model a different sample. Nor do we oversample (vLLM
    repeats random samples to reach num_prompts): a short file gives fewer prompts.
    """
    with Path(path).open(encoding="utf-8") as f:
        data = json.load(f)
    data = [e for e in data if "conversations" in e and len(e["conversations"]) >= 2]
    random.Random(seed).shuffle(data)
    prompts: list[Prompt] = []
    for entry in data:
        if len(prompts) >= num_prompts:
            break
        prompt = entry["conversations"][0]["value"]
        completion = entry["conversations"][1]["value"]
        prompt_len = count_tokens(prompt)
        new_output_len = count_tokens(completion) if output_len is None else output_len
        if not _is_valid_sequence(prompt_len, new_output_len, output_len is not None):
            continue
        prompts.append(Prompt(str(entry.get("id", len(prompts))), prompt, new_output_len))
    return prompts


def _is_valid_sequence(prompt_len: int, output_len: int, skip_min_output: bool) -> bool:
    """vllm/benchmarks/datasets.py `is_valid_sequence` with its default limits."""
    return not (
        prompt_len < 4
        or (not skip_min_output and output_len < 4)
        or prompt_len > 1024
        or prompt_len + output_len > 2048
    )
