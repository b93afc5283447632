"""Speculative decoding in a sweep's cell: what vLLM's own counters moved by while the cell's
measured runs ran. Pure: two scrapes of /metrics (apply.vllm_metrics.spec_decode_counters) in,
the figures out.

Why it is recorded beside tok/s: with speculative decoding a step emits 1 + the accepted draft
tokens, and how many are accepted depends on the text (code and repetition accept more than
prose; random tokens almost none). So a cell's tok/s is a property of the model, the settings
and the prompts together; the acceptance says which part is the prompts'. The figures follow
vLLM's own definitions (vllm/v1/spec_decode/metrics.py): acceptance rate = accepted / draft
tokens; mean acceptance length = 1 + accepted / drafts (the bonus token included); per position
k: accepted at k / drafts.
"""
from __future__ import annotations


def figures(before: dict | None, after: dict | None) -> dict | None:
    """None when the server does not speculate (or a scrape failed)."""
    if not before or not after:
        return None
    drafts = after["drafts"] - before["drafts"]
    draft_tokens = after["draft_tokens"] - before["draft_tokens"]
    accepted = after["accepted"] - before["accepted"]
    if drafts <= 0 or draft_tokens <= 0:
        return {"drafts": 0, "draft_tokens": 0, "accepted": 0, "acceptance_rate": None,
                "mean_acceptance_length": None, "per_position": []}
    positions = sorted(set(after["per_position"]) | set(before["per_position"]))
    return {"drafts": int(drafts), "draft_tokens": int(draft_tokens), "accepted": int(accepted),
            "acceptance_rate": round(accepted / draft_tokens, 4),
            "mean_acceptance_length": round(1 + accepted / drafts, 4),
            "per_position": [round((after["per_position"].get(k, 0.0) - before["per_position"].get(k, 0.0)) / drafts, 4)
                             for k in positions]}
