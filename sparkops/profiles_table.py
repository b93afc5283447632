"""`inv profiles` and `inv validate`: the presets at a glance, and every one checked."""
from __future__ import annotations

from pathlib import Path

from .catalog import profile_names
from .config import load_config
from .config.memfit import nodes_needed
from .errors import SparkopsError


def profiles_rows(root: Path, cluster: str | None) -> list[dict]:
    rows = []
    for name in profile_names(root):
        try:
            cfg = load_config(name, cluster, root=root)
        except SparkopsError as exc:
            rows.append({"name": name, "model": "-", "size": "-", "nodes": "-", "tp": "-",
                         "gated": "-", "description": f"INVALID: {exc.message}"})
            continue
        m = cfg.model
        rows.append({"name": name, "model": m["repo"], "size": f"{m.get('download_gb', 0):g} GB",
                     "nodes": nodes_needed(cfg.doc), "tp": cfg.serving["tensor_parallel"],
                     "gated": "yes" if m.get("gated") else "no",
                     "description": cfg.doc["profile"].get("description", "")})
    return rows


def table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) if rows else len(c) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def validate_profiles(root: Path, names: list[str], cluster: str | None) -> tuple[list[str], bool]:
    """Returns report lines and whether all passed."""
    lines, ok = [], True
    for name in names:
        try:
            cfg = load_config(name, cluster, root=root)
        except SparkopsError as exc:
            ok = False
            lines.append(f"FAIL  {name}")
            lines += ["      " + line for line in exc.render().splitlines()]
            continue
        warns = [f for f in cfg.findings if f.level == "warn"]
        lines.append(f"ok    {name} on {cfg.cluster_name} (config {cfg.config_hash()})"
                     + (f", {len(warns)} warning(s)" if warns else ""))
        lines += ["      " + line for f in warns for line in f.render().splitlines()]
    return lines, ok
