"""Which prompts a run sends: a dataset spec -> a fixed list of `Prompt`s, the same for every model.

Specs:
  sparkops-prompts-v1               the shipped set in data/prompts/ (works offline)
  sparkops-prompts-v1:short,code    the same, only these categories
  sharegpt                          ShareGPT V3, fetched once through huggingface_hub into
                                    data/cache/sharegpt/ and sampled with vLLM's rules
  PATH.jsonl                        a user file, one {"prompt": ..., "max_tokens": ...} a line
  PATH.json                         a ShareGPT-format file

Every prompt is sent with the same `max_tokens` (bench.max_tokens) and, by default, with
`ignore_eos`: output lengths are then fixed and equal across models, which is what makes
tokens/s comparable, and what lets `vllm bench serve` replay exactly the same requests.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

from sparkops.base.errors import SparkopsError
from sparkops.bench.load.prompts import DEFAULT_SET, Prompt, default_prompts_path, load_jsonl, load_sharegpt

SHAREGPT_REPO = "anon8231489123/ShareGPT_Vicuna_unfiltered"
SHAREGPT_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"


@dataclass(frozen=True)
class Dataset:
    spec: str
    source: str  # file the prompts came from
    prompts: tuple[Prompt, ...]

    @property
    def digest(self) -> str:
        """Identity of exactly what is sent: prompt ids, texts and max_tokens."""
        h = hashlib.sha256()
        for p in self.prompts:
            h.update(json.dumps([p.id, p.text, p.max_tokens]).encode())
        return h.hexdigest()[:16]


def data_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "data"


def sharegpt_path(fetch: bool = True) -> Path:
    """The cached ShareGPT file, downloaded into data/cache/sharegpt/ on first use."""
    target = data_dir() / "cache" / "sharegpt" / SHAREGPT_FILE
    if target.is_file() or not fetch:
        return target
    try:
        from huggingface_hub import hf_hub_download
        got = hf_hub_download(SHAREGPT_REPO, SHAREGPT_FILE, repo_type="dataset",
                              local_dir=str(target.parent))
    except Exception as exc:  # network, auth, disk: all the same to the user
        raise SparkopsError(f"could not fetch ShareGPT ({SHAREGPT_REPO}/{SHAREGPT_FILE}): "
                            f"{type(exc).__name__}: {exc}", step="dataset",
                            fix=f"download it once into {target}, or use the shipped set "
                                f"(--dataset {DEFAULT_SET}), which works offline") from None
    return Path(got)


def load_dataset(spec: str, num_prompts: int, max_tokens: int, *, seed: int = 0,
                 allow_fewer: bool = False) -> Dataset:
    """The first `num_prompts` prompts of `spec`, each with `max_tokens`. Too few prompts is an
    error, never a silently smaller run (unless `allow_fewer`: a caller that cycles through them)."""
    if num_prompts < 1 or max_tokens < 1:
        raise SparkopsError(f"num_prompts and max_tokens must be >= 1 (got {num_prompts}, {max_tokens})",
                            step="dataset")
    path = Path(spec).expanduser()
    try:
        if path.suffix in (".jsonl", ".json") and path.is_file():
            source = str(path)
            if path.suffix == ".jsonl":
                prompts = load_jsonl(path, default_max_tokens=max_tokens)[:num_prompts]
            else:
                prompts = load_sharegpt(path, num_prompts, seed=seed, output_len=max_tokens)
        elif spec == "sharegpt":
            file = sharegpt_path()
            source = str(file)
            prompts = load_sharegpt(file, num_prompts, seed=seed, output_len=max_tokens)
        else:
            name, _, cats = spec.partition(":")
            file = default_prompts_path(name)
            if not file.is_file():
                raise SparkopsError(f"unknown dataset {spec!r}: not a file, not 'sharegpt', and "
                                    f"no prompt set {file}", step="dataset",
                                    fix=f"use {DEFAULT_SET}, sharegpt, or a .jsonl/.json path")
            source = str(file)
            prompts = _by_category(file, {c.strip() for c in cats.split(",") if c.strip()})
            prompts = prompts[:num_prompts]
    except (OSError, ValueError, KeyError) as exc:
        raise SparkopsError(f"dataset {spec!r}: {exc}", step="dataset") from None
    if len(prompts) < num_prompts and not (allow_fewer and prompts):
        raise SparkopsError(f"dataset {spec!r} has only {len(prompts)} usable prompts, "
                            f"{num_prompts} were asked for", step="dataset",
                            fix=f"ask for at most {len(prompts)} (-n), or use a larger dataset")
    return Dataset(spec, source, tuple(replace(p, max_tokens=max_tokens) for p in prompts))


def _by_category(file: Path, categories: set[str]) -> list[Prompt]:
    prompts = load_jsonl(file)
    if not categories:
        return prompts
    cats = {}
    with file.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                cats[str(row.get("id"))] = row.get("category")
    known = set(cats.values())
    if categories - known:
        raise ValueError(f"unknown categories {sorted(categories - known)}; {file.name} has {sorted(known)}")
    return [p for p in prompts if cats.get(p.id) in categories]


def as_sharegpt(prompts: list[Prompt] | tuple[Prompt, ...]) -> str:
    """The prompts as a ShareGPT-format file, which `vllm bench serve --dataset-name sharegpt`
    reads with the json module alone (its `custom` JSONL loader needs pandas, which vLLM's
    base install lacks). Output lengths come from --sharegpt-output-len, so the reply turn is
    a placeholder."""
    return json.dumps([{"id": p.id, "conversations": [{"from": "human", "value": p.text},
                                                      {"from": "gpt", "value": "-"}]}
                       for p in prompts])
