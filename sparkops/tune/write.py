"""`inv tune --write`: the winner into the local override (sparkops.local.toml), where `inv up`
takes it from. tomlkit keeps the user's comments and layout; the file stays 0600.

What is written, for profile P (a layout's settings are serving keys too):
    [profiles.P.serving]
    max_num_seqs = 16  # inv tune 20261204-101500-P: throughput +23.4 % ± 3.1
    [profiles.P.tune.applied]
    keys = ["serving.max_num_seqs"], id, summary, date, cluster, vllm_version, objective, slos, gain
`inv plan` shows the keys of tune.applied as tuned; to undo, delete those keys and the
[profiles.P.tune.applied] table (the summary file keeps the numbers).
"""
from __future__ import annotations

import json
from pathlib import Path

import tomlkit
from tomlkit.items import Table

from sparkops.base.errors import SparkopsError
from sparkops.config import local_override
from sparkops.config.layers import parse_value


def winner_items(summary: dict) -> list[tuple[str, object]]:
    """(dotted key, value) the winner sets beyond the starting settings, layouts as their keys."""
    items = []
    for item in summary["winner"]["sets"]:
        k, _, raw = item.partition("=")
        items.append((k, parse_value(raw)))
    changed = set(summary["winner"]["changed"])
    if not changed:
        return []
    # only what differs from the start: a key the search left at the profile's value is not "tuned"
    keep = []
    for k, v in items:
        if k in changed or ("layout" in changed and k.split(".")[-1] in ("tensor_parallel", "pipeline_parallel",
                                                                         "data_parallel")):
            keep.append((k, v))
    return keep


def write_winner(summary: dict, path: Path, summary_path: Path) -> list[str]:
    """Writes the winner under [profiles.P]; returns the keys written ([] when the profile's own
    settings won: nothing to write)."""
    items = winner_items(summary)
    if not items:
        return []
    doc = local_override.load(path)
    profiles = doc.get("profiles")
    if profiles is None:
        profiles = tomlkit.table(is_super_table=True)
        doc["profiles"] = profiles
    name = summary["profile"]
    ptable = profiles.get(name)
    if ptable is None:
        ptable = tomlkit.table(is_super_table=True)
        profiles[name] = ptable
    gain = summary["winner"].get("gain")
    note = (f"inv tune {summary['id']}: {summary['objective']}"
            + (f" {gain['percent']:+.1f} % ± {gain['std_percent']:.1f}" if gain else ""))
    for dotted, value in items:
        parts = dotted.split(".")
        table = ptable
        for part in parts[:-1]:
            nxt = table.get(part)
            if nxt is None:
                nxt = tomlkit.table()
                table[part] = nxt
            if not isinstance(nxt, Table):
                raise SparkopsError(f"{path}: [profiles.{name}] {'.'.join(parts[:-1])} is not a table", step="tune",
                                    fix="fix the file by hand, or give the value with --set")
            table = nxt
        item = tomlkit.item(value)
        item.comment(note)
        table[parts[-1]] = item
    tune_t = ptable.get("tune")
    if tune_t is None:
        tune_t = tomlkit.table(is_super_table=True)
        ptable["tune"] = tune_t
    applied = tomlkit.table()
    applied["keys"] = [k for k, _ in items]
    applied["id"] = summary["id"]
    applied["summary"] = str(summary_path)
    applied["date"] = summary.get("finished_at") or summary["created_at"]
    applied["cluster"] = summary["cluster"]
    if summary["winner"].get("vllm_version"):
        applied["vllm_version"] = summary["winner"]["vllm_version"]
    applied["objective"] = summary["objective"]
    applied["slos"] = list(summary["slos"])
    if gain:
        applied["gain_percent"] = gain["percent"]
        applied["gain_std_percent"] = gain["std_percent"]
    tune_t["applied"] = applied
    local_override.save(doc, path)
    return [k for k, _ in items]


def applied_lines(doc: dict) -> list[str]:
    """What `inv plan` says about values a tune wrote: each key with the value in force (a --set or
    an environment variable above the local override wins over it, and shows here)."""
    applied = (doc.get("tune") or {}).get("applied") or {}
    gain = applied.get("gain_percent")
    head = (f"tuned by `inv tune` {applied.get('id')} ({applied.get('date', '?')}, "
            f"cluster {applied.get('cluster', '?')}"
            + (f", vLLM {applied['vllm_version']}" if applied.get("vllm_version") else "")
            + f", objective {applied.get('objective', '?')}"
            + (f" under {', '.join(applied['slos'])}" if applied.get("slos") else "")
            + (f", {gain:+.1f} % ± {applied.get('gain_std_percent', 0):.1f}" if gain is not None else "") + "):")
    lines = [head]
    for dotted in applied.get("keys", []):
        node: object = doc
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        lines.append(f"  {dotted} = {json.dumps(node)}")
    if applied.get("summary"):
        lines.append(f"  measured in {applied['summary']}; to undo, delete these keys and [profiles.P.tune.applied] "
                     "from sparkops.local.toml")
    return lines
