"""`inv profiles` and `inv validate`: the presets at a glance, and every one checked."""
from __future__ import annotations

from pathlib import Path

from sparkops.base.errors import SparkopsError
from sparkops.config import load_config
from sparkops.config.catalog import profile_names
from sparkops.config.memfit import nodes_needed


def profiles_rows(root: Path, cluster: str | None, sets: list[str] | None = None) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for name in profile_names(root):
        try:
            cfg = load_config(name, cluster, root=root, sets=sets or ())
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


def validate_profiles(root: Path, names: list[str], cluster: str | None,
                      sets: list[str] | None = None) -> tuple[list[str], bool]:
    """Returns report lines and whether all passed."""
    lines, ok = [], True
    for name in names:
        try:
            cfg = load_config(name, cluster, root=root, sets=sets or ())
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


def validate_stacks(root: Path, names: list[str], cluster: str | None,
                    sets: list[str] | None = None) -> tuple[list[str], bool]:
    """Each stack (profiles/stacks) on its own cluster unless `cluster`: its models, where each
    runs, its memory share and the memory fit within it. Report lines and whether all passed."""
    from sparkops.config.memfit import estimate
    from sparkops.config.stack import load_stack
    lines, ok = [], True
    for name in names:
        try:
            stack = load_stack(name, cluster, root=root, sets=sets or ())
        except SparkopsError as exc:
            ok = False
            lines.append(f"FAIL  stack {name}")
            lines += ["      " + line for line in exc.render().splitlines()]
            continue
        lines.append(f"ok    stack {name} on {stack.cluster_name} (config {stack.config_hash()}): "
                     f"{len(stack.members)} models")
        for m in stack.members:
            fit = estimate(m.cfg.doc)
            lines.append(f"      {m.name}: {m.served_model_name!r} on {m.node} port {m.port}, memory share "
                         f"{m.memory:g} ({fit.budget_gib:.0f} GiB): {fit.verdict}, {fit.reason}")
            lines += ["      " + line for f in m.cfg.findings if f.level == "warn" for line in f.render().splitlines()]
    return lines, ok
