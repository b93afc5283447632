"""Prompt sets: the fixed sparkops set, ShareGPT sampling rules, user JSONL files."""

import json
import random

import pytest

from sparkops.bench.load.prompts import (
    WARMUP_PROMPT_TEXT,
    approx_tokens,
    load_default_prompts,
    load_jsonl,
    load_sharegpt,
)


def test_default_set_is_fixed_and_sane():
    prompts = load_default_prompts()
    assert 150 <= len(prompts) <= 250
    assert len({p.id for p in prompts}) == len(prompts)
    assert len({p.text for p in prompts}) == len(prompts)
    assert all(p.max_tokens in (128, 256, 384, 512) for p in prompts)
    assert WARMUP_PROMPT_TEXT not in {p.text for p in prompts}
    lengths = sorted(approx_tokens(p.text) for p in prompts)
    assert lengths[0] < 20 and lengths[-1] > 800  # short questions through long contexts
    assert [p.id for p in load_default_prompts(limit=5)] == [p.id for p in prompts[:5]]


def test_jsonl_user_file(tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text('{"prompt": "hi there", "max_tokens": 8}\n\n{"prompt": "b", "max_tokens": 3, "id": "x"}\n')
    prompts = load_jsonl(f)
    assert [(p.id, p.text, p.max_tokens) for p in prompts] == [
        ("mine-1", "hi there", 8), ("x", "b", 3)]


@pytest.mark.parametrize("line, message", [
    ("not json", "mine.jsonl:1: not valid JSON"),
    ('{"prompt": "a"}', "mine.jsonl:1: 'max_tokens' must be a positive integer"),
    ('{"prompt": "a", "max_tokens": 0}', "'max_tokens' must be a positive integer"),
    ('{"prompt": "", "max_tokens": 4}', "'prompt' must be a non-empty string"),
    ('{"promt": "a", "max_tokens": 4}', "unknown keys"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, line, message):
    f = tmp_path / "mine.jsonl"
    f.write_text(line + "\n")
    with pytest.raises(ValueError, match=message):
        load_jsonl(f)


def _sharegpt(tmp_path, entries):
    f = tmp_path / "sharegpt.json"
    f.write_text(json.dumps(entries))
    return f


def conv(i, prompt_words, answer_words, turns=2):
    turns_ = [{"from": "human", "value": " ".join(["ask"] * prompt_words) + f" {i}"},
              {"from": "gpt", "value": " ".join(["say"] * answer_words)}]
    return {"id": f"c{i}", "conversations": turns_[:turns]}


def test_sharegpt_follows_vllm_rules(tmp_path):
    entries = [conv(i, 10 + i, 20 + i) for i in range(20)]
    entries += [conv(100, 10, 20, turns=1),  # one turn: dropped before shuffling
                conv(101, 1, 20),            # prompt < 4 tokens
                conv(102, 10, 2),            # output < 4 tokens
                conv(103, 1100, 10),         # prompt > 1024 tokens
                conv(104, 900, 1200)]        # prompt + output > 2048
    prompts = load_sharegpt(_sharegpt(tmp_path, entries), 100, seed=3)
    # same order as vLLM's `random.seed(seed); random.shuffle(data)`
    kept = [e for e in entries if len(e["conversations"]) >= 2]
    random.seed(3)
    random.shuffle(kept)
    expected = [e["id"] for e in kept if e["id"] not in {"c101", "c102", "c103", "c104"}]
    assert [p.id for p in prompts] == expected
    by_id = {p.id: p for p in prompts}
    assert by_id["c0"].max_tokens == 20 and by_id["c5"].max_tokens == 25


def test_sharegpt_fixed_output_len_and_limit(tmp_path):
    entries = [conv(i, 10, 2) for i in range(10)]
    f = _sharegpt(tmp_path, entries)
    assert load_sharegpt(f, 5) == []  # outputs < 4 tokens are dropped...
    prompts = load_sharegpt(f, 5, output_len=128)  # ...unless the output length is fixed
    assert len(prompts) == 5 and {p.max_tokens for p in prompts} == {128}
    # the same file gives the same prompts whatever the model: no tokenizer involved
    assert load_sharegpt(f, 5, output_len=128) == prompts


def test_approx_tokens_is_deterministic():
    assert approx_tokens("Hello, world!") == 4
    assert approx_tokens("internationalization") == 4
    assert approx_tokens("") == 0
