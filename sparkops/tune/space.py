"""What `inv tune` searches: dimensions (a config key and the values to try). Pure.

A dimension is `--search KEY=V1,V2,...` (or the profile's [tune.search] table): KEY is any
config key that reaches `vllm serve` or the layout (`serving.max_num_seqs`, `serving.enforce_eager`,
`serving.cudagraph_capture_sizes`, ...), or `layout` itself (tp, dp, solo: the settings of
`bench-all --layouts`). Each value is TOML (`8`, `true`, `"fp8"`, `[1,2,4]`), else a string.
Values are checked against the schema by loading the profile with each (tune does that before
anything starts); here only what needs no loading: the form, repeats, and the safe range of
gpu_memory_utilization on unified memory.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from sparkops.base.errors import SparkopsError
from sparkops.config.layers import parse_value
from sparkops.config.layouts import LAYOUTS, layout_sets

LAYOUT_KEY = "layout"
# On a Spark the GPU's memory is the system's: vLLM's "0.98" (auto_tune.sh's start) leaves the
# OS and the other services nothing, and the node stops answering. A profile may raise the cap
# (tune.max_gpu_memory_utilization); tune never goes above it.
SAFE_GPU_MEMORY_UTILIZATION = 0.90
# Keys a search may take: what reaches `vllm serve` (serving.*, env.*) and the layout. Not the
# model, the cluster or secrets: tuning them would change what is served, not how fast.
SEARCHABLE = re.compile(r"^(serving\.[a-z_]+|env\.[A-Za-z_][A-Za-z0-9_]*|layout)$")
KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


@dataclass(frozen=True)
class Dimension:
    key: str
    values: tuple  # as TOML values: int, float, bool, str, list

    def label(self, value) -> str:
        return f"{self.key}={said(value)}"


def show(value) -> str:
    """A value as a --set takes it back (TOML: true, 8, "fp8", [1, 2])."""
    return json.dumps(value)


def said(value) -> str:
    """A value for people: None is a key the profile leaves unset (vLLM's own default)."""
    return "(vLLM's default)" if value is None else show(value)


def parse_search(items: list[str]) -> list[Dimension]:
    """`["serving.max_num_seqs=4,8,16", "serving.enforce_eager=false,true"]` -> dimensions.
    A list value goes in brackets and so may hold commas: `KEY=[1,2],[1,2,4]`."""
    dims: list[Dimension] = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise SparkopsError(f"--search {item!r}: expected KEY=V1,V2,...", step="tune",
                                fix="e.g. --search serving.max_num_seqs=4,8,16")
        dims.append(dimension(key, split_values(raw), f"--search {key}"))
    return check_dimensions(dims)


def from_table(table: dict) -> list[Dimension]:
    """A profile's [tune.search] table: `"serving.max_num_seqs" = [4, 8, 16]`."""
    return check_dimensions([dimension(k, list(v) if isinstance(v, list) else [v], f"[tune.search] {k}")
                             for k, v in table.items()])


def split_values(raw: str) -> list:
    """'4,8,16' -> [4, 8, 16]; '[1,2],[1,2,4]' -> [[1, 2], [1, 2, 4]]; commas inside brackets
    or quotes do not split."""
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(raw):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(raw[start:i])
            start = i + 1
    parts.append(raw[start:])
    return [parse_value(p.strip()) for p in parts if p.strip()]


def dimension(key: str, values: list, origin: str) -> Dimension:
    if not KEY_RE.match(key) or not SEARCHABLE.match(key):
        raise SparkopsError(f"{origin}: {key!r} cannot be tuned", step="tune",
                            fix="a key that reaches `vllm serve` (serving.max_num_seqs, serving.kv_cache_dtype, "
                                "serving.enforce_eager, serving.cudagraph_capture_sizes, env.NAME, ...) or "
                                "layout=tp,dp,solo")
    if key == LAYOUT_KEY:
        bad = [v for v in values if v not in LAYOUTS]
        if bad:
            raise SparkopsError(f"{origin}: unknown layout(s) {', '.join(map(str, bad))}", step="tune",
                                fix=f"any of {', '.join(LAYOUTS)}")
    seen: list = []
    for v in values:
        if v in seen:
            raise SparkopsError(f"{origin}: {show(v)} is given twice", step="tune")
        seen.append(v)
    if not seen:
        raise SparkopsError(f"{origin}: no values", step="tune")
    return Dimension(key, tuple(seen))


def check_dimensions(dims: list[Dimension]) -> list[Dimension]:
    keys = [d.key for d in dims]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise SparkopsError(f"--search names {', '.join(twice)} twice", step="tune",
                            fix="give each key once, with all its values: --search KEY=V1,V2,V3")
    if not dims:
        raise SparkopsError("nothing to search", step="tune",
                            fix="--search KEY=V1,V2 (e.g. serving.max_num_seqs=4,8,16), or a [tune.search] "
                                "table in the profile")
    return dims


def check_safe(dims: list[Dimension], cap: float) -> None:
    """Refuses a gpu_memory_utilization above the cap before anything starts."""
    for d in dims:
        if d.key == "serving.gpu_memory_utilization":
            over = [v for v in d.values if not isinstance(v, (int, float)) or v > cap]
            if over:
                raise SparkopsError(
                    f"--search serving.gpu_memory_utilization: {', '.join(map(show, over))} is above the "
                    f"safe maximum {cap} (on unified memory the OS and the other services share the GPU's "
                    "memory; above it a node can stop answering)", step="tune",
                    fix=f"values up to {cap}; a profile may raise the cap with tune.max_gpu_memory_utilization "
                        "if its nodes have the headroom")


def candidate_sets(candidate: dict, nodes: int, gpus_per_node: int) -> list[str]:
    """The --set items that load a candidate (key -> value), the layout's settings first so that a
    searched serving key set beside it wins."""
    out: list[str] = []
    if LAYOUT_KEY in candidate:
        out += layout_sets(candidate[LAYOUT_KEY], nodes, gpus_per_node)
    out += [f"{k}={show(v)}" for k, v in candidate.items() if k != LAYOUT_KEY]
    return out


def describe(candidate: dict) -> str:
    return ", ".join(f"{k}={said(v)}" for k, v in candidate.items()) or "(the profile's own settings)"
