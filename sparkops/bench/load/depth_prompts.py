"""Prompts of a given depth and length, as llama-benchy builds them: `depth` tokens of earlier
context (a system message) and `pp` new tokens (the user message), token slices of the corpus
decoded back to text. What the server counts is what matters: the chat template's own tokens
are measured once and taken off, and where the server can count a whole request (`/tokenize`
with messages) each prompt is corrected until it counts exactly depth + pp."""
from __future__ import annotations

import random
from collections.abc import Callable

from sparkops.bench.load.corpus import Corpus
from sparkops.bench.load.prompts import Prompt
from sparkops.bench.load.tokens import Tokens

# llama-benchy's probe turn for a context-only request (vLLM rejects empty user content).
CONTEXT_PROBE = "."
EXACT_TRIES = 3


class DepthPrompts:
    def __init__(self, tokens: Tokens, corpus: Corpus):
        self.tokens = tokens
        self.ids = [i for piece in corpus.pieces() for i in tokens.encode(piece)]
        if len(self.ids) < 64:
            raise ValueError(f"corpus {corpus.name!r} has only {len(self.ids)} tokens")
        self.delta_user = self.delta_context = 0

    def calibrate(self, count: Callable[[list[dict]], int | None]) -> None:
        """Learn the template's tokens from `count(messages)` (the server's prompt tokens of a
        request with those messages), as llama-benchy's warm-up does."""
        probe = self.tokens.decode(self.ids[:64])
        n = len(self.tokens.encode(probe))
        user = count([{"role": "user", "content": probe}])
        if user is not None:
            self.delta_user = user - n
        ctx = count([{"role": "system", "content": probe}, {"role": "user", "content": CONTEXT_PROBE}])
        if ctx is not None:
            self.delta_context = ctx - n - len(self.tokens.encode(CONTEXT_PROBE))

    def build(self, pp: int, depth: int, max_tokens: int, rng: random.Random, pid: str) -> Prompt:
        """A prompt the server counts as depth + pp tokens (exactly, when it can tell us)."""
        depth_len = max(1, depth - self.delta_context) if depth else 0
        pp_len = max(1, pp - (self.delta_user if not depth else 0))
        start = rng.randrange(0, max(1, len(self.ids) - depth_len - pp_len - 1))
        prompt = self._slice(start, depth_len, pp_len, max_tokens, pid)
        for _ in range(EXACT_TRIES):
            counted = self.tokens.count_chat(messages(prompt))
            if counted is None or counted == depth + pp:
                break
            pp_len = max(1, pp_len + depth + pp - counted)
            prompt = self._slice(start, depth_len, pp_len, max_tokens, pid)
        return prompt

    def _slice(self, start: int, depth_len: int, pp_len: int, max_tokens: int, pid: str) -> Prompt:
        need = depth_len + pp_len
        ids = self.ids if start + need <= len(self.ids) else self.ids * (need // len(self.ids) + 2)
        chosen = ids[start:start + need]
        context = self.tokens.decode(chosen[:depth_len]) if depth_len else ""
        return Prompt(pid, self.tokens.decode(chosen[depth_len:]), max_tokens, context=context)


def messages(prompt: Prompt) -> list[dict]:
    context = [{"role": "system", "content": prompt.context}] if prompt.context else []
    return [*context, {"role": "user", "content": prompt.text}]


def context_only(prompt: Prompt) -> Prompt:
    """The context-load request of a prefix-caching measurement: the same context, a probe turn."""
    return Prompt(prompt.id + "-context", CONTEXT_PROBE, prompt.max_tokens, context=prompt.context)
