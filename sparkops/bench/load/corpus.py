"""The text a pp/tg sweep slices its prompts from: a public-domain book shipped in data/corpus/
(the one llama-benchy downloads by default), so sweeps work offline and the community's numbers
and ours come from the same words."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sparkops.base.errors import SparkopsError

DEFAULT_CORPUS = "sherlock-holmes"
# Pieces small enough for any tokenizer endpoint; cut at paragraph ends so that tokenizing the
# pieces one by one gives (nearly) the tokens of the whole.
PIECE_CHARS = 16_000


@dataclass(frozen=True)
class Corpus:
    name: str
    text: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def pieces(self, size: int = PIECE_CHARS) -> list[str]:
        """The text in consecutive pieces of at most about `size` characters, each ending at a
        paragraph break where there is one; "".join(pieces) == text."""
        out, start = [], 0
        while start < len(self.text):
            end = min(len(self.text), start + size)
            if end < len(self.text):
                cut = self.text.rfind("\n\n", start, end)
                end = cut + 2 if cut > start else end
            out.append(self.text[start:end])
            start = end
        return out


def corpus_path(name: str = DEFAULT_CORPUS) -> Path:
    return Path(__file__).resolve().parents[3] / "data" / "corpus" / f"{name}.txt"


@lru_cache(maxsize=4)
def load_corpus(name: str = DEFAULT_CORPUS) -> Corpus:
    path = corpus_path(name)
    try:
        return Corpus(name, path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SparkopsError(f"no corpus {name!r} ({path}: {exc.strerror})", step="bench",
                            fix=f"use the shipped corpus {DEFAULT_CORPUS!r}") from None
