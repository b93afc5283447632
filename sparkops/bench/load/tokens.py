"""Who counts tokens when a sweep builds its prompts, best first:
  server       vLLM's own `/tokenize` and `/detokenize` (the exact tokenizer and chat template);
  huggingface  the model's tokenizer.json from the local Hugging Face cache (`tokenizers`);
  approximate  words and punctuation marks (no tokenizer at all; lengths are estimates).
The result records which one was used; the server's usage counts are recorded either way.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

import requests

from sparkops.apply.ready import headers

_PIECE = re.compile(r"\s*(?:\w+|[^\w\s])", re.UNICODE)


class Tokens(Protocol):
    kind: str
    note: str

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def count_chat(self, messages: list[dict]) -> int | None:
        """Prompt tokens of a chat request as the server counts them (template included), or
        None when this tokenizer cannot know."""
        ...


class ServerTokens:
    kind = "server"

    def __init__(self, url: str, model: str, api_key: str | None, timeout_s: float = 120):
        self.url, self.model, self.timeout_s = url.rstrip("/"), model, timeout_s
        self.session = requests.Session()
        self.session.headers.update(headers(api_key))
        self.note = f"the server's /tokenize ({self.url})"

    def _post(self, path: str, body: dict) -> dict:
        r = self.session.post(f"{self.url}{path}", json={"model": self.model, **body}, timeout=self.timeout_s)
        r.raise_for_status()
        return r.json()

    def encode(self, text: str) -> list[int]:
        return list(self._post("/tokenize", {"prompt": text, "add_special_tokens": False})["tokens"])

    def decode(self, ids: list[int]) -> str:
        return str(self._post("/detokenize", {"tokens": ids})["prompt"])

    def count_chat(self, messages: list[dict]) -> int | None:
        return int(self._post("/tokenize", {"messages": messages, "add_generation_prompt": True})["count"])


class HuggingFaceTokens:
    kind = "huggingface"

    def __init__(self, tokenizer_json: Path):
        from tokenizers import Tokenizer  # optional: only when the server cannot tokenize
        self.tok = Tokenizer.from_file(str(tokenizer_json))
        self.note = f"{tokenizer_json} (chat template overhead measured from the server's usage)"

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        return str(self.tok.decode(ids, skip_special_tokens=False))

    def count_chat(self, messages: list[dict]) -> int | None:
        return None


class ApproximateTokens:
    """Words and punctuation marks stand for tokens; ids index the pieces seen so far."""

    kind = "approximate"
    note = "no tokenizer: one token per word or punctuation mark (lengths are estimates)"

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.ids: dict[str, int] = {}

    def encode(self, text: str) -> list[int]:
        out = []
        for piece in _PIECE.findall(text):
            if piece not in self.ids:
                self.ids[piece] = len(self.pieces)
                self.pieces.append(piece)
            out.append(self.ids[piece])
        return out

    def decode(self, ids: list[int]) -> str:
        return "".join(self.pieces[i] for i in ids).strip()

    def count_chat(self, messages: list[dict]) -> int | None:
        return None


def pick_tokens(url: str, model: str, api_key: str | None, *, hf_repo: str | None = None,
                hf_home: str | None = None) -> Tokens:
    """The best tokenizer this client can reach for the served model."""
    server = ServerTokens(url, model, api_key, timeout_s=30)
    try:
        ids = server.encode("Hello world.")
        if ids and server.decode(ids).strip() == "Hello world.":
            server.timeout_s = 600
            return server
    except (requests.RequestException, ValueError, KeyError, TypeError):
        pass
    path = _cached_tokenizer(hf_repo, hf_home)
    if path is not None:
        try:
            return HuggingFaceTokens(path)
        except Exception:  # noqa: BLE001 - no `tokenizers`, or a file it cannot read: estimate instead
            pass
    return ApproximateTokens()


def _cached_tokenizer(repo: str | None, hf_home: str | None) -> Path | None:
    if not repo:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
        found = try_to_load_from_cache(repo, "tokenizer.json",
                                       cache_dir=str(Path(hf_home) / "hub") if hf_home else None)
    except Exception:  # noqa: BLE001 - a broken cache means no local tokenizer, not a failed bench
        return None
    return Path(found) if isinstance(found, str) else None
